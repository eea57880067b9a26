"""Tasks: what differs between classifying text and generating it, behind one small interface.

Each task is a package, one module per layer, that conforms to `protocol.Task`:

    tasks/<task>/spec.py       what the task is: NAME, AUTO_MODEL, QUALITY, GATE_METRICS, SPEED
             data.py       its data: training splits, the held-out eval set, tuning and calibration sets
             validate.py   check_against_parent: is a new variant faithful to its parent?
             session.py    Session: the worker side, one model answering the harness (torch-free for ONNX)
             measure.py    the harness side: workloads per round, raw answers -> figures, ratios, metric
             tuning.py     what the accuracy-budget search asks: tuning quality, quality drop, latency look
             train.py      Trainer: the task's half of fine-tuning, distillation and pruning's calibration
             report.py     its Markdown sections and plots (`report/templates/<NAME>.html.j2`: its HTML)
             bundle.py     its part of a bundle's manifest, and the figures the manifest carries

The harness, the selection, the pipeline and the report ask the task; none of them branches on its
name. A task is read from the model's config and can be forced (`--task`, recipe `task:`); the
pipeline resolves it once and passes the object down. A new task is a new package and one line in
`_PACKAGES` below (see docs/architecture.md).
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, cast

from ..errors import EdgeNLPError
from .protocol import Quality, Task, Workload  # noqa: F401  (the interface, importable from here)

_PACKAGES = {
    "text-classification": "edgenlp.tasks.classification",
    "text-generation": "edgenlp.tasks.generation",
    "feature-extraction": "edgenlp.tasks.embedding",
    "token-classification": "edgenlp.tasks.ner",
    "question-answering": "edgenlp.tasks.qa",
}
TASK_NAMES = tuple(_PACKAGES)

if TYPE_CHECKING:  # a type checker holds every task package against the interface
    from . import classification, embedding, generation, ner, qa

    _classification: Task = classification
    _generation: Task = generation
    _embedding: Task = embedding
    _ner: Task = ner
    _qa: Task = qa


def get(name: str) -> Task:
    """The task package registered under `name`."""
    if name not in _PACKAGES:
        raise EdgeNLPError(f"unknown task '{name}': use one of {', '.join(TASK_NAMES)}")
    return cast(Task, import_module(_PACKAGES[name]))


def of_config(config: dict) -> str | None:
    """The task a checkpoint's config.json says it was built for; None for a bare encoder."""
    archs = config.get("architectures") or []
    if any(a.endswith("ForSequenceClassification") for a in archs):
        return "text-classification"
    if any(a.endswith("ForTokenClassification") for a in archs):
        return "token-classification"
    if any(a.endswith("ForQuestionAnswering") for a in archs):
        return "question-answering"
    if any(a.endswith(("LMHeadModel", "ForCausalLM")) for a in archs):
        return "text-generation"
    if config.get("model_type") in ("gpt2", "gpt_neo", "gptj", "llama", "mistral", "qwen2") and not archs:
        return "text-generation"
    return None


def resolve(model_task: str | None, asked: str | None, model: str) -> Task:
    """The task to run: the one asked for, else the model's own; a bare encoder is a classifier to train.

    A causal LM given for classification is re-headed only when the user says so (`--task
    text-classification`): silently turning a language model into a classifier loses what it was.
    """
    if asked:
        chosen = get(asked)
        if chosen.MODEL_MUST_BE and model_task != chosen.NAME:
            raise EdgeNLPError(
                f"{model} is {'a ' + model_task if model_task else 'a bare encoder'} model, not "
                f"{chosen.MODEL_MUST_BE}: pick such a model, or drop the {chosen.NAME} task"
            )
        return chosen
    if model_task is None:
        return get("text-classification")
    return get(model_task)
