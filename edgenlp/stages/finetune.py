"""Base or fine-tuned checkpoint + the task's data -> a (further) trained checkpoint.

One plain PyTorch loop for every task (AdamW, linear warm-up and decay, gradient clipping),
evaluated on the validation split every `eval_every` steps; the best checkpoint by `metric` is
kept and training stops early after `patience` evaluations without improvement. The task supplies
its half (`tasks.<task>.Trainer`): the model and its batches, the evaluation, what to save.
A classifier is trained on labelled texts; a language model continues on a corpus.
Writes a `save_pretrained` checkpoint with its tokenizer and `training_log.json`.
"""

from __future__ import annotations

import json
import math
import random
import time
from functools import partial
from pathlib import Path
from typing import ClassVar, Literal

from pydantic import Field, model_validator

from .. import data as data_module
from .. import progress, tasks
from ..artifact import Artifact, StageOutput
from ..errors import ArtifactError, RecipeError
from ..search.settings import TuningSettings, check_against
from . import StageConfig

NAME = "finetune"
LIBRARIES = ("torch", "transformers", "tokenizers", "numpy")
LOG_FILE = "training_log.json"
CHECKED_AGAINST_PARENT = False  # training is meant to change the outputs


class Config(StageConfig):
    data: data_module.DataSpec = data_module.DataSpec()
    task: str | None = None
    """What to train for; None: the model's own task (a bare encoder becomes a classifier)."""
    max_length: int = Field(128, ge=8, le=4096)
    """Longest input (classification) or the training window (language modelling)."""
    epochs: float = Field(2.0, gt=0)
    max_steps: int | None = Field(None, ge=1)
    batch_size: int = Field(32, ge=1)
    learning_rate: float = Field(5e-5, gt=0)
    weight_decay: float = Field(0.01, ge=0)
    warmup_ratio: float = Field(0.06, ge=0, lt=1)
    eval_every: int = Field(200, ge=1)
    patience: int = Field(3, ge=1)
    """Evaluations without improvement before training stops."""
    metric: str | None = None
    """What picks the best checkpoint; None: the task's own (accuracy, perplexity)."""
    max_eval_examples: int | None = Field(2000, ge=1)
    """Validation examples (texts, or windows of a corpus) used during training."""
    seed: int = 42
    threads: int | None = Field(None, ge=1)
    search: TuningSettings | None = None
    """Search these settings with Optuna instead of training once (see `edgenlp/search/tuning.py`)."""
    train: Literal["always", "if-needed"] = Field("always", exclude=True)
    """`if-needed`: a trained language model (a checkpoint, not weights initialised from a config) is
    used as given, its corpus serving evaluation and calibration; `always`: train it on the corpus.
    A classifier already trained on the data's labels is used as given either way. Not part of the
    artifact id: it decides whether to build, not what is built."""

    DEFAULT_SEARCH_SPACE: ClassVar[dict] = {
        "learning_rate": {"low": 1e-5, "high": 3e-4, "log": True},
        "batch_size": {"choices": [16, 32]},
        "warmup_ratio": {"low": 0.0, "high": 0.2},
        "weight_decay": {"low": 0.0, "high": 0.1},
    }

    @model_validator(mode="after")
    def _searchable(self) -> Config:
        if self.search is not None:
            check_against(self, self.DEFAULT_SEARCH_SPACE)
        return self


def task_of(parent: Artifact, config: Config):
    return tasks.resolve(tasks.of_config(parent.config()), config.task, str(parent.path))


def satisfied_by(parent: Artifact, dataset, config: Config | None = None) -> str | None:
    """Why the parent is used as given, or None: a classifier already trained for these labels (in any
    order), or, with `train: if-needed`, a trained checkpoint already made for the task (a language
    model, an embedding model)."""
    labels = getattr(dataset, "labels", None)
    trained_for = getattr(dataset, "task", "text-classification")  # labelled texts, or a task's own data
    if bool(labels) and parent.task == trained_for and sorted(parent.labels()) == sorted(labels):
        return "a model already trained on the data's labels"
    trained = (parent.meta.get("source") or {}).get("kind") != "scratch" and parent.meta.get("stage") == "source"
    if config is None or config.train != "if-needed" or not trained:
        return None
    task = task_of(parent, config)
    return task.USED_AS_TRAINED if parent.task == task.NAME else None


def run(parent: Artifact, config: Config, workdir: Path) -> StageOutput:
    return train_or_search(parent, config, workdir, partial(_train_from, parent.meta), reads=(parent.path,))


def fans_out(config: Config) -> bool:
    """A search spreads its trials over the executor."""
    return config.search is not None


def _train_from(parent_meta: dict, parent_path: Path, config: Config, workdir: Path, on_eval) -> StageOutput:
    return train(Artifact(parent_path, parent_meta), config, workdir, on_eval=on_eval)


