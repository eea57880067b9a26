"""PyTorch checkpoint -> FP32 ONNX through Optimum's exporter (dynamic batch and sequence axes)."""

from __future__ import annotations

import shutil
from pathlib import Path

from ..artifact import Artifact, StageOutput
from ..errors import ArtifactError
from . import StageConfig

NAME = "export"
LIBRARIES = ("torch", "transformers", "optimum", "optimum-onnx", "onnx")
OPTIMUM_TASKS = {"text-classification": "text-classification", "text-generation": "text-generation-with-past"}


class Config(StageConfig):
    opset: int | None = None
    """ONNX opset; None lets Optimum pick the one it validated for the architecture."""


def run(parent: Artifact, config: Config, workdir: Path) -> StageOutput:
    if parent.format != "pytorch":
        raise ArtifactError(f"export needs a PyTorch checkpoint, but {parent.path} is {parent.format}")
    if parent.task not in OPTIMUM_TASKS:
        raise ArtifactError(f"{parent.path} is a {parent.task} model: fine-tune it for classification "
                            "(stage finetune) before exporting")
    from optimum.exporters.onnx import main_export

    from .. import architectures

    architectures.register()
    # Optimum recognises a transformers model by its class's module; a pruned model's class is the
    # modeling file edgenlp wrote into the checkpoint, loaded as transformers loads custom code.
    own_code = parent.config().get("model_type") in architectures.PRUNED_MODEL_TYPES
    main_export(str(parent.path), output=str(workdir), task=OPTIMUM_TASKS[parent.task],
                opset=config.opset, do_validation=False, device="cpu", trust_remote_code=own_code)
    for leftover in ("1_Pooling",):  # sentence-transformers extras that the ONNX model does not use
        shutil.rmtree(workdir / leftover, ignore_errors=True)
    import onnx

    model = onnx.load(str(workdir / "model.onnx"), load_external_data=False)
    return StageOutput(format="onnx", task=parent.task, precision="fp32", metadata={
        "exporter": "optimum",
        "opset": max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")),
        "inputs": [i.name for i in model.graph.input],
        "outputs": [o.name for o in model.graph.output],
    })
