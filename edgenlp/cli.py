"""The `edgenlp` command. User errors end as one line on stderr and exit code 2."""

from __future__ import annotations

import errno
import logging
import sys
import traceback
from functools import wraps
from pathlib import Path
from typing import Callable, List, Optional

import typer
from rich.console import Console
from rich.markup import escape

from . import progress
from .errors import EdgeNLPError

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Make fine-tuned transformer NLP models small and fast for edge CPUs, with benchmarks.")
err_console = Console(stderr=True)
EXIT_USER_ERROR = 2


def _setup(verbose: bool, trust_remote_code: bool = False) -> None:
    from .trust import allow_remote_code

    allow_remote_code(trust_remote_code)
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    progress.enable(err_console)
    if not verbose:
        import warnings

        warnings.filterwarnings("ignore")
        for noisy in ("transformers", "optimum", "onnxruntime", "root", "torch"):
            logging.getLogger(noisy).setLevel(logging.ERROR)


def _guarded(fn: Callable) -> Callable:
    """Turn user errors into one line; keep a traceback file for bugs instead of dumping it."""

    @wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except EdgeNLPError as exc:
            err_console.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False, soft_wrap=True)
            raise typer.Exit(getattr(exc, "exit_code", EXIT_USER_ERROR))
        except KeyboardInterrupt:
            err_console.print("interrupted: finished variants are kept; rerun to continue")
            raise typer.Exit(130)
        except (typer.Exit, typer.Abort):
            raise
        except OSError as exc:
            if exc.errno not in USER_OS_ERRORS:
                _internal_error(exc)
            where = f" {exc.filename}" if exc.filename else ""
            err_console.print(f"[red]error:[/red] cannot write or read{escape(where)}: {escape(exc.strerror or str(exc))}: "
                              f"{USER_OS_ERRORS[exc.errno]}", highlight=False, soft_wrap=True)
            raise typer.Exit(EXIT_USER_ERROR)
        except Exception as exc:
            _internal_error(exc)

    return wrapper


USER_OS_ERRORS = {
    errno.EACCES: "fix the permissions, or point --out (or the working directory) at a writable folder",
    errno.EPERM: "fix the permissions, or point --out (or the working directory) at a writable folder",
    errno.EROFS: "the file system is read-only: point --out (or the working directory) at a writable folder",
    errno.ENOSPC: "the disk is full: free space, or point --out at another disk; finished variants are kept",
    errno.EDQUOT: "the disk quota is used up: free space, or point --out at another disk",
}


def _internal_error(exc: Exception) -> None:
    """A bug: one line on the terminal, the traceback in a file of the user's own cache folder."""
    first_line = escape(str(exc).splitlines()[0]) if str(exc) else ""
    log = _write_traceback(traceback.format_exc())
    where = f"traceback written to {log}" if log else "no folder was writable for the traceback"
    err_console.print(f"[red]internal error:[/red] {type(exc).__name__}: {first_line} "
                      f"(a bug: {where}; please report it)", highlight=False, soft_wrap=True)
    raise typer.Exit(1)


def _write_traceback(trace: str) -> Path | None:
    """A new file under `EDGENLP_CACHE_DIR/errors` (a folder only the user can enter), created exclusively and
    never through a link: nothing planted in a shared folder can redirect it."""
    import os
    import time

    from .settings import cache_dir

    folder = cache_dir() / "errors"
    try:
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        if folder.is_symlink() or folder.stat().st_uid != os.getuid():
            return None
        path = folder / f"edgenlp-error-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(trace)
        return path
    except OSError:
        return None


def _typed(cls, what: str, **values):
    """Build a settings model from command-line values; a bad value is one line naming the option."""
    from pydantic import ValidationError

    try:
        return cls(**values)
    except ValidationError as exc:
        err = exc.errors()[0]
        option = "--" + str(err["loc"][0]).replace("_", "-") if err["loc"] else what
        raise EdgeNLPError(f"{what}: {option} {err['msg'].lower()} (got {err.get('input')!r}): fix that value") from None


def _selection(base, max_accuracy_drop, max_latency_ms, max_size_mb, fail_if):
    """The recipe's (or a previous run's) selection settings with the command-line flags on top."""
    from .bench.selection import parse_gates
    from .recipe import SelectionSettings

    if fail_if:
        parse_gates(fail_if)  # a typo fails now, not after minutes of measuring
    flags = {"max_accuracy_drop": max_accuracy_drop, "max_latency_ms": max_latency_ms,
             "max_size_mb": max_size_mb, "fail_if": fail_if}
    merged = {**(base or SelectionSettings()).model_dump(), **{k: v for k, v in flags.items() if v is not None}}
    return _typed(SelectionSettings, "selection", **merged)


