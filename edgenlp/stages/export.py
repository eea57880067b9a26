"""PyTorch checkpoint -> FP32 ONNX through Optimum's exporter (dynamic batch and sequence axes).

A decoder's graph also gets `logits_to_keep` (transformers' argument of that name): the LM head
runs only over the last N positions, all of them when 0. It is an input backed by an initializer
of 0, which onnxruntime lets a caller override without listing it among the graph's inputs, so
Optimum, transformers.js and any loop that does not know it still get every position's logits.
Generating from a prompt needs only the last position's: on GPT-2 small the head is about a third
of the prompt's multiply-accumulates (768 x 50,257 per position), which `logits_to_keep=1` saves.
"""

from __future__ import annotations

import logging
import shutil
from contextlib import contextmanager
from pathlib import Path

from .. import architectures, tasks
from ..artifact import Artifact, StageOutput
from ..errors import ArtifactError
from ..runtime.embedding import carry_pooling
from ..runtime.generation import LOGITS_TO_KEEP
from ..trust import pretrained_options
from . import StageConfig

NAME = "export"
LIBRARIES = ("torch", "transformers", "optimum", "optimum-onnx", "onnx")


class Config(StageConfig):
    opset: int | None = None
    """ONNX opset; None lets Optimum pick the one it validated for the architecture."""


def run(parent: Artifact, config: Config, workdir: Path) -> StageOutput:
    if parent.format != "pytorch":
        raise ArtifactError(f"export needs a PyTorch checkpoint, but {parent.path} is {parent.format}")
    if parent.task not in tasks.TASK_NAMES:
        raise ArtifactError(
            f"{parent.path} is a {parent.task} model, which edgenlp has no task for: fine-tune it for one of "
            f"{', '.join(tasks.TASK_NAMES)} (stage finetune) before exporting"
        )
    from optimum.exporters.onnx import main_export

    logging.getLogger("optimum.exporters.onnx.base").addFilter(_no_accelerate_notice)
    architectures.register()
    with _registered_classes_count_as_transformers():
        main_export(
            str(parent.path),
            output=str(workdir),
            task=tasks.get(parent.task).EXPORT_TASK,
            library_name="transformers",
            opset=config.opset,
            do_validation=False,
            device="cpu",
            **pretrained_options(parent.path),
        )
    # sentence-transformers' pooling folder becomes one top-level pooling.json, which every later stage
    # copies with the other support files (folders are not copied)
    carry_pooling(parent.path, workdir)
    shutil.rmtree(workdir / "1_Pooling", ignore_errors=True)
    import onnx

    if parent.task == "text-generation":
        add_logits_to_keep(workdir / "model.onnx")
    model = onnx.load(str(workdir / "model.onnx"), load_external_data=False)
    return StageOutput(
        format="onnx",
        task=parent.task,
        precision="fp32",
        metadata={
            "exporter": "optimum",
            "opset": max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")),
            "inputs": [i.name for i in model.graph.input],
            "outputs": [o.name for o in model.graph.output],
        },
    )


def _no_accelerate_notice(record: logging.LogRecord) -> bool:
    """Optimum asks for accelerate to deduplicate tied weights; edgenlp exports without it on purpose (the
    figures measured so far are of graphs exported so), so the notice would only be noise to the user."""
    return "requires accelerate" not in record.getMessage()


@contextmanager
def _registered_classes_count_as_transformers():
    """Optimum tells a transformers model by its class's module name; edgenlp's pruned classes live in
    `edgenlp.architectures`, registered with transformers' Auto classes. Without this, the only way
    through would be loading the checkpoint's own copy of the modeling file as remote code, which
    would run whatever a folder claiming to be a pruned checkpoint put there."""
    from optimum.exporters.tasks import TasksManager

    original = TasksManager.__dict__["infer_library_from_model"]

    def infer(cls, model, *args, **kwargs):
        module = model.__module__ if isinstance(model, type) else type(model).__module__
        if module.startswith(architectures.__name__):
            return "transformers"
        return original.__func__(cls, model, *args, **kwargs)

    TasksManager.infer_library_from_model = classmethod(infer)
    try:
        yield
    finally:
        TasksManager.infer_library_from_model = original


def add_logits_to_keep(onnx_path: Path) -> None:
    """Slice the LM head's input to its last `logits_to_keep` positions (0, the default: all of them)."""
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(onnx_path), load_external_data=False)
    graph = model.graph
    # the head multiplies (batch, positions, hidden) by the vocabulary matrix; positions are axis 1
    head = next((n for n in graph.node if "logits" in n.output and n.op_type == "MatMul"), None)
    if head is None or any(i.name == LOGITS_TO_KEEP for i in graph.input):
        return  # another head layout (left whole: every position's logits) or already there
    import numpy as np

    hidden = head.input[0]
    names = {n: f"/lm_head/{LOGITS_TO_KEEP}/{n}" for n in ("neg", "start", "end", "axis", "sliced")}
    graph.initializer.extend(
        [
            numpy_helper.from_array(np.zeros(1, np.int64), LOGITS_TO_KEEP),
            numpy_helper.from_array(np.array([np.iinfo(np.int64).max]), names["end"]),
            numpy_helper.from_array(np.array([1], np.int64), names["axis"]),
        ]
    )
    graph.input.append(helper.make_tensor_value_info(LOGITS_TO_KEEP, onnx.TensorProto.INT64, [1]))
    at = list(graph.node).index(head)
    graph.node.insert(at, helper.make_node("Neg", [LOGITS_TO_KEEP], [names["start"]], name=names["neg"]))
    graph.node.insert(
        at + 1,
        helper.make_node(
            "Slice",
            [hidden, names["start"], names["end"], names["axis"]],
            [names["sliced"]],
            name=f"/lm_head/{LOGITS_TO_KEEP}/Slice",
        ),
    )
    head.input[0] = names["sliced"]
    onnx.save(model, str(onnx_path))
