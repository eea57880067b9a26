"""The one interface between a task and the core: `Task`, with the Session and Trainer it provides.

A task is a package (`tasks/<task>/`) whose `__init__` exposes these names, each from the module of
its layer: `spec` (what the task is), `data`, `validate`, `session` (the worker side), `measure`
(the harness side: workloads and figures), `tuning` (the searches' hooks), `train`, `report`,
`bundle`. The pipeline, the stages, the harness, the selection, the searches, the report and the
bundle reach a task only through this interface; none branches on a task's name.
`tests/test_tasks.py` holds every registered task against it, and a type checker does too
(`tasks/__init__.py` assigns each task package to a `Task`).

Parameters are positional-only where the core passes them by position, so a task may name them
for its own data (a dataset of labelled texts, a corpus).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable


@dataclass(frozen=True)
class Quality:
    """The quality axis: its metric, which way is better, and how a loss against the reference reads."""

    metric: str
    higher_is_better: bool
    drop_metric: str
    drop_unit: str
    label: str


@dataclass
class Workload:
    """One timed request sent to a worker each round (`key` names where its answers are kept)."""

    key: str
    request: dict = field(default_factory=dict)


class WorkerSession(Protocol):
    """The worker side: one model answering the harness in its own process (torch-free for ONNX)."""

    def __init__(self, path: str, runner: str, threads: int, payload_file: str, /) -> None: ...

    def stats(self) -> dict:
        """Facts of the loaded model the figures need (mean tokens, weight bytes read per token...)."""
        ...

    def handle(self, req: dict, /) -> dict:
        """Answer one request: `eval`, or a workload op the task's `workloads` sends."""
        ...


class TaskTrainer(Protocol):
    """The task's half of the training loop (`stages/finetune.py`, `stages/distill.py`, pruning's
    calibration): the model and its batches, the evaluation, what to save."""

    METRIC: str
    """The metric checkpoints are picked on."""
    METRICS: dict[str, bool]
    """Metric name -> higher is better."""
    model: Any
    train_size: int
    data_description: dict

    def __init__(self, parent_path: Path, data: Any, config: Any, /) -> None: ...

    def describe(self) -> dict: ...

    def batches(self, rng: Any, batch_size: int, /) -> Iterator[dict]: ...

    def evaluate(self, batch_size: int = ...) -> dict: ...

    def save(self, workdir: Path, /) -> None: ...

    def loss(self, model: Any, batch: dict, /) -> Any:
        """The task's own training loss of `model` on one of `batches`' batches."""
        ...

    def distillation_terms(self, student: Any, teacher: Any, batch: dict, temperature: float, hidden: bool, /) -> tuple:
        """(student outputs, teacher outputs, soft loss against the teacher, the task's own loss) of one batch;
        the outputs carry `hidden_states` when `hidden`."""
        ...


