"""One stage on one model: `finetune`, `prune`, `distill`, with options generated from the stage configs."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from ..data import DataSpec
from ..search.settings import TuningSettings
from ..stages import distill as distill_stage
from ..stages import finetune as finetune_stage
from ..stages import prune as prune_stage
from .app import app, guarded, setup, typed
from .options import TRUST_REMOTE_CODE, VERBOSE, Settings, from_settings

DATA_FIELDS = ("source", "text_column", "label_column", "pair_column", "max_train_examples")
DATA_FLAGS = {"source": ("--data", "-d")}


@app.command()
@guarded
@from_settings(
    Settings(finetune_stage.Config, "config", skip=("data", "search")),
    Settings(DataSpec, "data", only=DATA_FIELDS, flags=DATA_FLAGS),
    Settings(
        TuningSettings,
        "search_settings",
        only=("trials", "timeout_minutes"),
        flags={"timeout_minutes": ("--search-minutes",)},
        help={
            "trials": "With --search: trials in all (an interrupted search resumes and counts what it finished).",
            "timeout_minutes": "With --search: start no new trial after this many minutes.",
        },
    ),
)
def finetune(
    model: str = typer.Argument(..., help="Checkpoint folder, hub id, or packaged name (minilm)."),
    out: Path = typer.Option(Path("runs/finetuned"), "--out", "-o", help="Folder for the fine-tuned checkpoint."),
    search: bool = typer.Option(
        False,
        "--search",
        help="Search learning rate, batch size, warm-up and weight decay with Optuna; trial 0 uses the settings above.",
    ),
    trust_remote_code: bool = TRUST_REMOTE_CODE,
    verbose: bool = VERBOSE,
    *,
    config: dict,
    data: dict,
    search_settings: dict,
) -> None:
    """Fine-tune a classifier, or continue training a language model on a corpus; writes a checkpoint and a log.

    With --search, an Optuna study (median pruning of bad trials, stored beside --out so a rerun
    resumes) picks the settings; a recipe's `search:` block sets the space and fixed trial settings.
    """
    setup(verbose, trust_remote_code)
    from .. import models

    spec = typed(DataSpec, "finetune", flags=DATA_FLAGS, **data, seed=config["seed"])
    config = typed(finetune_stage.Config, "finetune", **config, data=spec, search=search_settings if search else None)
    artifact, reused = build_one(models.resolve(model), finetune_stage, config, out)
    meta = artifact.meta["metadata"]
    metric = meta.get("metric", "accuracy")
    Console().print(
        f"{'reused' if reused else 'fine-tuned'} ({artifact.task}): {artifact.path} "
        f"(best validation {metric} {meta[f'validation_{metric}']:.4f} at step {meta['best_step']})"
    )
    found = meta.get("search")
    if found:
        verdict = {True: "beat", False: "did not beat", None: "could not be compared with"}[found["beat_defaults"]]
        Console().print(
            f"search: {found['complete']} of {found['trials']} trials complete, {found['pruned']} pruned; "
            f"best trial {found['best_trial']} {found['best_params']}; it {verdict} the given settings "
            f"({found['defaults_value']}); study {found['study']}"
        )


@app.command()
@guarded
@from_settings(
    Settings(prune_stage.Config, "config", skip=("data",), flags={"ratio": ("--ratio", "-r")}),
    Settings(
        DataSpec,
        "data",
        only=("source", "text_column", "label_column"),
        flags=DATA_FLAGS,
        defaults={"source": None},
        help={"source": "Calibration data for Taylor importance: a kit set, a file, hub:NAME."},
    ),
)
def prune(
    model: str = typer.Argument(..., help="A fine-tuned BERT-family or GPT-2 checkpoint folder (or hub id)."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for the pruned checkpoint."),
    trust_remote_code: bool = TRUST_REMOTE_CODE,
    verbose: bool = VERBOSE,
    *,
    config: dict,
    data: dict,
) -> None:
    """Remove whole layers, attention heads and feed-forward channels; writes a checkpoint that from_pretrained reloads."""
    setup(verbose, trust_remote_code)
    from .. import models

    spec = typed(DataSpec, "prune", flags=DATA_FLAGS, **data) if data["source"] else None
    config = typed(prune_stage.Config, "prune", **config, data=spec)
    artifact, reused = build_one(models.resolve(model), prune_stage, config, out)
    meta = artifact.meta["metadata"]
    params = meta["parameters"]
    Console().print(
        f"{'reused' if reused else 'pruned'}: {artifact.path} ("
        + (f"layers kept {meta['kept_layers']}; " if "kept_layers" in meta else "")
        + f"heads per layer {meta['layer_heads']}; "
        f"non-embedding parameters {params['before']['non_embedding_parameters']:,} -> "
        f"{params['after']['non_embedding_parameters']:,}, MACs x{meta['macs']['kept']:.2f})"
    )


@app.command()
@guarded
@from_settings(
    Settings(distill_stage.Config, "config", skip=("data", "search")),
    Settings(DataSpec, "data", only=DATA_FIELDS, flags=DATA_FLAGS),
)
def distill(
    model: str = typer.Argument(..., help="The student: usually a checkpoint written by `edgenlp prune`."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for the recovered checkpoint."),
    trust_remote_code: bool = TRUST_REMOTE_CODE,
    verbose: bool = VERBOSE,
    *,
    config: dict,
    data: dict,
) -> None:
    """Recover a pruned model's accuracy by distillation from its unpruned parent (the finetune loop)."""
    setup(verbose, trust_remote_code)
    from .. import models

    spec = typed(DataSpec, "distill", flags=DATA_FLAGS, **data, seed=config["seed"])
    config = typed(distill_stage.Config, "distill", **config, data=spec)
    parent = models.resolve(model)
    distill_stage.teacher_path(parent, config)  # no teacher: fail before the data loads
    artifact, reused = build_one(parent, distill_stage, config, out)
    meta = artifact.meta["metadata"]
    metric = meta.get("metric", "accuracy")
    Console().print(
        f"{'reused' if reused else 'recovered'} ({artifact.task}): {artifact.path} "
        f"(best validation {metric} {meta[f'validation_{metric}']:.4f} at step {meta['best_step']})"
    )


def build_one(parent, stage, config, out: Path):
    """One stage on one model into `out`, under a lock, reusing a finished identical output."""
    from ..artifact import build
    from ..fsio import FolderLock, refuse_link
    from ..stages import finetune

    refuse_link(out)  # before any work, not after an hour of training
    inputs = {}
    if getattr(config, "data", None) is not None:
        chosen = finetune.task_of(parent, config)
        chosen.load_data(config.data)  # a bad data set fails here, before a model loads
        inputs = {"data_sha256": chosen.fingerprint(config.data)}
    with FolderLock(out.parent, f".{out.name}.lock"):
        return build(
            out,
            parent,
            stage.NAME,
            config,
            run=lambda work: stage.run(parent, config, work),
            inputs=inputs,
            libraries=stage.LIBRARIES,
        )
