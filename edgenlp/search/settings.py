"""The settings of the two searches, as recipes and stage configs hold them: no search is loaded here.

`SearchSettings` is a recipe's `search:` block (the accuracy-budget search of `budget.py`);
`TuningSettings` is a training stage's `search:` block (the Optuna study of `tuning.py`).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..quantization import MIN_CALIBRATION_SAMPLES

NOT_SEARCHABLE = {"data", "task", "search", "metric", "teacher", "threads"}
"""Stage settings a trial may not change: they define what is trained, not how."""


class SearchSettings(BaseModel):
    """The space the accuracy-budget search explores (recipe `search:`)."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    """Search when a quality budget (`max_accuracy_drop`) is set; false: only filter finished variants."""
    modes: list[Literal["dynamic", "static"]] = ["dynamic", "static"]
    calibrators: list[Literal["minmax", "entropy", "percentile"]] = ["minmax", "entropy", "percentile"]
    per_channel: list[bool] = [False, True]
    embeddings: list[bool] = [True, False]
    """Quantise the embedding tables (Gather) too, or keep them in float."""
    embedding_bits: list[Literal[8, 4]] = [8]
    """Dynamic mode, tables quantised: their bits. 4 stores them in 0.625 bytes a value and costs a
    little time (onnxruntime's 4-bit gather is slower than its 8-bit one), so it pays where
    `selection.max_size_mb` binds; `[8, 4]` tries both."""
    attention_matmuls: list[bool] = [False, True]
    """Dynamic mode: also quantise the MatMuls of two activations (attention scores and context), or not
    (static quantisation takes them anyway); kept where the tuning split and the latency look say so."""
    calibration_samples: int = Field(256, ge=MIN_CALIBRATION_SAMPLES)
    bases: list[str] | None = None
    """FP32 ONNX variants to start from; None: every ONNX export of the recipe (pruned ones included)."""
    tuning_examples: int | None = Field(1000, ge=1)
    """Examples of the tuning split each trial is scored on (None: all)."""
    min_tuning_examples: int = Field(100, ge=1)
    """Fewer unseen validation examples than this is an error: the drop would be noise."""
    sensitivity: Literal["reference", "needed", "all"] = "reference"
    """Which bases get a per-node analysis: the reference's export (for the report) and any base whose
    fully quantised model misses the budget (`reference`), only the latter (`needed`), or every base."""
    sensitivity_examples: int = Field(200, ge=1)
    """Tuning examples each one-node model is scored on (the KL divergence uses probe batches)."""
    probe_samples: int = Field(64, ge=MIN_CALIBRATION_SAMPLES)
    """Calibration-set samples the one-node models are compared with the FP32 parent on (KL divergence)."""
    max_float_nodes: int | None = Field(None, ge=1)
    """Most nodes the search may return to float in one variant (None: all)."""
    measure_top: int = Field(6, ge=1)
    """Candidates, fastest first by the latency look, that the harness measures."""
    threads: int | None = Field(None, ge=1)
    """Threads for scoring trials (None: every core); latency looks use the primary profile's."""


class Distribution(BaseModel):
    """One searched setting: a range (`low`, `high`, optionally `log` or `step`) or a list of `choices`."""

    model_config = ConfigDict(extra="forbid")

    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = Field(None, gt=0)
    choices: list[Any] | None = None

    @model_validator(mode="after")
    def _has_a_point(self) -> Distribution:
        if self.choices is not None:
            if not self.choices:
                raise ValueError("choices is empty, so the search has no value to try: list at least one")
            if self.low is not None or self.high is not None:
                raise ValueError("give either choices or low/high, not both")
            return self
        if self.low is None or self.high is None:
            raise ValueError("a range needs both low and high (or give choices)")
        if self.low > self.high:
            raise ValueError(f"low {self.low} is above high {self.high}: the range holds no value")
        if self.log and self.low <= 0:
            raise ValueError(f"a log range must start above 0 (low is {self.low})")
        if self.log and self.step is not None:
            raise ValueError("a range is either log or stepped, not both")
        return self

    def contains(self, value: Any) -> bool:
        if self.choices is not None:
            return value in self.choices
        return value is not None and self.low <= value <= self.high


class TuningSettings(BaseModel):
    """The `search:` block of a training stage."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    trials: int = 8
    """Trials in all, trial 0 (the stage's own settings) included; an interrupted study counts what it finished."""
    timeout_minutes: float | None = Field(None, gt=0)
    """No new trial starts after this much wall time in one run."""
    space: dict[str, Distribution] | None = None
    """Settings to search; None: the stage's default space (learning rate, batch size, warm-up, weight decay...)."""
    fixed: dict[str, Any] = {}
    """Settings every trial uses instead of the stage's own (a shorter training, a smaller evaluation)."""
    include_defaults: bool = True
    """Make trial 0 the stage's own settings, so the report can say whether the search beat them."""
    seed: int = 0
    startup_trials: int = Field(3, ge=0)
    """Completed trials before the median pruner may stop another."""
    warmup_evaluations: int = Field(1, ge=0)
    """Evaluations of a trial before the pruner may stop it."""

    @model_validator(mode="after")
    def _has_a_budget(self) -> TuningSettings:
        if self.trials < 1:
            raise ValueError(f"a budget of {self.trials} trials runs nothing: set search.trials to 1 or more")
        if self.space is not None and not self.space:
            raise ValueError("search.space is empty: name at least one setting to search, or leave it out")
        return self


def check_against(config: BaseModel, default_space: dict[str, dict]) -> None:
    """Fill in the stage's default space and refuse what no trial could run with (called by the stage config)."""
    settings: TuningSettings = config.search
    if settings.space is None:
        settings.space = {k: Distribution(**v) for k, v in default_space.items()}
    fields = type(config).model_fields
    for where, names in (("space", settings.space), ("fixed", settings.fixed)):
        for name in names:
            if name not in fields or name in NOT_SEARCHABLE:
                usable = ", ".join(sorted(n for n in fields if n not in NOT_SEARCHABLE))
                raise ValueError(f"search.{where}.{name} is not a setting a trial can change: use one of {usable}")
    clash = set(settings.space) & set(settings.fixed)
    if clash:
        raise ValueError(f"search: {', '.join(sorted(clash))} is both searched and fixed: keep it in one of them")
    for name, dist in settings.space.items():
        if dist.choices is None and fields[name].annotation not in (int, float, int | None, float | None):
            raise ValueError(f"search.space.{name} is not a number: give it choices instead of a range")
        if settings.include_defaults and dist.choices is not None and not dist.contains(getattr(config, name)):
            raise ValueError(
                f"search.space.{name}: the stage's own value {getattr(config, name)!r} is not among "
                f"the choices {dist.choices}: add it, or set include_defaults: false"
            )
    trial_config(config, dict(settings.fixed))  # the fixed settings must make a valid config on their own


def trial_config(config: BaseModel, values: dict[str, Any]) -> BaseModel:
    """The stage config one trial trains with: validated, so a sampled value out of bounds fails loudly."""
    merged = {**config.model_dump(), **values, "search": None}
    return type(config)(**merged)


class StructureSearchSettings(BaseModel):
    """Prune to a latency target (recipe `structure:`, or `--target-speedup` / `--target-ms`): see
    `search/structure.py`. Off until a target is given."""

    model_config = ConfigDict(extra="forbid")

    target_speedup: float | None = Field(None, gt=1)
    """Times faster than the fastest unpruned variant measured in the same run."""
    target_ms: float | None = Field(None, gt=0)
    """p50 latency to reach, batch 1, at `length` tokens under the primary profile."""
    length: int = Field(128, ge=8)
    """Tokens a pass the latencies are measured and predicted at (the bench must measure it too)."""
    margin: float = Field(0.05, ge=0, lt=0.5)
    """Share of the target the candidates are planned under: the harness times them again later, on a machine
    whose timings drift, and a candidate predicted right at the target misses it about half the time."""
    candidates: int = Field(3, ge=1, le=8)
    """Structures built and measured (the most capacious predicted to meet the target, one per depth)."""
    parent: str | None = None
    """The trained variant the candidates are pruned from; None: the recipe's finetune variant, else the model."""
    prune: dict[str, Any] = {"importance": "taylor", "calibration_batches": 16, "batch_size": 32}
    """Settings of each candidate's `prune` (its layers and ratios come from the search)."""
    distill: dict[str, Any] = {
        "max_length": 128,
        "max_steps": 400,
        "batch_size": 32,
        "learning_rate": 2.0e-4,
        "alpha": 0.7,
        "hidden_weight": 1.0,
        "eval_every": 100,
        "patience": 3,
        "max_eval_examples": 1000,
    }
    """Settings of each candidate's recovery by distillation."""
    quantize: dict[str, Any] = {"op_types": ["MatMul", "Gather"]}

    @model_validator(mode="after")
    def _one_target(self) -> StructureSearchSettings:
        if self.target_speedup is not None and self.target_ms is not None:
            raise ValueError("give target_speedup or target_ms, not both")
        return self

    @property
    def enabled(self) -> bool:
        return self.target_speedup is not None or self.target_ms is not None
