"""Recipes: a YAML file that says which model, which data, which variants and how to measure them.

    name: minilm-tweets
    model: minilm
    data: {source: tweets}
    variants:
      - {name: pytorch-fp32, stage: finetune, config: {epochs: 1}}
      - {name: onnx-fp32, stage: export, parent: pytorch-fp32}
      - {name: onnx-int8-dynamic, stage: quantize, parent: onnx-fp32}
    bench: {profiles: [edge-1t, laptop-2t]}

Variants form a tree: each names its parent (none means the source model) and a stage whose typed
config is checked here, so a typo fails before any work starts.

A `sweep:` block makes one variant per value: every variant whose name holds `{key}` is repeated
for each value of `key`, with `{key}` filled in its name, its parent and its config, so a chain
(prune -> distill -> export -> quantize) is built once per pruning ratio:

    sweep: {ratio: [0.25, 0.4, 0.5]}
    variants:
      - {name: "pruned-{ratio}", stage: prune, parent: pytorch-fp32, config: {ratio: "{ratio}"}}
      - {name: "recovered-{ratio}", stage: distill, parent: "pruned-{ratio}"}
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from . import stages
from .bench.profiles import BenchSettings
from .data import DataSpec
from .errors import EdgeNLPError, RecipeError, validation_line
from .executors import ExecutorSettings
from .models import ScratchModel
from .search.settings import SearchSettings, StructureSearchSettings


class VariantSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
    stage: str
    parent: str | None = None
    """Name of the variant this one is made from; none means the recipe's model."""
    config: dict[str, Any] = {}


class ValidationSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    examples: int = Field(64, ge=1)
    atol: float = Field(1e-3, gt=0)
    min_label_agreement: float = Field(0.9, ge=0, le=1)


class SelectionSettings(BaseModel):
    """Which variant to recommend, and when to fail (for users who run edgenlp in their own CI)."""

    model_config = ConfigDict(extra="forbid")

    max_accuracy_drop: float | None = Field(None, ge=0)
    """Points of accuracy a variant may lose against the reference."""
    max_latency_ms: float | None = Field(None, gt=0)
    max_size_mb: float | None = Field(None, gt=0)
    fail_if: str | None = None
    """Gate on the selected variant, e.g. `accuracy_drop>1.0 or p90_ms>20 or size_mb>30`."""


