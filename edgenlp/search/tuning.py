"""Hyper-parameter search for the training stages (finetune, distill) with Optuna.

A `search:` block in a training stage's config turns one training run into a study:

    - name: pytorch-fp32
      stage: finetune
      config:
        learning_rate: 8.0e-5
        search:
          trials: 8
          fixed: {max_steps: 90, eval_every: 30}       # every trial trains this long
          space:
            learning_rate: {low: 1.0e-5, high: 3.0e-4, log: true}
            batch_size: {choices: [16, 32]}

Trial 0 trains with the stage's own settings (what the search must beat, under the same budget);
the others are sampled by TPE. Every evaluation the training loop already does is reported to a
median pruner, which stops a trial that is worse than the median of earlier trials at that step.
The study lives in SQLite under `<variant>.tuning/<key>/` beside the variant's folder (in the run
folder, outside the stage's work folder, which is discarded on failure), so an interrupted search resumes where it
stopped: finished trials are kept, a trial cut off mid-way is marked failed and not counted.
The best trial's checkpoint is the stage's output; its training log carries every trial.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from .. import executors
from ..errors import RecipeError
from .settings import Distribution, TuningSettings, trial_config

log = logging.getLogger(__name__)

STUDY_FILE = "study.db"
TRIAL_OUTPUT = "trial_output.json"


def _suggest(trial, name: str, dist: Distribution, is_int: bool):
    if dist.choices is not None:
        return trial.suggest_categorical(name, dist.choices)
    if is_int:
        return trial.suggest_int(name, int(dist.low), int(dist.high), step=int(dist.step or 1), log=dist.log)
    return trial.suggest_float(name, dist.low, dist.high, step=dist.step, log=dist.log)


class Reporter:
    """Hands each evaluation of a trial's training to the pruner; raises optuna.TrialPruned to stop it."""

    def __init__(self, trial, metric: str, warmup_evaluations: int):
        self.trial, self.metric, self.warmup, self.evaluations = trial, metric, warmup_evaluations, 0

    def __call__(self, step: int, result: dict) -> None:
        import optuna

        self.evaluations += 1
        self.trial.report(float(result[self.metric]), step)
        self.trial.set_user_attr("evals", [*self.trial.user_attrs.get("evals", []), [step, result[self.metric]]])
        if self.evaluations > self.warmup and self.trial.should_prune():
            raise optuna.TrialPruned(f"{self.metric} {result[self.metric]:.4g} at step {step} is below the median")


def study_folder(workdir: Path, config: BaseModel, parent_id: str) -> Path:
    """`<variant>.tuning/<key>` beside the output: outside the work folder, keyed by what the study starts from
    and searches (not by its budget: a rerun with more trials adds to the same study)."""
    variant = workdir.name.lstrip(".").split(".partial-")[0] or "study"
    what = config.model_dump(mode="json")
    for budget in ("trials", "timeout_minutes"):  # raising the budget continues the same study
        what["search"].pop(budget, None)
    key = hashlib.sha256(json.dumps([parent_id, what], sort_keys=True, default=str).encode()).hexdigest()[:12]
    return workdir.parent / f"{variant}.tuning" / key


def _pruner(settings: TuningSettings):
    import optuna

    return optuna.pruners.MedianPruner(n_startup_trials=settings.startup_trials, n_warmup_steps=0, interval_steps=1)


def study_url(path: Path) -> str:
    """The SQLite URL of the study file, built by SQLAlchemy: a `?` or `%` in the run folder's path stays part
    of the path instead of starting a query or an escape."""
    from sqlalchemy.engine import URL

    return URL.create("sqlite", database=str(Path(path).resolve())).render_as_string(hide_password=False)


