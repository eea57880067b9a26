"""Pipeline stages. Each module has the same small interface:

    NAME: str                      the name recipes use
    Config: type[StageConfig]      its typed, validated settings
    run(parent, config, workdir) -> StageOutput
                                   reads the parent artifact, writes the new model into `workdir`

A stage knows nothing about the CLI, the report or the other stages; `artifact.build` gives it an
empty folder and publishes the result atomically. Heavy libraries are imported inside `run`.
"""

from __future__ import annotations

from importlib import import_module
from types import ModuleType

from pydantic import BaseModel, ConfigDict


class StageConfig(BaseModel):
    """Base of every stage's settings: unknown keys are errors, so a typo never passes silently."""

    model_config = ConfigDict(extra="forbid")


_MODULES = {
    "finetune": "edgenlp.stages.finetune",
    "export": "edgenlp.stages.export",
    "optimize-graph": "edgenlp.stages.optimize_graph",
    "quantize": "edgenlp.stages.quantize",
}
STAGE_NAMES = tuple(_MODULES)


def get(name: str) -> ModuleType:
    """The stage module registered under `name`."""
    from ..errors import RecipeError

    if name not in _MODULES:
        raise RecipeError(f"unknown stage '{name}': use one of {', '.join(STAGE_NAMES)}")
    return import_module(_MODULES[name])
