"""FP32 ONNX -> FP32 ONNX whose MatMul inputs are evened out for dynamic INT8 (SmoothQuant).

Each MatMul input is divided per channel by a scale calibrated on training texts and the weights are
multiplied by it (`quantization/smoothing.py`): the same model in FP32 (validation holds it to its
parent's outputs), and one whose per-tensor activation scales no longer serve a few outlier channels
once a `quantize` child makes it INT8. Measured on all-MiniLM-L6-v2 embeddings
(`benchmarks/embeddings.py`), this is what brings per-channel INT8 to FP32's nearest neighbours.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from .. import data as data_module
from .. import tasks
from ..artifact import Artifact, StageOutput, copy_support_files
from ..errors import ArtifactError
from ..quantization import calibration, smoothing
from . import StageConfig

NAME = "smooth"
LIBRARIES = ("onnx", "onnxruntime", "tokenizers", "numpy")


class Config(StageConfig):
    alpha: float = Field(0.65, gt=0, lt=1)
    """How much of the activations' range moves into the weights: 0 none, 1 all. On MiniLM embeddings 0.5
    did not help per-channel INT8, 0.65 and 0.8 did (recall@10 of FP32's neighbours 93.3% -> 95.6%, 96.5%)."""
    calibration_samples: int = Field(256, ge=calibration.MIN_SAMPLES)
    """Training texts whose activations set each channel's largest magnitude."""
    calibration_batch_size: int | None = Field(None, ge=1)
    """Samples per calibration batch (None: the task's default)."""
    data: data_module.DataSpec = data_module.DataSpec()
    seed: int = 0


def run(parent: Artifact, config: Config, workdir: Path) -> StageOutput:
    if parent.format != "onnx" or parent.precision != "fp32":
        raise ArtifactError(
            f"smooth needs an FP32 ONNX variant, but {parent.path} is {parent.format} {parent.precision}: "
            "give it an export or optimize-graph parent, and quantise after it"
        )
    import onnx

    task = tasks.get(parent.task)
    dataset = task.load_data(config.data)
    batch_size = config.calibration_batch_size or task.CALIBRATION_BATCH
    batches = task.calibration_batches(dataset, parent.path, config.calibration_samples, batch_size, config.seed)
    model = onnx.load(str(parent.onnx_path))
    groups = smoothing.weight_matmuls(model)
    if not groups:
        raise ArtifactError(f"{parent.onnx_path.name} has no MatMul with a weight of its own: nothing to smooth")
    maxima = smoothing.activation_maxima(parent.onnx_path, groups, batches)
    done = smoothing.smooth(model, maxima, config.alpha)
    onnx.save(model, str(workdir / "model.onnx"))
    copy_support_files(parent.path, workdir)
    return StageOutput(
        format="onnx",
        task=parent.task,
        precision="fp32",
        metadata={
            "alpha": config.alpha,
            "calibration_samples": config.calibration_samples,
            "smoothed_inputs": done.inputs,
            "folded_into_attention": done.folded,
            "smoothed_matmuls": done.matmuls,
            "scale_range": [round(done.scale_min, 4), round(done.scale_max, 4)],
        },
    )