def search(
    config: BaseModel,
    workdir: Path,
    parent_id: str,
    higher_is_better: bool,
    metric: str,
    train_one: Callable[..., Any],
    reads: tuple[Path, ...] = (),
):
    """Run (or resume) the study; copy the best trial's checkpoint into `workdir`; return its StageOutput.

    `train_one(*reads, trial_config, folder, on_eval)` trains once into `folder` and returns a
    StageOutput; `reads` are the folders it reads (sent to the node where a trial runs).
    With an executor that runs work elsewhere, trials run there, several at once.
    """
    import optuna

    settings: TuningSettings = config.search
    folder = study_folder(workdir, config, parent_id)
    folder.mkdir(parents=True, exist_ok=True)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        study_name="search",
        storage=study_url(folder / STUDY_FILE),
        load_if_exists=True,
        direction="maximize" if higher_is_better else "minimize",
        sampler=optuna.samplers.TPESampler(seed=settings.seed, n_startup_trials=min(4, settings.trials)),
        pruner=_pruner(settings),
    )
    _fail_interrupted(study)
    fields = type(config).model_fields
    is_int = {name: fields[name].annotation in (int, int | None) for name in settings.space}
    finished = [
        t for t in study.trials if t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    ]
    queued = [t for t in study.trials if t.state == optuna.trial.TrialState.WAITING]
    if settings.include_defaults and not any(t.user_attrs.get("defaults") for t in finished + queued):
        study.enqueue_trial(
            {name: getattr(config, name) for name in settings.space},
            user_attrs={"defaults": True},
            skip_if_exists=False,
        )
    _keep_only_best(study, folder)

    def objective(trial) -> float:
        values = {**settings.fixed, **{n: _suggest(trial, n, d, is_int[n]) for n, d in settings.space.items()}}
        trial_dir = folder / f"trial-{trial.number}"
        shutil.rmtree(trial_dir, ignore_errors=True)
        trial_dir.mkdir()
        reporter = Reporter(trial, metric, settings.warmup_evaluations)
        started = time.time()
        try:
            output = train_one(*reads, trial_config(config, values), trial_dir, reporter)
        except BaseException:
            shutil.rmtree(trial_dir, ignore_errors=True)
            raise
        finally:
            trial.set_user_attr("seconds", round(time.time() - started, 1))
        score = output.metadata[f"validation_{metric}"]
        (trial_dir / TRIAL_OUTPUT).write_text(
            json.dumps(
                {
                    "format": output.format,
                    "task": output.task,
                    "precision": output.precision,
                    "metadata": output.metadata,
                }
            )
        )
        trial.set_user_attr("steps", output.metadata.get("steps"))
        trial.set_user_attr("best_step", output.metadata.get("best_step"))
        return float(score)

    remaining = settings.trials - len(finished)
    started = time.time()
    executor = executors.current()
    if remaining > 0 and executor.remote:
        _optimize_elsewhere(executor, study, config, folder, is_int, metric, train_one, reads, remaining)
    elif remaining > 0:
        study.optimize(
            objective,
            n_trials=remaining,
            catch=(),
            timeout=settings.timeout_minutes * 60 if settings.timeout_minutes else None,
            callbacks=[lambda study, trial: _keep_only_best(study, folder)],
        )
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if not complete:
        raise RecipeError(
            f"the search finished no trial (all {len(study.trials)} pruned, failed or cut by the "
            "time budget): raise search.trials or search.timeout_minutes"
        )
    best = study.best_trial
    best_dir = folder / f"trial-{best.number}"
    if not (best_dir / TRIAL_OUTPUT).exists():
        raise RecipeError(f"the best trial's checkpoint {best_dir} is missing: delete {folder} to search again")
    shutil.copytree(best_dir, workdir, dirs_exist_ok=True, ignore=shutil.ignore_patterns(TRIAL_OUTPUT))
    summary = summarise(study, settings, metric, higher_is_better, folder, round(time.time() - started, 1))
    training_log = workdir / "training_log.json"
    if training_log.exists():
        logged = json.loads(training_log.read_text())
        training_log.write_text(json.dumps({**logged, "search": summary}, indent=1))
    stored = json.loads((best_dir / TRIAL_OUTPUT).read_text())
    from ..artifact import StageOutput

    metadata = {
        **stored["metadata"],
        "search": {
            k: summary[k]
            for k in (
                "trials",
                "complete",
                "pruned",
                "best_trial",
                "best_params",
                "best_value",
                "defaults_value",
                "beat_defaults",
                "study",
            )
        },
    }
    return StageOutput(format=stored["format"], task=stored["task"], precision=stored["precision"], metadata=metadata)