def _conclude(results: dict, out_dir: Path) -> None:
    from .bench.selection import verdict_line

    console = Console()
    selected = (results.get("selection") or {}).get("selected")
    console.print(f"selected: {selected or 'none meets the limits'}", highlight=False)
    console.print(f"results: {out_dir / 'results.json'}\nreport:  {out_dir / 'report.md'}, {out_dir / 'report.html'}",
                  highlight=False)
    gates = results.get("gates")
    if gates:
        err_console.print(escape(verdict_line(gates)), highlight=False, soft_wrap=True)
        if gates["failed"]:
            raise typer.Exit(1)


def _run_name(recipe_name: str, model: str | None, data: str | None) -> str:
    """Default run folder: overriding the model or data gets its own folder, so it never replaces
    the finished variants of another run."""
    import re

    parts = [recipe_name] + [Path(x.rstrip("/")).stem or x for x in (model, data) if x]
    return "-".join(re.sub(r"[^A-Za-z0-9_.\-]+", "_", p) for p in parts)


MAX_DROP = typer.Option(None, "--max-accuracy-drop", help="Selection: accuracy points a variant may lose against the reference.")
MAX_LATENCY = typer.Option(None, "--max-latency-ms", help="Selection: p50 ms limit (first profile, real lengths).")
MAX_SIZE = typer.Option(None, "--max-size-mb", help="Selection: size limit in MB.")
TEXT_COLUMN = typer.Option(None, "--text-column", help="Text column of a data file.")
LABEL_COLUMN = typer.Option(None, "--label-column", help="Label column of a data file.")
TASK = typer.Option(None, "--task", help="text-classification or text-generation (default: the model's own; "
                   "a language model becomes a classifier only when asked).")
VERBOSE = typer.Option(False, "--verbose", "-v", help="Show details (library logs and warnings).")
TRUST_REMOTE_CODE = typer.Option(False, "--trust-remote-code", help="Let a model folder or hub repository run the "
                                 "Python code its auto_map names (off: edgenlp runs no code from a model).")
FAIL_IF = typer.Option(None, "--fail-if", help="Gate on the selected variant, e.g. 'accuracy_drop>1.0 or p90_ms>20 or size_mb>30'; exit 1 when it holds.")


@app.command()
@_guarded
def optimize(
    model: Optional[str] = typer.Argument(None, help="Checkpoint folder, hub id, or packaged name (minilm). Default: the recipe's."),
    data: Optional[str] = typer.Option(None, "--data", "-d", help="tweets, sst2, bbc-news, medical-abstracts, a CSV/TSV/JSONL file, or hub:NAME."),
    recipe_file: Optional[Path] = typer.Option(None, "--recipe", "-r", help="Recipe YAML (default: recipes/default.yaml)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Run folder (default: runs/<recipe name>)."),
    text_column: Optional[str] = TEXT_COLUMN,
    label_column: Optional[str] = LABEL_COLUMN,
    no_bench: bool = typer.Option(False, "--no-bench", help="Build and validate the variants, skip the benchmark."),
    task: Optional[str] = TASK,
    max_accuracy_drop: Optional[float] = MAX_DROP,
    max_latency_ms: Optional[float] = MAX_LATENCY,
    max_size_mb: Optional[float] = MAX_SIZE,
    fail_if: Optional[str] = FAIL_IF,
    search: Optional[bool] = typer.Option(None, "--search/--no-search", help="With --max-accuracy-drop: search quantisation settings and nodes to keep in float (default: the recipe's search.enabled, on)."),
    executor: Optional[str] = typer.Option(None, "--executor", help="local (default), ray (a Ray instance on this machine) or ray:ADDRESS (a running cluster): where builds, trials and measurements run."),
    trust_remote_code: bool = TRUST_REMOTE_CODE,
    verbose: bool = VERBOSE,
) -> None:
    """Fine-tune (if needed), export, optimise, quantise, validate and benchmark every variant."""
    _setup(verbose, trust_remote_code)
    from . import pipeline
    from . import recipe as recipe_module

    recipe = recipe_module.load(recipe_file) if recipe_file else recipe_module.default()
    recipe = recipe.model_copy(update={"selection": _selection(recipe.selection, max_accuracy_drop, max_latency_ms,
                                                               max_size_mb, fail_if)})
    if search is not None:
        recipe = recipe.model_copy(update={"search": recipe.search.model_copy(update={"enabled": search})})
    if executor is not None:
        from .executors import parse as parse_executor

        recipe = recipe.model_copy(update={"executor": recipe.executor.model_copy(update=parse_executor(executor))})
    updates: dict = {}
    if model:
        updates["model"] = model
    if task:
        updates["task"] = task
    if data or text_column or label_column:
        updates["data"] = recipe.data.model_copy(update={k: v for k, v in
                                                         {"source": data, "text_column": text_column,
                                                          "label_column": label_column}.items() if v})
    if updates:
        recipe = recipe_module.parse({**recipe.model_dump(mode="json"), **{
            k: (v.model_dump() if hasattr(v, "model_dump") else v) for k, v in updates.items()}}, "recipe")
    out_dir = out or Path("runs") / _run_name(recipe.name, model, data)
    outcome = pipeline.run(recipe, out_dir, bench=not no_bench)
    console = Console()
    for name in outcome.variants:
        state = "reused" if name in outcome.reused else "built"
        console.print(f"  {name:<24} {state:<7} {outcome.variants[name].path}", highlight=False)
    if outcome.results:
        _conclude(outcome.results, out_dir)


