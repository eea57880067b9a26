"""FP32 ONNX -> FP32 ONNX with ONNX Runtime's transformer fusions (attention, LayerNorm, GELU).

onnxruntime applies most of these fusions itself when it loads a model, so this stage mainly makes
them visible and portable (an ORT-format or mobile build may not fuse at load time). It reports the
fusions that applied; the benchmark decides whether the variant earns its place.
"""

from __future__ import annotations

from pathlib import Path

from ..artifact import Artifact, StageOutput, copy_support_files
from ..errors import ArtifactError
from . import StageConfig

NAME = "optimize-graph"
LIBRARIES = ("onnx", "onnxruntime")


class Config(StageConfig):
    opt_level: int = 1
    """onnxruntime's own graph level applied before the Python fusions: 0 none, 1 basic, 2 extended."""


def _model_type(config: dict) -> str:
    return {"gpt2": "gpt2", "edgenlp-pruned-gpt2": "gpt2", "distilbert": "bert", "roberta": "bert", "bert": "bert"}.get(
        config.get("model_type"), "bert"
    )


def run(parent: Artifact, config: Config, workdir: Path) -> StageOutput:
    if parent.format != "onnx":
        raise ArtifactError(f"optimize-graph needs an ONNX variant, but {parent.path} is {parent.format}")
    from onnxruntime.transformers.optimizer import optimize_model

    model_config = parent.config()
    heads = model_config.get("num_attention_heads") or model_config.get("n_head") or model_config.get("n_heads") or 0
    hidden = model_config.get("hidden_size") or model_config.get("n_embd") or model_config.get("dim") or 0
    if (
        "layer_heads" in model_config
    ):  # pruned: head counts differ by layer; 0, 0 lets onnxruntime read them from the graph
        heads, hidden = 0, 0
    optimized = optimize_model(
        str(parent.onnx_path),
        model_type=_model_type(model_config),
        num_heads=heads,
        hidden_size=hidden,
        opt_level=config.opt_level,
    )
    fusions = {op: n for op, n in optimized.get_fused_operator_statistics().items() if n}
    optimized.save_model_to_file(str(workdir / "model.onnx"))
    copy_support_files(parent.path, workdir)
    return StageOutput(
        format="onnx",
        task=parent.task,
        precision=parent.precision,
        metadata={"fusions": fusions, "opt_level": config.opt_level},
    )
