"""FP32 ONNX -> OpenVINO IR, in FP32 or INT8 (NNCF post-training quantisation).

Classifiers: INT8 is NNCF's `quantize` with the transformer model type (it keeps the attention
softmax, layer norms and GELU in float, where 8 bits hurt transformers most) and its `mixed`
preset (symmetric weights, asymmetric activations), calibrated on training texts one at a time.
Decoders: INT8 is NNCF's data-free weight compression (`compress_weights`, INT8 asymmetric per
channel), what Optimum Intel does for language models: decoding is bound by reading the weights,
and weight-only INT8 leaves every activation in float.

The IR keeps the ONNX graph's input and output names, so the runtime feeds it as it feeds
onnxruntime (`runtime/openvino_engine.py`).
"""

from __future__ import annotations

import logging
import time
from importlib.util import find_spec
from pathlib import Path
from typing import Literal

from pydantic import Field

from .. import data as data_module
from .. import tasks
from ..artifact import Artifact, StageOutput, copy_support_files
from ..errors import ArtifactError, DataError, EngineError, EngineMissing
from ..hardware import cpu_info
from ..runtime import engines
from ..runtime.openvino_engine import XML
from . import StageConfig

NAME = "openvino"
LIBRARIES = ("onnx", "openvino", "nncf", "tokenizers", "numpy")
SKIPPABLE = True
log = logging.getLogger(__name__)


MIN_CALIBRATION = 32
"""Fewer texts than this give NNCF's range estimates (and its SmoothQuant and bias-correction steps) too
little to go on; refused rather than quantised badly."""


class Config(StageConfig):
    precision: Literal["fp32", "int8"] = "fp32"
    preset: Literal["mixed", "performance"] = "mixed"
    """NNCF's preset for classifiers: `mixed` (asymmetric activations) or `performance` (all symmetric)."""
    calibration_samples: int = Field(300, ge=MIN_CALIBRATION)
    """Training texts NNCF calibrates a classifier's activation ranges on (NNCF's default subset size)."""
    data: data_module.DataSpec = data_module.DataSpec()
    seed: int = 0


def check_parent(parent: Artifact) -> None:
    if parent.format != "onnx":
        raise ArtifactError(
            f"the openvino stage converts an ONNX variant, but {parent.path} is {parent.format}: "
            "make it the child of an export variant"
        )
    if parent.precision != "fp32":
        raise ArtifactError(
            f"{parent.path} is already {parent.precision}: convert an FP32 ONNX variant (NNCF quantises it itself)"
        )
    import onnx

    graph = onnx.load(str(parent.onnx_path), load_external_data=False).graph
    own = sorted({n.op_type for n in graph.node if n.domain == "com.microsoft"})
    if own:
        raise ArtifactError(
            f"{parent.path} uses onnxruntime's own operators ({', '.join(own)}), which OpenVINO does not convert: "
            "make the openvino variant the child of an export variant"
        )


def convert(parent: Artifact):
    """The parent's ONNX graph as an OpenVINO model; an operator OpenVINO lacks is named in one line."""
    import openvino as ov

    try:
        return ov.convert_model(str(parent.onnx_path))
    except Exception as exc:  # OpenVINO's frontends raise their own types; the op is in the summary lines
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        summary = [line.lstrip("- ") for line in lines if line.startswith("--")] or lines[-1:] or [type(exc).__name__]
        raise EngineError(f"OpenVINO cannot convert {parent.onnx_path.name}: {'; '.join(summary)[:300]}") from None


def calibration_set(parent: Artifact, config: Config):
    """Training texts as graph feeds, one per item (NNCF batches nothing itself)."""
    task = tasks.get(parent.task)
    dataset = task.load_data(config.data)
    feeds = list(task.calibration_batches(dataset, parent.path, config.calibration_samples, 1, config.seed))
    if len(feeds) < MIN_CALIBRATION:
        raise DataError(
            f"the calibration set has {len(feeds)} texts from the training split of {dataset.name} (asked "
            f"for {config.calibration_samples}), fewer than the {MIN_CALIBRATION} NNCF needs: give more "
            "training data"
        )
    return feeds


def quantize(model, parent: Artifact, config: Config) -> dict:
    import nncf

    if parent.task == "text-generation":
        compressed = nncf.compress_weights(model, mode=nncf.CompressWeightsMode.INT8_ASYM)
        return {
            "model": compressed,
            "method": "nncf.compress_weights",
            "mode": "INT8_ASYM",
            "activations": "float32",
            "calibration": None,
        }
    started = time.time()
    feeds = calibration_set(parent, config)
    names = {port.get_any_name() for port in model.inputs}
    items = [{k: v for k, v in feed.items() if k in names} for feed in feeds]
    quantized = nncf.quantize(
        model,
        nncf.Dataset(items),
        subset_size=len(items),
        preset=getattr(nncf.QuantizationPreset, config.preset.upper()),
        model_type=nncf.ModelType.TRANSFORMER,
    )
    return {
        "model": quantized,
        "method": "nncf.quantize",
        "model_type": "transformer",
        "preset": config.preset,
        "activations": "int8",
        "calibration": {"samples": len(items), "seconds": round(time.time() - started, 1)},
    }


def run(parent: Artifact, config: Config, workdir: Path) -> StageOutput:
    engines.get("openvino").require("the openvino stage")
    if config.precision == "int8" and find_spec("nncf") is None:
        raise EngineMissing("OpenVINO INT8 needs NNCF, which is not installed: pip install 'edgenlp[openvino]'")
    check_parent(parent)
    import openvino as ov

    model = convert(parent)
    quantisation = None
    if config.precision == "int8":
        quantisation = quantize(model, parent, config)
        model = quantisation.pop("model")
    ov.save_model(model, str(workdir / XML), compress_to_fp16=False)
    copy_support_files(parent.path, workdir)
    return StageOutput(
        format="openvino",
        task=parent.task,
        precision=config.precision,
        metadata={
            "engine": "openvino",
            "converted_from": parent.onnx_path.name,
            "cpu": cpu_info().summary(),
            "inference_precision": "f32",
            "quantization": quantisation,
            "operators": sorted({op.get_type_name() for op in model.get_ops()}),
        },
    )