@app.command()
@_guarded
def finetune(
    model: str = typer.Argument(..., help="Checkpoint folder, hub id, or packaged name (minilm)."),
    data: str = typer.Option("tweets", "--data", "-d", help="Labelled texts (classification) or a corpus (text generation): a kit set, a file, hub:NAME."),
    out: Path = typer.Option(Path("runs/finetuned"), "--out", "-o", help="Folder for the fine-tuned checkpoint."),
    task: Optional[str] = TASK,
    epochs: float = typer.Option(2.0),
    max_steps: Optional[int] = typer.Option(None),
    batch_size: int = typer.Option(32),
    learning_rate: float = typer.Option(5e-5),
    max_length: int = typer.Option(128),
    eval_every: int = typer.Option(200),
    patience: int = typer.Option(3),
    seed: int = typer.Option(42),
    max_train_examples: Optional[int] = typer.Option(None, help="Train on a seeded subset of this size."),
    search: bool = typer.Option(False, "--search", help="Search learning rate, batch size, warm-up and weight decay with Optuna; trial 0 uses the settings above."),
    trials: int = typer.Option(8, help="With --search: trials in all (an interrupted search resumes and counts what it finished)."),
    search_minutes: Optional[float] = typer.Option(None, help="With --search: start no new trial after this many minutes."),
    text_column: Optional[str] = TEXT_COLUMN,
    label_column: Optional[str] = LABEL_COLUMN,
    trust_remote_code: bool = TRUST_REMOTE_CODE,
    verbose: bool = VERBOSE,
) -> None:
    """Fine-tune a classifier, or continue training a language model on a corpus; writes a checkpoint and a log.

    With --search, an Optuna study (median pruning of bad trials, stored beside --out so a rerun
    resumes) picks the settings; a recipe's `search:` block sets the space and fixed trial settings.
    """
    _setup(verbose, trust_remote_code)
    from . import models
    from .data import DataSpec
    from .stages import finetune as stage

    spec = _typed(DataSpec, "finetune", source=data, text_column=text_column, label_column=label_column,
                  max_train_examples=max_train_examples, seed=seed)
    config = _typed(stage.Config, "finetune", data=spec, epochs=epochs, max_steps=max_steps, batch_size=batch_size,
                    learning_rate=learning_rate, max_length=max_length, eval_every=eval_every,
                    patience=patience, seed=seed, task=task,
                    search={"trials": trials, "timeout_minutes": search_minutes} if search else None)
    artifact, reused = _build_one(models.resolve(model), stage, config, out)
    meta = artifact.meta["metadata"]
    metric = meta.get("metric", "accuracy")
    Console().print(f"{'reused' if reused else 'fine-tuned'} ({artifact.task}): {artifact.path} "
                    f"(best validation {metric} {meta[f'validation_{metric}']:.4f} at step {meta['best_step']})")
    found = meta.get("search")
    if found:
        verdict = {True: "beat", False: "did not beat", None: "could not be compared with"}[found["beat_defaults"]]
        Console().print(f"search: {found['complete']} of {found['trials']} trials complete, {found['pruned']} pruned; "
                        f"best trial {found['best_trial']} {found['best_params']}; it {verdict} the given settings "
                        f"({found['defaults_value']}); study {found['study']}")