@runtime_checkable
class Task(Protocol):
    """What a task is and does, layer by layer."""

    # -- spec: what the task is
    NAME: str
    """`text-classification`, `text-generation`: recipes, results and bundles name the task by it."""
    AUTO_MODEL: str
    """The transformers Auto class that loads a PyTorch model for this task."""
    QUALITY: Quality
    GATE_METRICS: tuple[str, ...]
    """The task's own metric names for gates and selection (`metric`)."""
    SPEED: tuple[str, str]
    """(metric, description) that selection minimises."""
    MODEL_MUST_BE: str | None
    """What a model must already be for this task (it cannot be given it by re-heading another), or None."""
    CALIBRATION_BATCH: int
    """Calibration samples per batch of static quantisation."""
    EXPORT_TASK: str
    USED_AS_TRAINED: str | None
    """Why a trained checkpoint made for this task is used as given by `finetune`'s `train: if-needed`
    (None: the task decides by its data, as a classifier does by its labels)."""
    """Optimum's export task for this task's models (`text-classification`, `text-generation-with-past`)."""

    # -- classes the core instantiates (read-only: a task's own class stands in for the protocol)
    @property
    def Session(self) -> type[WorkerSession]:
        """The worker side: one model answering the harness (`session.py`)."""
        ...

    @property
    def Trainer(self) -> type[TaskTrainer]:
        """The task's half of the training loop (`train.py`)."""
        ...

    # -- data
    def load_data(self, spec: Any, /) -> Any:
        """The splits the task trains and evaluates on (`.describe()`, `.name`)."""
        ...

    def claims_data(self, spec: Any, /) -> bool:
        """Whether `spec` names data only this task reads: a bare encoder given it gets this task."""
        ...

    def fingerprint(self, spec: Any, /) -> str:
        """The data's content hash, for artifact ids."""
        ...

    def validation_texts(self, data: Any, n: int, /) -> list[str]:
        """Texts a new variant is checked against its parent on."""
        ...

    def eval_set(self, data: Any, model_labels: list[str], /) -> Any:
        """The held-out data the harness evaluates on (it names its task: `.task`)."""
        ...

    def payload(self, eval_set: Any, settings: Any, /) -> dict:
        """What the evaluation worker reads (texts, labels, prompts), as JSON."""
        ...

    def tuning_set(
        self, data: Any, model_labels: Any, limit: int | None, /, seed: int = ..., seen: Any = ..., minimum: int = ...
    ) -> Any:
        """Validation data no training stage picked its checkpoint on: what the searches score on."""
        ...

    def calibration_batches(
        self, data: Any, model_dir: Path, samples: int, batch_size: int, seed: int = ..., /
    ) -> Iterator[dict]:
        """`samples` training inputs as graph feeds, streamed in batches."""
        ...

    # -- validate
    def check_against_parent(self, parent: Any, child: Any, texts: list[str], settings: Any, /) -> dict:
        """What the check found; raises ValidationFailed when the child is not faithful."""
        ...

    # -- measure: the harness side
    def check_profiles(self, candidates: list, profiles: list, /) -> None:
        """Refuse shapes a candidate cannot take, before any process starts."""
        ...

    def truncated_input(self, profile: Any, /) -> int | None:
        """The longest input a variant's max_length must allow under `profile` (None: no such limit)."""
        ...

    def speed_targets(self, profile: dict, /) -> list[tuple[str, str]]:
        """(label, metric) pairs selection ranks variants by in one profile."""
        ...

    def eval_request(self, candidate: Any, reference: Any, /) -> dict:
        """Extra fields of the `eval` request (the reference to compare with)."""
        ...

    def workloads(
        self, profile: Any, settings: Any, round_index: int, candidate: str, reference: str, /
    ) -> list[Workload]:
        """The timed requests of one round under one profile."""
        ...

    def summarise(
        self, candidate: Any, raw: dict, reference_raw: dict, payload: dict, profiles: list, settings: Any, /
    ) -> dict:
        """Metrics, latency summaries and per-profile figures of one variant."""
        ...

    def eval_section(self, payload: dict, reference_raw: dict, profiles: list, /) -> dict:
        """The `eval` block of the results."""
        ...

    def ratios(self, variant: dict, reference: dict, settings: Any, /) -> dict:
        """Speed-ups against the reference with their intervals, and the quality deltas."""
        ...

    def metric(self, results: dict, variant: dict, name: str, profile: str, /) -> float | None:
        """One of GATE_METRICS for a variant, or None for a name the task does not define."""
        ...

    # -- tuning: what the accuracy-budget search asks
    def tuning_quality(self, model_dir: Path, tuning: Any, /, threads: int = ...) -> float:
        """The quality metric of an ONNX variant on the tuning set."""
        ...

    def quality_drop(self, reference: float, value: float, /) -> float:
        """The loss against the reference, in QUALITY.drop_unit."""
        ...

    def screen_latency(self, model_dir: Path, tuning: Any, threads: int, /) -> float:
        """A short first latency look (ms), to shortlist candidates for the harness."""
        ...

    # -- report
    def report_sections(self, results: dict, /) -> list[str]:
        """The task's Markdown sections (its HTML tables: `report/templates/<NAME>.html.j2`)."""
        ...

    def figures(self, results: dict, /) -> list[tuple[str, str | None]]:
        """(caption, inline SVG or None) per plot of the HTML report."""
        ...

    # -- bundle
    def bundle_section(self, variant: Any, folder: Path, model_rel: str, /, engine: str = ...) -> dict:
        """The task's part of a bundle's manifest; may edit the bundle's config."""
        ...

    def bundle_summary(self, results: dict, variant: dict, /) -> dict:
        """The measured figures a bundle's manifest carries."""
        ...

    def target_check_set(self, eval_set: Any, limit: int | None = ..., /) -> tuple[list[str], list | None]:
        """The held-out texts a bundle is run on when checked on another machine, and gold answers if any."""
        ...

    def compare_target_answers(self, here: dict, there: dict, references: list | None = ..., /) -> dict:
        """This machine's `runtime.check` answers against the target's: `passed`, `summary` and the task's measure."""
        ...


def mismatches(task: Any) -> list[str]:
    """What `task` lacks of `Task`, or takes differently (positional parameters): empty when it conforms.

    The runtime check of what a type checker also checks, so a task missing a hook fails one test
    with its name instead of an AttributeError minutes into a run.
    """
    import inspect

    problems = []
    for name in Task.__annotations__:
        if not hasattr(task, name):
            problems.append(f"{name} (attribute) is missing")
    for name, expected in vars(Task).items():
        if isinstance(expected, property):
            if not inspect.isclass(getattr(task, name, None)):
                problems.append(f"{name} (a class) is missing")
            continue
        if name.startswith("_") or not inspect.isfunction(expected):
            continue
        found = getattr(task, name, None)
        if not callable(found):
            problems.append(f"{name}() is missing")
            continue
        wanted = [p for p in inspect.signature(expected).parameters.values() if p.name != "self"]
        given = inspect.signature(found).parameters
        positional = [p for p in given.values() if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        required = [p for p in wanted if p.default is p.empty]
        if len(positional) < len(required):
            problems.append(
                f"{name}() takes {len(positional)} positional parameters, the interface passes {len(required)}"
            )
        extra = [p.name for p in positional[len(wanted) :] if p.default is p.empty]
        if extra:
            problems.append(f"{name}() needs {', '.join(extra)}, which the interface never passes")
        for p in wanted:
            if p.kind == p.KEYWORD_ONLY or (p.kind == p.POSITIONAL_OR_KEYWORD and p.default is not p.empty):
                if p.name not in given:
                    problems.append(f"{name}() has no parameter {p.name}, which the core passes by name")
    for cls_name, protocol in (("Session", WorkerSession), ("Trainer", TaskTrainer)):
        cls = getattr(task, cls_name, None)
        if cls is None:
            continue
        for name, expected in vars(protocol).items():
            if not name.startswith("_") and inspect.isfunction(expected) and not callable(getattr(cls, name, None)):
                problems.append(f"{cls_name}.{name}() is missing")
    return problems
