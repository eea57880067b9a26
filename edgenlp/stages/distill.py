"""Recover what pruning cost: train a (pruned) checkpoint to match its unpruned teacher.

The loss is `alpha` x the task's soft loss against the teacher (for classifiers and language models the
soft-label KL divergence at `temperature`, scaled by T^2, Hinton et al.; for embeddings the cosine
distance to the teacher's embeddings) + (1 - alpha) x the task's own loss (labels, the next token, pair scores),
+ optionally `hidden_weight` x the mean squared difference of the hidden states of mapped layers
(the same hidden size in both: pruning keeps it). A student with layers dropped (`prune`'s `layers`)
matches each layer to the teacher layer it was kept from, and its last to the teacher's last (its
output should be the teacher's output); otherwise layer i matches layer i.
Every other part is the fine-tuning loop (`finetune.train`): warm-up and decay, evaluation on the
validation split, early stopping, best checkpoint, loss log. The teacher is, by default, the model
the parent was pruned from, read from the parent's lineage.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import ClassVar

from pydantic import Field

from .. import architectures, executors, models
from ..artifact import META_FILE, Artifact, StageOutput
from ..errors import ArtifactError, RecipeError
from ..trust import pretrained_options
from . import finetune

NAME = "distill"
LIBRARIES = finetune.LIBRARIES
CHECKED_AGAINST_PARENT = False  # training is meant to change the outputs


class Config(finetune.Config):
    teacher: str | None = None
    """The model to imitate (a path or model name); None: the model the parent was pruned from."""
    temperature: float = Field(2.0, gt=0)
    alpha: float = Field(0.5, ge=0, le=1)
    """Weight of the teacher's soft labels; the task loss gets 1 - alpha."""
    hidden_weight: float = Field(0.0, ge=0)
    """Weight of hidden-state matching (0: off)."""

    DEFAULT_SEARCH_SPACE: ClassVar[dict] = {
        **finetune.Config.DEFAULT_SEARCH_SPACE,
        "temperature": {"low": 1.0, "high": 8.0},
        "alpha": {"low": 0.1, "high": 0.9},
    }


def _own_meta(parent: Artifact) -> dict:
    """The parent's record; a folder given by path carries its own lineage in its artifact file."""
    if parent.meta.get("stage") == "source" and (parent.path / META_FILE).exists():
        return Artifact.load(parent.path).meta
    return parent.meta


def teacher_path(parent: Artifact, config: Config) -> Path:
    if config.teacher:
        return models.resolve(config.teacher).path
    meta = _own_meta(parent)
    lineage = meta.get("parent") or {}
    if meta.get("stage") != "prune" or not lineage.get("path"):
        raise RecipeError(
            f"distill needs a teacher: {parent.path} was not made by prune, so set teacher: "
            "to the model it should imitate"
        )
    path = executors.located(lineage["path"])
    if not (path / "config.json").exists():
        # the lineage path is as the run named it (relative to where it started): a run folder read from
        # another directory, or moved, still holds the teacher beside the parent, under its variant name
        name = str(lineage.get("name") or "")
        sibling = parent.path.parent / name
        plain = name not in ("", ".", "..") and Path(name).name == name  # a folder name, never a way out
        if plain and (sibling / META_FILE).is_file() and Artifact.load(sibling).id == lineage.get("id"):
            path = sibling
    if not (path / "config.json").exists():
        raise ArtifactError(
            f"the teacher {path} (the model {parent.path} was pruned from) is gone: set teacher: to where it is now"
        )
    return path


def _depth_and_width(config) -> tuple[int, int]:
    return config.num_hidden_layers, config.hidden_size  # GPT-2's config maps n_layer and n_embd to these


def layer_map(kept_layers: list[int] | None, student_layers: int, teacher_layers: int) -> list[int] | None:
    """For each student layer, the teacher layer whose output it should match (None: no mapping)."""
    if kept_layers is None:
        return list(range(student_layers)) if student_layers == teacher_layers else None
    if len(kept_layers) != student_layers or max(kept_layers, default=0) >= teacher_layers:
        return None
    return [*kept_layers[:-1], teacher_layers - 1]


