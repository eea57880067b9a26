"""Pipeline stages. Each module has the same small interface:

    NAME: str                      the name recipes use
    Config: type[StageConfig]      its typed, validated settings
    run(parent, config, workdir) -> StageOutput
                                   reads the parent artifact, writes the new model into `workdir`

and may declare what the pipeline needs to know about it:

    Config.data                    a `data` field: the stage reads the recipe's data (the pipeline
                                   fills it in and puts the data's content hash in the artifact id)
    LIBRARIES = (...)              the packages whose versions decide its output (they enter the
                                   artifact id; default: every tracked library)
    CHECKED_AGAINST_PARENT = False its output is meant to differ from its parent (training)
    Config.task                    a `task` field: the pipeline fills in the recipe's task
    satisfied_by(parent, data, config) why the parent already is what the stage would make (None: it is not)
    SKIPPABLE = True               a failure of this stage (an engine not installed, a model it cannot
                                   convert) skips the variant and its children; the rest of the run
                                   is built and measured, and the run then ends with that one-line error
    reads(parent, config) -> [Path] the folders it reads beside the parent (a teacher): sent with the
                                   build to the node that runs it, found there by `executors.located`
    fans_out(config) -> bool       True when this build spreads its own work (tuning trials) over the
                                   executor: it then runs where the run folder is, not as one task

A stage knows nothing about the CLI, the report or the other stages; `artifact.build` gives it an
empty folder and publishes the result atomically. Heavy libraries are imported inside `run`.
"""

from __future__ import annotations

from importlib import import_module
from types import ModuleType

from pydantic import BaseModel, ConfigDict


class StageConfig(BaseModel):
    """Base of every stage's settings: unknown keys are errors, so a typo never passes silently."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)  # field docstrings: the CLI's help


_MODULES = {
    "finetune": "edgenlp.stages.finetune",
    "prune": "edgenlp.stages.prune",
    "trim-vocab": "edgenlp.stages.trim_vocab",
    "distill": "edgenlp.stages.distill",
    "export": "edgenlp.stages.export",
    "export-fused": "edgenlp.stages.export_fused",
    "optimize-graph": "edgenlp.stages.optimize_graph",
    "smooth": "edgenlp.stages.smooth",
    "quantize": "edgenlp.stages.quantize",
    "quantize-static": "edgenlp.stages.quantize_static",
    "quantize-int4": "edgenlp.stages.quantize_int4",
    "quantize-kv": "edgenlp.stages.quantize_kv",
    "split-prefill": "edgenlp.stages.split_prefill",
    "openvino": "edgenlp.stages.openvino",
    "ctranslate2": "edgenlp.stages.ctranslate2",
}
STAGE_NAMES = tuple(_MODULES)


def uses_data(stage: ModuleType) -> bool:
    return "data" in stage.Config.model_fields


def libraries(stage: ModuleType) -> tuple[str, ...]:
    from ..artifact import TRACKED_LIBRARIES

    return tuple(getattr(stage, "LIBRARIES", TRACKED_LIBRARIES))


def checked_against_parent(stage: ModuleType) -> bool:
    return getattr(stage, "CHECKED_AGAINST_PARENT", True)


def skippable(stage: ModuleType) -> bool:
    return getattr(stage, "SKIPPABLE", False)


def reads(stage: ModuleType, parent, config) -> list:
    hook = getattr(stage, "reads", None)
    return list(hook(parent, config)) if hook else []


def fans_out(stage: ModuleType, config) -> bool:
    hook = getattr(stage, "fans_out", None)
    return bool(hook and hook(config))


def uses_task(stage: ModuleType) -> bool:
    return "task" in stage.Config.model_fields


def satisfied_by(stage: ModuleType, parent, dataset, config=None) -> str | None:
    """Why `parent` already is what `stage` would make from it (None: the stage runs)."""
    hook = getattr(stage, "satisfied_by", None)
    return hook(parent, dataset, config) if hook else None


def get(name: str) -> ModuleType:
    """The stage module registered under `name`."""
    from ..errors import RecipeError

    if name not in _MODULES:
        raise RecipeError(f"unknown stage '{name}': use one of {', '.join(STAGE_NAMES)}")
    return import_module(_MODULES[name])