def _optimize_elsewhere(
    executor,
    study,
    config: BaseModel,
    folder: Path,
    is_int: dict,
    metric: str,
    train_one: Callable,
    reads: tuple[Path, ...],
    count: int,
) -> None:
    """Trials as executor tasks, several at once: the driver asks the study for each trial's values
    and tells it the score; the nodes report intermediate scores (and learn whether to stop)
    through a gRPC proxy of the study's storage that this process serves while the trials run."""
    import threading

    import optuna
    from optuna.storages._grpc.server import make_server

    from ..executors.transport import unpack

    settings: TuningSettings = config.search
    host = executor.reachable_host()
    port = _free_port(host)
    server = make_server(study._storage, host, port)
    server.start()
    loopback = host.startswith("127.")
    logging.getLogger(__name__).log(
        logging.INFO if loopback else logging.WARNING,
        "tuning: the study's gRPC proxy listens on %s:%d, unauthenticated, until the trials finish (%s)",
        host,
        port,
        "loopback only" if loopback else "reachable from the cluster's network: keep that network trusted",
    )
    lock = threading.Lock()
    deadline = time.time() + settings.timeout_minutes * 60 if settings.timeout_minutes else None
    cpus = executor.settings.build_cpus or 1
    needs = executors.Needs(cpus=cpus, memory_gb=executor.settings.build_memory_gb, what="a tuning trial")
    width = min(executor.concurrency(needs), executor.settings.parallel_trials or count, count)
    shipped = tuple(executors.Shipped.of(path) for path in reads)

    def one(_: int) -> None:
        if deadline is not None and time.time() > deadline:
            return
        with lock:
            trial = study.ask()
            values = {**settings.fixed, **{n: _suggest(trial, n, d, is_int[n]) for n, d in settings.space.items()}}
        trial_dir = folder / f"trial-{trial.number}"
        # the checkpoint is unpacked beside, under a name `_keep_only_best` does not touch, and renamed
        # once complete: another thread may be clearing the losing trials' folders meanwhile
        incoming = folder / f".incoming-{trial.number}"
        shutil.rmtree(trial_dir, ignore_errors=True)
        shutil.rmtree(incoming, ignore_errors=True)
        try:
            output, blob = executor.call(
                _trial_on_node,
                train_one,
                shipped,
                trial_config(config, values),
                metric,
                settings,
                host,
                port,
                trial._trial_id,
                cpus,
                needs=needs,
            )
            unpack(blob, incoming, f"trial {trial.number}'s checkpoint")
            (incoming / TRIAL_OUTPUT).write_text(
                json.dumps(
                    {
                        "format": output.format,
                        "task": output.task,
                        "precision": output.precision,
                        "metadata": output.metadata,
                    }
                )
            )
        except optuna.TrialPruned:
            with lock:
                study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            return
        except BaseException:
            shutil.rmtree(incoming, ignore_errors=True)
            with lock:
                study.tell(trial, state=optuna.trial.TrialState.FAIL)
            raise
        with lock:
            incoming.rename(trial_dir)
            study.tell(trial, float(output.metadata[f"validation_{metric}"]))
            _keep_only_best(study, folder)

    try:
        executors.run_all(executor, one, list(range(count)), needs, width=width)
    finally:
        server.stop(0)