class Distillation:
    """The training objective: soft labels from the teacher plus the task loss (and hidden states)."""

    def __init__(self, teacher: Path, task, config: Config, kept_layers: list[int] | None = None):
        self.teacher_path, self.auto_model, self.config = teacher, task.AUTO_MODEL, config
        self.terms = task.Trainer.distillation_terms
        self.kept_layers = kept_layers
        self.parts: dict = {}

    def start(self, student) -> None:
        import transformers

        architectures.register()
        self.teacher = (
            getattr(transformers, self.auto_model)
            .from_pretrained(str(self.teacher_path), **pretrained_options(self.teacher_path))
            .eval()
        )
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        s, t = student.config, self.teacher.config
        if s.vocab_size != t.vocab_size or getattr(s, "num_labels", None) != getattr(t, "num_labels", None):
            raise ArtifactError(
                f"the teacher {self.teacher_path} predicts other outputs than the student "
                "(vocabulary or labels differ): distil from the model the student was made from"
            )
        (s_depth, s_width), (t_depth, t_width) = _depth_and_width(s), _depth_and_width(t)
        self.mapping = layer_map(self.kept_layers, s_depth, t_depth)
        if self.config.hidden_weight and (self.mapping is None or s_width != t_width):
            raise RecipeError(
                f"hidden-state matching needs the same hidden size and a layer mapping (as many layers, or "
                f"a student pruned from this teacher by layers) in student {s_depth} layers x {s_width} and "
                f"teacher {t_depth} x {t_width}: set hidden_weight: 0"
            )

    def __call__(self, student, batch):
        import torch

        hidden = bool(self.config.hidden_weight)
        out, ref, soft, task_loss = self.terms(student, self.teacher, batch, self.config.temperature, hidden)
        loss = self.config.alpha * soft + (1 - self.config.alpha) * task_loss
        self.parts = {"soft_loss": round(float(soft.detach()), 5), "task_loss": round(float(task_loss.detach()), 5)}
        if hidden:
            mask = batch.get("attention_mask")
            token_mask = (mask if mask is not None else torch.ones(out.hidden_states[0].shape[:2])).unsqueeze(-1)
            mse = sum(
                ((a - b) ** 2 * token_mask).sum() / (token_mask.sum() * a.shape[-1])
                for a, b in zip(out.hidden_states[1:], [ref.hidden_states[1 + t] for t in self.mapping])
            ) / (len(out.hidden_states) - 1)
            loss = loss + self.config.hidden_weight * mse
            self.parts["hidden_loss"] = round(float(mse.detach()), 5)
        return loss


def run(parent: Artifact, config: Config, workdir: Path) -> StageOutput:
    teacher = teacher_path(parent, config)
    return finetune.train_or_search(
        parent, config, workdir, partial(_distill_from, parent.meta, str(teacher)), reads=(parent.path, teacher)
    )


fans_out = finetune.fans_out


def reads(parent: Artifact, config: Config) -> list[Path]:
    """Beside the parent, the teacher."""
    return [teacher_path(parent, config)]


def _kept_layers(parent: Artifact, config: Config) -> list[int] | None:
    """Which of the teacher's layers the parent kept, when the parent was pruned from that teacher."""
    meta = _own_meta(parent)
    if meta.get("stage") != "prune":
        return None
    return (meta.get("metadata") or {}).get("kept_layers")


def _distill_from(
    parent_meta: dict, teacher_name: str, parent_path: Path, teacher: Path, cfg: Config, folder: Path, on_eval
) -> StageOutput:
    """One training run; `teacher_name` is where the teacher lives in the run (recorded), `teacher` a copy here."""
    parent = Artifact(parent_path, parent_meta)
    task = finetune.task_of(parent, cfg)
    out = finetune.train(
        parent,
        cfg,
        folder,
        Distillation(teacher, task, cfg, kept_layers=_kept_layers(parent, cfg)),
        stage=NAME,
        evaluate_first=True,
        on_eval=on_eval,
    )
    out.metadata["distillation"] = {
        "teacher": teacher_name,
        "temperature": cfg.temperature,
        "alpha": cfg.alpha,
        "hidden_weight": cfg.hidden_weight,
    }
    return out