def train_or_search(parent: Artifact, config: Config, workdir: Path, train_one, reads: tuple[Path, ...]) -> StageOutput:
    """Train once, or, with `config.search`, run the Optuna study whose best trial becomes the output.

    `train_one(*reads, config, folder, on_eval)`: `reads` are the folders it reads, so that a trial
    can run on another machine with its own copies.
    """
    if config.search is None:
        return train_one(*reads, config, workdir, None)
    trainer = task_of(parent, config).Trainer
    metric = config.metric or trainer.METRIC
    if metric not in trainer.METRICS:
        raise RecipeError(f"metric '{metric}' is not one of {', '.join(trainer.METRICS)}")
    from ..search import tuning

    return tuning.search(config, workdir, parent.id, trainer.METRICS[metric], metric, train_one, reads)


def train(
    parent: Artifact,
    config: Config,
    workdir: Path,
    objective=None,
    stage: str = NAME,
    evaluate_first: bool = False,
    on_eval=None,
) -> StageOutput:
    """The training loop; `objective(model, batch) -> loss` replaces the task's own loss (distillation).

    `objective` may have `start(model)`, called once the model is built, to prepare what it needs.
    `evaluate_first` logs the parent's own score at step 0 (what recovery starts from), and keeps
    the parent if training never beats it. `on_eval(step, result)` sees every evaluation (the
    search's pruner); it may raise to stop training.
    """
    if parent.format != "pytorch":
        raise ArtifactError(f"{stage} needs a PyTorch checkpoint, but {parent.path} is {parent.format}")
    import numpy as np
    import torch
    import transformers
    from transformers import get_linear_schedule_with_warmup

    task = task_of(parent, config)
    transformers.logging.set_verbosity_error()
    started = time.time()
    random.seed(config.seed)
    np.random.seed(config.seed)
    torch.manual_seed(config.seed)
    if config.threads:
        torch.set_num_threads(config.threads)
    trainer = task.Trainer(parent.path, task.load_data(config.data), config)
    metric = config.metric or trainer.METRIC
    if metric not in trainer.METRICS:
        raise RecipeError(f"{stage} metric '{metric}' is not one of {', '.join(trainer.METRICS)} for {task.NAME}")
    better = (lambda a, b: a > b) if trainer.METRICS[metric] else (lambda a, b: a < b)
    model = trainer.model
    if objective is not None and hasattr(objective, "start"):
        objective.start(model)
    loss_of = objective or trainer.loss

    steps_per_epoch = max(1, math.ceil(trainer.train_size / config.batch_size))
    total_steps = config.max_steps or max(1, int(steps_per_epoch * config.epochs))
    no_decay = ("bias", "LayerNorm.weight", "LayerNorm.bias", "ln_1.weight", "ln_2.weight", "ln_f.weight")
    groups = [
        {
            "params": [p for n, p in model.named_parameters() if not any(k in n for k in no_decay)],
            "weight_decay": config.weight_decay,
        },
        {"params": [p for n, p in model.named_parameters() if any(k in n for k in no_decay)], "weight_decay": 0.0},
    ]
    optimizer = torch.optim.AdamW(groups, lr=config.learning_rate)
    scheduler = get_linear_schedule_with_warmup(optimizer, int(config.warmup_ratio * total_steps), total_steps)

    log: dict = {"steps": [], "evals": [], "metric": metric, "task": task.NAME, **trainer.describe()}
    best_score, best_state, best_step, stale, step = None, None, 0, 0, 0
    generator = random.Random(config.seed)
    model.train()

    def run_eval() -> bool:
        nonlocal best_score, best_state, best_step, stale
        model.eval()
        with torch.inference_mode():
            result = {"step": step, **trainer.evaluate()}
        model.train()
        log["evals"].append(result)
        if best_score is None or better(result[metric], best_score):
            best_score, best_step, stale = result[metric], step, 0
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            stale += 1
        if on_eval is not None:
            on_eval(step, result)
        return stale >= config.patience

    stop = False
    if evaluate_first:
        run_eval()
    with progress.task(f"training ({task.NAME})", total_steps) as advance:
        while step < total_steps and not stop:
            for batch in trainer.batches(generator, config.batch_size):
                loss = loss_of(model, batch)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                step += 1
                loss_value = float(loss.detach())
                log["steps"].append(
                    {
                        "step": step,
                        "epoch": round(step / steps_per_epoch, 4),
                        "loss": round(loss_value, 5),
                        "lr": scheduler.get_last_lr()[0],
                        **getattr(objective, "parts", {}),
                    }
                )
                shown = "-" if best_score is None else f"{best_score:.3f}"
                advance(1, description=f"training (loss {loss_value:.3f}, best {metric} {shown})")
                if step % config.eval_every == 0 and (stop := run_eval()):
                    break
                if step >= total_steps:
                    break
    if not log["evals"] or log["evals"][-1]["step"] != step:
        run_eval()
    model.load_state_dict(best_state)
    log.update(
        best_step=best_step,
        best_score=best_score,
        stopped_early=stop,
        total_steps=step,
        seconds=round(time.time() - started, 1),
    )

    trainer.save(workdir)
    (workdir / LOG_FILE).write_text(json.dumps(log, indent=1))
    return StageOutput(
        format="pytorch",
        task=task.NAME,
        precision="fp32",
        metadata={
            "data": trainer.data_description,
            "best_step": best_step,
            f"validation_{metric}": best_score,
            "metric": metric,
            "stopped_early": stop,
            "steps": step,
            "training_log": LOG_FILE,
        },
    )