@app.command()
@_guarded
def prune(
    model: str = typer.Argument(..., help="A fine-tuned BERT-family or GPT-2 checkpoint folder (or hub id)."),
    ratio: float = typer.Option(..., "--ratio", "-r", help="Share of attention heads and feed-forward channels to remove, in [0, 1)."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for the pruned checkpoint."),
    mode: str = typer.Option("uniform", help="uniform (same share in every layer) or global (least important across layers)."),
    importance: str = typer.Option("magnitude", help="magnitude (weights) or taylor (loss gradients on calibration batches; needs --data)."),
    head_ratio: Optional[float] = typer.Option(None, help="Share of heads alone (default: --ratio)."),
    ffn_ratio: Optional[float] = typer.Option(None, help="Share of feed-forward channels alone (default: --ratio)."),
    data: Optional[str] = typer.Option(None, "--data", "-d", help="Calibration data for Taylor importance: a kit set, a file, hub:NAME."),
    calibration_batches: int = typer.Option(8),
    task: Optional[str] = TASK,
    text_column: Optional[str] = TEXT_COLUMN,
    label_column: Optional[str] = LABEL_COLUMN,
    trust_remote_code: bool = TRUST_REMOTE_CODE,
    verbose: bool = VERBOSE,
) -> None:
    """Remove whole attention heads and feed-forward channels; writes a checkpoint that from_pretrained reloads."""
    _setup(verbose, trust_remote_code)
    from . import models
    from .data import DataSpec
    from .stages import prune as stage

    spec = _typed(DataSpec, "prune", source=data, text_column=text_column, label_column=label_column) if data else None
    config = _typed(stage.Config, "prune", ratio=ratio, mode=mode, importance=importance, head_ratio=head_ratio,
                    ffn_ratio=ffn_ratio, data=spec, calibration_batches=calibration_batches, task=task)
    artifact, reused = _build_one(models.resolve(model), stage, config, out)
    meta = artifact.meta["metadata"]
    params = meta["parameters"]
    Console().print(f"{'reused' if reused else 'pruned'}: {artifact.path} (heads per layer {meta['layer_heads']}; "
                    f"non-embedding parameters {params['before']['non_embedding_parameters']:,} -> "
                    f"{params['after']['non_embedding_parameters']:,}, MACs x{meta['macs']['kept']:.2f})")


@app.command()
@_guarded
def distill(
    model: str = typer.Argument(..., help="The student: usually a checkpoint written by `edgenlp prune`."),
    data: str = typer.Option("tweets", "--data", "-d", help="Training data: labelled texts or a corpus, as for finetune."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for the recovered checkpoint."),
    teacher: Optional[str] = typer.Option(None, help="Model to imitate (default: the one the student was pruned from)."),
    temperature: float = typer.Option(2.0),
    alpha: float = typer.Option(0.5, help="Weight of the teacher's soft labels; the task loss gets 1 - alpha."),
    hidden_weight: float = typer.Option(0.0, help="Weight of hidden-state matching (0: off)."),
    epochs: float = typer.Option(1.0),
    max_steps: Optional[int] = typer.Option(None),
    batch_size: int = typer.Option(32),
    learning_rate: float = typer.Option(5e-5),
    max_length: int = typer.Option(128),
    eval_every: int = typer.Option(200),
    patience: int = typer.Option(3),
    seed: int = typer.Option(42),
    max_train_examples: Optional[int] = typer.Option(None, help="Train on a seeded subset of this size."),
    task: Optional[str] = TASK,
    text_column: Optional[str] = TEXT_COLUMN,
    label_column: Optional[str] = LABEL_COLUMN,
    trust_remote_code: bool = TRUST_REMOTE_CODE,
    verbose: bool = VERBOSE,
) -> None:
    """Recover a pruned model's accuracy by distillation from its unpruned parent (the finetune loop)."""
    _setup(verbose, trust_remote_code)
    from . import models
    from .data import DataSpec
    from .stages import distill as stage

    spec = _typed(DataSpec, "distill", source=data, text_column=text_column, label_column=label_column,
                  max_train_examples=max_train_examples, seed=seed)
    config = _typed(stage.Config, "distill", data=spec, teacher=teacher, temperature=temperature, alpha=alpha,
                    hidden_weight=hidden_weight, epochs=epochs, max_steps=max_steps, batch_size=batch_size,
                    learning_rate=learning_rate, max_length=max_length, eval_every=eval_every, patience=patience,
                    seed=seed, task=task)
    parent = models.resolve(model)
    stage.teacher_path(parent, config)  # no teacher: fail before the data loads
    artifact, reused = _build_one(parent, stage, config, out)
    meta = artifact.meta["metadata"]
    metric = meta.get("metric", "accuracy")
    Console().print(f"{'reused' if reused else 'recovered'} ({artifact.task}): {artifact.path} "
                    f"(best validation {metric} {meta[f'validation_{metric}']:.4f} at step {meta['best_step']})")


def _build_one(parent, stage, config, out: Path):
    """One stage on one model into `out`, under a lock, reusing a finished identical output."""
    from .artifact import build
    from .fsio import FolderLock, refuse_link
    from .stages import finetune

    refuse_link(out)  # before any work, not after an hour of training
    inputs = {}
    if getattr(config, "data", None) is not None:
        chosen = finetune.task_of(parent, config)
        chosen.load_data(config.data)  # a bad data set fails here, before a model loads
        inputs = {"data_sha256": chosen.fingerprint(config.data)}
    with FolderLock(out.parent, f".{out.name}.lock"):
        return build(out, parent, stage.NAME, config, run=lambda work: stage.run(parent, config, work),
                     inputs=inputs, libraries=stage.LIBRARIES)


@app.command()
@_guarded
def bench(
    paths: List[Path] = typer.Argument(..., help="Variant folders, model folders or .onnx files (tokenizer beside them)."),
    data: str = typer.Option("tweets", "--data", "-d", help="Labelled data (classifiers) or a corpus (language models) whose test split is replayed."),
    task: Optional[str] = TASK,
    profile: List[str] = typer.Option(["edge-1t", "laptop-2t"], "--profile", "-p", help="Built-in name or YAML file; repeatable."),
    out: Path = typer.Option(Path("runs/bench"), "--out", "-o"),
    reference: Optional[str] = typer.Option(None, help="Name of the candidate to compare with (default: the first)."),
    iterations: int = typer.Option(200, help="Timed inferences per candidate, profile and length."),
    max_eval_examples: Optional[int] = typer.Option(None),
    runner: Optional[str] = typer.Option(None, help="Run every path with this runner: onnx, pytorch or module:Class."),
    text_column: Optional[str] = TEXT_COLUMN,
    label_column: Optional[str] = LABEL_COLUMN,
    max_accuracy_drop: Optional[float] = MAX_DROP,
    max_latency_ms: Optional[float] = MAX_LATENCY,
    max_size_mb: Optional[float] = MAX_SIZE,
    fail_if: Optional[str] = FAIL_IF,
    trust_remote_code: bool = TRUST_REMOTE_CODE,
    verbose: bool = VERBOSE,
) -> None:
    """Measure any models side by side under target profiles; writes results.json and report.md."""
    _setup(verbose, trust_remote_code)

    from . import data as data_module
    from . import tasks
    from .bench import profiles as profile_module
    from .bench.harness import BenchSettings, Candidate, measure, preflight
    from .bench.runners import detect_format
    from .bench.selection import check_gates
    from .fsio import FolderLock
    from .pipeline import model_labels, publish

    selection = _selection(None, max_accuracy_drop, max_latency_ms, max_size_mb, fail_if)
    profiles = [profile_module.load(p) for p in profile]
    settings = _typed(BenchSettings, "bench", profiles=profiles, iterations=iterations, reference=reference,
                      max_eval_examples=max_eval_examples)
    if selection.fail_if:
        check_gates(selection.fail_if, profiles)
    candidates = []
    for p in paths:
        if not p.exists():
            raise EdgeNLPError(f"{p} does not exist: pass a model folder, a variant folder or an .onnx file")
        name = p.stem if p.is_file() else p.name
        candidates.append(Candidate(name=name, path=p.resolve(), runner=runner or detect_format(p)))
    from .model_facts import read_config
    from .trust import check_model_folder

    for c in candidates:  # a folder that would run its own code is refused before any worker starts
        folder = c.path if c.path.is_dir() else c.path.parent
        if (folder / "config.json").exists():
            check_model_folder(folder, read_config(folder / "config.json"), f"the model {folder}")
    first = candidates[0].path if candidates[0].path.is_dir() else candidates[0].path.parent
    config = read_config(first / "config.json") if (first / "config.json").exists() else {}
    chosen = tasks.resolve(tasks.of_config(config), task, str(first))
    preflight(candidates, settings, chosen.NAME)  # before the data loads: a bad profile or length costs nothing
    spec = _typed(data_module.DataSpec, "bench", source=data, text_column=text_column, label_column=label_column)
    dataset = chosen.load_data(spec)
    with FolderLock(out):
        results = measure(candidates, chosen.eval_set(dataset, model_labels([c.path for c in candidates])), settings, out)
        results["run"] = {"recipe": "benchmark", "model": ", ".join(c.name for c in candidates), "task": chosen.NAME,
                          "data": dataset.describe()}
        _conclude(publish(results, out, selection), out)


@app.command()
@_guarded
def generate(
    model: Path = typer.Argument(..., help="A text-generation variant folder (ONNX with KV cache) or a PyTorch checkpoint."),
    prompt: str = typer.Argument(..., help="Text to continue."),
    max_new_tokens: int = typer.Option(64, "--max-new-tokens", "-n", help="Most tokens to add."),
    temperature: float = typer.Option(0.0, help="0 is greedy; above 0 samples."),
    top_k: int = typer.Option(0, help="Sample among the k likeliest tokens (0: off)."),
    top_p: float = typer.Option(1.0, help="Sample among the likeliest tokens holding this much probability (1: off)."),
    repetition_penalty: float = typer.Option(1.0, help="Above 1 discourages repeating earlier tokens."),
    seed: Optional[int] = typer.Option(None, help="Seed for sampling (same seed, same text)."),
    stop: List[str] = typer.Option([], "--stop", help="Stop before this text; repeatable."),
    no_cache: bool = typer.Option(False, "--no-cache", help="Recompute the whole sequence each step (slow; for checks)."),
    threads: int = typer.Option(1, min=1),
) -> None:
    """Continue a prompt with a text-generation model, streaming the tokens as they come."""

    from .bench.runners import detect_format, open_causal_runner
    from .runtime.generation import Sampling
    from .tasks import of_config

    if not model.exists():
        raise EdgeNLPError(f"{model} does not exist: pass a text-generation variant folder or checkpoint")
    folder = model if model.is_dir() else model.parent
    from .model_facts import read_config

    config = read_config(folder / "config.json") if (folder / "config.json").exists() else {}
    task = of_config(config)
    if task != "text-generation":
        raise EdgeNLPError(f"{model} is a {task or 'bare encoder'} model, not a text generator: pass a GPT-2-family "
                           "variant (e.g. runs/<run>/variants/onnx-int8)")
    sampling = Sampling(temperature=temperature, top_k=top_k, top_p=top_p, repetition_penalty=repetition_penalty,
                        seed=seed)
    generator = open_causal_runner(model, detect_format(model), threads)
    out = Console(highlight=False, soft_wrap=True)
    for piece in generator.stream(prompt, max_new_tokens, sampling, stop=stop, use_cache=not no_cache):
        out.print(escape(piece), end="")
    out.print()


@app.command()
@_guarded
def bundle(
    source: Path = typer.Argument(..., help="An ONNX variant folder, or a run folder (its selected variant)."),
    out: Path = typer.Option(..., "--out", "-o", help="Bundle folder to write (an earlier bundle there is replaced)."),
    target: List[str] = typer.Option([], "--target", "-t", help="Also add: ort (ORT mobile format + required "
                                     "operators), strings (one graph with the tokenizer inside). Repeatable."),
    zip_archive: bool = typer.Option(False, "--zip", help="Also write OUT.zip."),
    data: Optional[str] = typer.Option(None, "--data", "-d", help="Data whose test split checks the strings target "
                                       "(default: the run's)."),
    text_column: Optional[str] = TEXT_COLUMN,
    label_column: Optional[str] = LABEL_COLUMN,
    max_label_differences: int = typer.Option(0, "--max-label-differences", min=0, help="Test texts on which the "
                                              "strings target may disagree with the two-part pipeline."),
) -> None:
    """Package a variant as a verified folder that transformers.js, Optimum and edgenlp.runtime load as it is."""
    import json

    from .bundle import TargetSettings, build
    from .data import DataSpec

    spec = _typed(DataSpec, "bundle", source=data, text_column=text_column, label_column=label_column) if data else None
    folder = build(source, out, targets=target, zip_archive=zip_archive,
                   settings=TargetSettings(data=spec, max_label_differences=max_label_differences))
    manifest = json.loads((folder / "manifest.json").read_text())
    size = sum(f["bytes"] for f in manifest["files"].values())
    console = Console()
    console.print(f"bundle: {folder} ({manifest['task']}, {manifest['model']['file']}, {size / 1e6:.1f} MB, "
                  f"{len(manifest['files'])} files hashed)", highlight=False)
    for name, added in manifest["targets"].items():
        console.print(f"  {name}: {added['file']}", highlight=False)
    if zip_archive:
        console.print(f"zip:    {folder.with_name(folder.name + '.zip')}", highlight=False)


@app.command("run")
@_guarded
def run_bundle(
    bundle_path: Path = typer.Argument(..., metavar="BUNDLE", help="A bundle folder or its .zip."),
    texts: List[str] = typer.Argument(None, help="Texts to classify (or prompts); default: one per line on stdin."),
    no_verify: bool = typer.Option(False, "--no-verify", help="Skip the sha256 check (trusted storage only)."),
    no_truncate: bool = typer.Option(False, "--no-truncate", help="Refuse texts longer than the model's maximum."),
    batch_size: int = typer.Option(32, "--batch-size", min=1),
    max_new_tokens: Optional[int] = typer.Option(None, "--max-new-tokens", help="Text-generation bundles."),
    threads: int = typer.Option(1, min=1),
) -> None:
    """Answer with a bundle, torch-free: one JSON line per text (label and probabilities, or the continuation)."""
    from .runtime.__main__ import read_texts, run

    run(str(bundle_path), read_texts(list(texts or []), sys.stdin), sys.stdout, sys.stderr, verify=not no_verify,
        threads=threads, batch_size=batch_size, truncate=not no_truncate, max_new_tokens=max_new_tokens)


@app.command()
@_guarded
def serve(
    bundle_path: Path = typer.Argument(..., metavar="BUNDLE", help="A bundle folder or its .zip."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on (0.0.0.0 for every interface)."),
    port: int = typer.Option(8000, "--port", min=1, max=65535),
    threads: int = typer.Option(1, "--threads", min=1, help="onnxruntime threads of the model."),
    no_batching: bool = typer.Option(False, "--no-batching", help="Answer requests one by one (dynamic batching off)."),
    max_batch_tokens: int = typer.Option(16384, "--max-batch-tokens", min=1, help="Padded positions per model run."),
    max_batch_texts: int = typer.Option(16, "--max-batch-texts", min=1, help="Texts per model run."),
    max_wait_ms: float = typer.Option(2.0, "--max-wait-ms", min=0, help="How long a busy server waits to fill a batch."),
    max_queue: int = typer.Option(256, "--max-queue", min=1, help="Requests that may wait; more get 503."),
    max_client_batch_size: int = typer.Option(32, "--max-client-batch-size", min=1, help="Texts per request."),
    no_verify: bool = typer.Option(False, "--no-verify", help="Skip the sha256 check (trusted storage only)."),
) -> None:
    """Serve a bundle over HTTP: /predict or /generate, /health, /info, /metrics, and a web page at /."""
    from .serve import BatchSettings, ServeSettings, default_web_assets
    from .serve import serve as run

    settings = ServeSettings(batching=BatchSettings(enabled=not no_batching, max_batch_tokens=max_batch_tokens,
                                                    max_batch_texts=max_batch_texts, max_wait_ms=max_wait_ms,
                                                    max_queue=max_queue),
                             max_client_batch_size=max_client_batch_size, web_assets=default_web_assets())
    run(bundle_path, host=host, port=port, settings=settings, threads=threads, verify=not no_verify)


def _previous_selection(results: dict):
    """The selection limits and gate a run was last reported with."""
    from .recipe import SelectionSettings

    previous = results.get("selection") or {}
    return _typed(SelectionSettings, "report", **(previous.get("constraints") or {}),
                  fail_if=(results.get("gates") or {}).get("expression"))


def _read_results(run_dir: Path) -> dict:
    import json

    from .bench.results import check

    results_path = run_dir / "results.json"
    if not results_path.is_file():
        raise EdgeNLPError(f"{results_path} not found: pass a run folder written by `edgenlp optimize` or `edgenlp bench`")
    try:
        results = json.loads(results_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise EdgeNLPError(f"{results_path} is not valid JSON ({exc}): rerun the benchmark") from exc
    return check(results, str(results_path))


@app.command()
@_guarded
def report(
    run_dir: Path = typer.Argument(..., help="A run folder holding results.json."),
    max_accuracy_drop: Optional[float] = MAX_DROP,
    max_latency_ms: Optional[float] = MAX_LATENCY,
    max_size_mb: Optional[float] = MAX_SIZE,
    fail_if: Optional[str] = FAIL_IF,
) -> None:
    """Render results.json of a run into report.md and report.html (re-selecting and gating if asked)."""
    from .fsio import FolderLock
    from .pipeline import publish

    results = _read_results(run_dir)
    settings = _selection(_previous_selection(results), max_accuracy_drop, max_latency_ms, max_size_mb, fail_if)
    if settings.fail_if:
        from .bench.profiles import Profile
        from .bench.selection import check_gates

        check_gates(settings.fail_if, [Profile(**p) for p in results["profiles"]])
    with FolderLock(run_dir):
        _conclude(publish(results, run_dir, settings), run_dir)


@app.command()
@_guarded
def explain(
    target: str = typer.Argument(..., help="A checkpoint or variant folder (PyTorch or unfused ONNX), or a run folder."),
    text: str = typer.Argument(..., help="The text whose attention to show."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Folder for the PNG files, explain.json and explain.html (default: explain/<name>, or RUN/explain)."),
    reference: Optional[str] = typer.Option(None, help="The model to compare with (default: the nearest fine-tuned PyTorch ancestor; in a run, its reference)."),
    max_length: int = typer.Option(128, help="Longest input in tokens."),
    trust_remote_code: bool = TRUST_REMOTE_CODE,
    verbose: bool = VERBOSE,
) -> None:
    """Attention heatmaps per layer and head, and attention rollout, with the rank correlation against the reference.

    Given a run folder, every variant is explained against the run's reference and the run's
    report gains an attention section.
    """
    _setup(verbose, trust_remote_code)
    from . import explain as explaining

    path = Path(target)
    if (path / "results.json").is_file() and (path / "variants").is_dir():
        results = _read_results(path)
        from .bench.results import variant_folder

        chosen = {v["name"]: variant_folder(path, v["path"]) for v in results["variants"]}
        ref = reference or results["reference"]
        if ref not in chosen:
            raise EdgeNLPError(f"--reference {ref} is not a variant of {path}: use one of {', '.join(chosen)}")
        from .fsio import FolderLock
        from .pipeline import publish

        with FolderLock(path):
            summary = explaining.explain({ref: chosen.pop(ref), **chosen}, text, out or path / "explain", ref, max_length)
            results["attention"] = summary
            publish(results, path, _previous_selection(results))
    else:
        ref_path = Path(reference) if reference else explaining.reference_of(path)
        name = path.name or target
        models_to_read = {name: path}
        ref_name = None
        if ref_path is not None:
            ref_name = ref_path.name if ref_path.name != name else f"{ref_path.name} (reference)"
            models_to_read = {ref_name: ref_path, name: path}
        summary = explaining.explain(models_to_read, text, out or Path("explain") / name, ref_name, max_length,
                                     required=(name,))
    console = Console()
    for model, entry in summary["models"].items():
        rho = entry["rollout_spearman"]
        console.print(f"{model}: {entry['source']}, heads {entry['heads']}, most attended {' '.join(entry['top_tokens'])}"
                      + ("" if rho is None else f", rollout Spearman vs {summary['reference']} {rho:.3f}"))
    for model, why in summary["skipped"].items():
        console.print(f"{model}: skipped ({why})")
    console.print(f"figures: {summary['folder']}/explain.html")


@app.command()
@_guarded
def compare(
    run_dir: Path = typer.Argument(..., help="A run folder holding results.json."),
    a: str = typer.Argument(..., help="First variant."),
    b: str = typer.Argument(..., help="Second variant."),
    across_node_kinds: bool = typer.Option(False, "--across-node-kinds", help="Compare latencies even when the two were timed on different kinds of node."),
) -> None:
    """Paired tests between two variants of one run: McNemar for accuracy, round-paired for latency."""
    from .bench.stats import compare_variants

    results = _read_results(run_dir)
    from .bench.results import WITH_ROUNDS

    if results.get("schema") not in WITH_ROUNDS:
        raise EdgeNLPError(f"{run_dir / 'results.json'} is {results.get('schema')}, which keeps no per-round timings "
                           "or predictions: measure again to compare")
    names = [v["name"] for v in results["variants"]]
    for name in (a, b):
        if name not in names:
            raise EdgeNLPError(f"variant '{name}' is not in {run_dir / 'results.json'} (variants: {', '.join(names)})")
    from .bench.stats import CrossNodeComparison

    try:
        verdict = compare_variants(results, a, b, across_node_kinds)
    except CrossNodeComparison as exc:
        raise EdgeNLPError(str(exc)) from None
    console = Console()
    acc = verdict["accuracy"]
    if acc:
        console.print(f"accuracy: {a} {100 * acc['a']:.2f}% vs {b} {100 * acc['b']:.2f}%; only {a} right on "
                      f"{acc['a_only_correct']}, only {b} right on {acc['b_only_correct']}; McNemar p = {acc['p_value']:.3g} "
                      f"({'a real difference' if acc['significant'] else 'no significant difference'})", highlight=False)
    for key, t in verdict["latency"].items():
        ratio = t["speedup_b_over_a"]
        console.print(f"{key}: {b} is {ratio['ratio']:.2f}x as fast as {a} [95% CI {ratio['ci'][0]:.2f}-{ratio['ci'][1]:.2f}]; "
                      f"{a} slower in {t['rounds_a_slower']} of {t['rounds']} rounds; Wilcoxon p = {t['p_value']:.3g} "
                      f"({'a real difference' if t['significant'] else 'no significant difference'})", highlight=False)


@app.command()
@_guarded
def preflight(
    isa: Optional[str] = typer.Option(None, "--isa", help="Instruction set to tune for (default: this CPU's): avx512_vnni, avx_vnni, avx512, avx2, arm64, generic."),
    reduce_range: bool = typer.Option(False, "--reduce-range", help="Ask about 7-bit weights."),
    activation: Optional[str] = typer.Option(None, "--activation", help="Ask about uint8 or int8 activations."),
    per_channel: bool = typer.Option(False, "--per-channel", help="Ask about per-channel weights."),
) -> None:
    """Which INT8 settings suit this CPU (VNNI, AVX-512, ARM dot product), and warnings for the ones asked about."""
    from .quantization import preflight as advice
    from .stages.quantize import ISAS

    if isa is not None and isa not in ISAS:
        raise EdgeNLPError(f"unknown --isa '{isa}': use one of {', '.join(ISAS)}")
    if activation is not None and activation not in ("uint8", "int8"):
        raise EdgeNLPError(f"unknown --activation '{activation}': use uint8 or int8")
    found = advice.advise(isa, reduce_range=reduce_range, activation=activation, per_channel=per_channel)
    console = Console()
    console.print(f"CPU: {found['cpu']}; INT8 instruction set: {found['isa']} (VNNI {'yes' if found['vnni'] else 'no'}, "
                  f"AVX-512 {'yes' if found['avx512'] else 'no'}, ARM dot product "
                  f"{'yes' if found['arm_dot_product'] else 'no'})", highlight=False)
    for line in found["suits"]:
        console.print(f"  suits: {line}", highlight=False)
    for line in found["warnings"]:
        err_console.print(f"[yellow]warning:[/yellow] {escape(line)}", highlight=False, soft_wrap=True)


def main() -> None:
    app()


if __name__ == "__main__":
    main()


if __name__ == "__main__":
    sys.exit(main())