def _free_port(host: str) -> int:
    import socket

    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def _trial_on_node(
    train_one: Callable,
    reads: tuple[Path, ...],
    config: BaseModel,
    metric: str,
    settings: TuningSettings,
    host: str,
    port: int,
    trial_id: int,
    threads: int,
):
    """One trial on a node: trains into scratch, reports through the driver's study; returns its files."""
    import tempfile

    import optuna
    import torch

    from ..executors.transport import pack

    torch.set_num_threads(threads)
    study = optuna.load_study(
        study_name="search", storage=optuna.storages.GrpcStorageProxy(host=host, port=port), pruner=_pruner(settings)
    )
    trial = optuna.Trial(study, trial_id)
    scratch = Path(tempfile.mkdtemp(prefix="edgenlp-trial-"))
    started = time.time()
    try:
        output = train_one(*reads, config, scratch, Reporter(trial, metric, settings.warmup_evaluations))
        trial.set_user_attr("steps", output.metadata.get("steps"))
        trial.set_user_attr("best_step", output.metadata.get("best_step"))
        return output, pack(scratch)
    finally:
        trial.set_user_attr("seconds", round(time.time() - started, 1))
        shutil.rmtree(scratch, ignore_errors=True)


def _fail_interrupted(study) -> None:
    """A trial left RUNNING by a killed process will never finish: mark it failed so it is not counted."""
    import optuna

    for trial in study.trials:
        if trial.state == optuna.trial.TrialState.RUNNING:
            study._storage.set_trial_state_values(trial._trial_id, optuna.trial.TrialState.FAIL)


def _keep_only_best(study, folder: Path) -> None:
    """Delete the checkpoints of every finished trial but the best complete one (edgenlp wrote them all).
    A trial still running has no `trial-N` folder yet: on Ray it unpacks into `.incoming-N`, renamed
    under the study lock as it is told; locally trials run one at a time."""
    import optuna

    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    best = study.best_trial.number if complete else None
    for path in folder.glob("trial-*"):
        if path.is_dir() and path.name != f"trial-{best}":
            shutil.rmtree(path, ignore_errors=True)


def summarise(
    study, settings: TuningSettings, metric: str, higher_is_better: bool, folder: Path, seconds: float
) -> dict:
    """Every trial, the best, the defaults' score and the parameter importances (JSON-ready)."""
    import optuna

    states = optuna.trial.TrialState
    trials = [
        {
            "number": t.number,
            "state": t.state.name.lower(),
            "params": t.params,
            "value": t.value,
            "defaults": bool(t.user_attrs.get("defaults")),
            "evals": t.user_attrs.get("evals", []),
            "steps": t.user_attrs.get("steps"),
            "best_step": t.user_attrs.get("best_step"),
            "seconds": t.user_attrs.get("seconds"),
        }
        for t in study.trials
        if t.state != states.WAITING
    ]
    defaults = next((t["value"] for t in trials if t["defaults"] and t["state"] == "complete"), None)
    best = study.best_trial
    importances = {}
    varied = [n for n, d in settings.space.items() if d.choices is None or len(d.choices) > 1]
    if len([t for t in study.trials if t.state == states.COMPLETE]) >= 3 and varied:
        try:
            importances = {
                k: round(v, 4)
                for k, v in optuna.importance.get_param_importances(
                    study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=settings.seed)
                ).items()
            }
        except (RuntimeError, ValueError) as exc:  # e.g. every complete trial has the same parameters
            log.info("parameter importances not computed: %s", exc)
    beat = None
    if defaults is not None:
        beat = best.value > defaults if higher_is_better else best.value < defaults
    return {
        "metric": metric,
        "direction": "maximize" if higher_is_better else "minimize",
        "trials": len(trials),
        "complete": sum(t["state"] == "complete" for t in trials),
        "pruned": sum(t["state"] == "pruned" for t in trials),
        "failed": sum(t["state"] == "fail" for t in trials),
        "best_trial": best.number,
        "best_params": best.params,
        "best_value": best.value,
        "defaults_value": defaults,
        "beat_defaults": beat,
        "importances": importances,
        "space": {k: v.model_dump(exclude_none=True) for k, v in settings.space.items()},
        "fixed": settings.fixed,
        "study": str(folder / STUDY_FILE),
        "seconds_this_run": seconds,
        "trial_log": trials,
    }