class TargetSpec(BaseModel):
    """The machine the variants are built for, when it is not this one."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    isa: str | None = None
    """Instruction set every quantisation stage builds for where a variant says `auto` or nothing:
    arm64, arm64-dotprod, avx2, ... (None: `auto` = this CPU's)."""
    check_on: list[str] = []
    """Emulated machines (arm64, arm64-dotprod, arm64-i8mm) the measured run's bundles are checked on."""
    check_variants: list[str] | None = None
    """Variants whose bundles are checked (None: those quantised for `isa`, else the selected one)."""
    check_texts: int | None = Field(None, ge=1)
    """Held-out texts each check runs (None: the task's default)."""

    @field_validator("isa")
    @classmethod
    def _known_isa(cls, isa: str | None) -> str | None:
        from .stages.quantize import ISAS

        if isa is not None and isa not in ISAS:
            raise ValueError(f"'{isa}' is not an instruction set edgenlp builds for: use one of {', '.join(ISAS)}")
        return isa

    @field_validator("check_on")
    @classmethod
    def _known_machines(cls, names: list[str]) -> list[str]:
        from .targets import names as known

        unknown = [n for n in names if n not in known()]
        if unknown:
            raise ValueError(f"'{unknown[0]}' is not a machine edgenlp emulates: use one of {', '.join(known())}")
        return names


class Recipe(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    description: str = ""
    model: str | ScratchModel = "minilm"
    """A packaged name, checkpoint folder or hub id, or a config to initialise (architecture, config, tokenizer)."""
    task: str | None = None
    """text-classification, text-generation or feature-extraction; None: the model's own task (a bare encoder:
    classification)."""
    data: DataSpec = DataSpec()
    sweep: dict[str, list[Any]] = {}
    """Values to repeat variants over: a variant named `pruned-{ratio}` is made once per `ratio`."""
    variants: list[VariantSpec]
    validation: ValidationSettings = ValidationSettings()
    bench: BenchSettings = BenchSettings()
    selection: SelectionSettings = SelectionSettings()
    search: SearchSettings = SearchSettings()
    """The accuracy-budget search that `selection.max_accuracy_drop` starts (see `search/budget.py`)."""
    structure: StructureSearchSettings = StructureSearchSettings()
    """Prune to a latency target: which structures to build, predicted from this CPU (`search/structure.py`)."""
    executor: ExecutorSettings = ExecutorSettings()
    """Where builds, trials and measurements run (`local`, or a Ray cluster; see `executors/`)."""
    target: TargetSpec = TargetSpec()
    """The machine the variants are for: its instruction set, and the emulated checks of their bundles."""

    @model_validator(mode="before")
    @classmethod
    def _expand_sweep(cls, data: Any) -> Any:
        sweep = data.get("sweep") if isinstance(data, dict) else None
        if not sweep:
            return data
        if not isinstance(sweep, dict) or not all(isinstance(v, list) and v for v in sweep.values()):
            raise ValueError("sweep must map each name to a non-empty list of values, e.g. sweep: {ratio: [0.25, 0.5]}")
        variants = []
        for spec in data.get("variants") or []:
            keys = [k for k in sweep if isinstance(spec, dict) and f"{{{k}}}" in str(spec.get("name", ""))]
            if not keys:
                variants.append(spec)
                continue
            for values in itertools.product(*(sweep[k] for k in keys)):
                variants.append(_fill(spec, dict(zip(keys, values))))
        return {**data, "variants": variants}

    @model_validator(mode="after")
    def _check_tree(self) -> Recipe:
        seen: set[str] = set()
        for v in self.variants:
            if v.name in seen:
                raise ValueError(f"variant '{v.name}' is defined twice")
            if v.parent is not None and v.parent not in seen:
                raise ValueError(f"variant '{v.name}' names parent '{v.parent}', which is not defined above it")
            seen.add(v.name)
        if self.task is not None:
            from .tasks import get

            get(self.task)
        if self.bench.reference and self.bench.reference not in seen:
            raise ValueError(f"bench.reference '{self.bench.reference}' is not a variant")
        if self.selection.fail_if:
            from .bench.selection import parse_gates

            parse_gates(self.selection.fail_if)
        return self

    def stage_config(self, variant: VariantSpec):
        """The variant's config parsed by its stage (a stage that reads data inherits the recipe's)."""
        stage = stages.get(variant.stage)
        raw = dict(variant.config)
        if stages.uses_data(stage):
            raw.setdefault("data", self.data.model_dump())
        if stages.uses_task(stage) and self.task:
            raw.setdefault("task", self.task)
        if self.target.isa and "isa" in stage.Config.model_fields and raw.get("isa", "auto") == "auto":
            raw["isa"] = self.target.isa  # `auto` is "the CPU it runs on", and that is the target's
        return stage.Config(**raw)


def _fill(value: Any, values: dict[str, Any]) -> Any:
    """`value` with each `{key}` replaced: a string that is only the placeholder takes the value's type."""
    if isinstance(value, dict):
        return {k: _fill(v, values) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill(v, values) for v in value]
    if isinstance(value, str):
        for key, v in values.items():
            if value == f"{{{key}}}":
                return v
            value = value.replace(f"{{{key}}}", str(v))
    return value


def parse(data: dict, origin: str = "recipe") -> Recipe:
    if not isinstance(data, dict):
        raise RecipeError(f"{origin} must be a YAML mapping (name, model, data, variants, ...)")
    try:
        recipe = Recipe(**data)
        for i, v in enumerate(recipe.variants):
            try:
                recipe.stage_config(v)
            except ValidationError as exc:
                raise RecipeError(validation_line(exc, origin, prefix=("variants", i, "config"))) from exc
        return recipe
    except ValidationError as exc:
        raise RecipeError(validation_line(exc, origin)) from exc
    except RecipeError:
        raise
    except EdgeNLPError as exc:
        raise RecipeError(f"{origin}: {exc}") from exc


def load(path: str | Path) -> Recipe:
    path = Path(path)
    if not path.exists():
        raise RecipeError(f"recipe {path} not found: pass an existing YAML file (see recipes/)")
    if not path.is_file():
        raise RecipeError(f"recipe {path} is a folder: pass a YAML file (see recipes/)")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise RecipeError(f"recipe {path} is not UTF-8 text ({exc.reason}): pass a YAML file") from exc
    except yaml.YAMLError as exc:
        raise RecipeError(f"recipe {path} is not valid YAML: {' '.join(str(exc).split())[:200]}") from exc
    return parse(data, str(path))


def recipes_dir() -> Path:
    """`recipes/` of a source checkout, or the copy inside an installed wheel."""
    here = Path(__file__).resolve().parent
    for candidate in (here.parent / "recipes", here / "_recipes"):
        if candidate.is_dir():
            return candidate
    raise RecipeError("the bundled recipes folder is missing: reinstall edgenlp")


def default() -> Recipe:
    return load(recipes_dir() / "default.yaml")
