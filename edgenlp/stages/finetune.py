"""Base or fine-tuned checkpoint + labelled texts -> a fine-tuned sequence classifier.

A plain PyTorch loop (AdamW, linear warm-up and decay, gradient clipping), evaluated on the
validation split every `eval_every` steps; the best checkpoint by `metric` is kept and training
stops early after `patience` evaluations without improvement. Writes a `save_pretrained`
checkpoint with its tokenizer and `training_log.json` (loss per step, metrics per evaluation).
"""

from __future__ import annotations

import json
import math
import random
import time
from pathlib import Path
from typing import Literal

from pydantic import Field

from .. import data as data_module
from .. import progress
from ..artifact import Artifact, StageOutput
from ..errors import ArtifactError
from . import StageConfig

NAME = "finetune"
LIBRARIES = ("torch", "transformers", "tokenizers", "numpy")
LOG_FILE = "training_log.json"
CHECKED_AGAINST_PARENT = False  # training is meant to change the outputs


class Config(StageConfig):
    data: data_module.DataSpec = data_module.DataSpec()
    max_length: int = Field(128, ge=8, le=512)
    epochs: float = Field(2.0, gt=0)
    max_steps: int | None = Field(None, ge=1)
    batch_size: int = Field(32, ge=1)
    learning_rate: float = Field(5e-5, gt=0)
    weight_decay: float = Field(0.01, ge=0)
    warmup_ratio: float = Field(0.06, ge=0, lt=1)
    eval_every: int = Field(200, ge=1)
    patience: int = Field(3, ge=1)
    """Evaluations without improvement before training stops."""
    metric: Literal["accuracy", "macro_f1"] = "accuracy"
    max_eval_examples: int | None = Field(2000, ge=1)
    """Validation examples used during training (a fixed sample keeps evaluation cheap)."""
    seed: int = 42
    threads: int | None = Field(None, ge=1)


def satisfied_by(parent: Artifact, labels: list[str]) -> bool:
    """A classifier already trained for these labels (in any order) is used as it is."""
    return parent.task == "text-classification" and sorted(parent.labels()) == sorted(labels)


def _batches(encoded: list[list[int]], labels: list[int], order: list[int], batch_size: int, pad_id: int):
    import torch

    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        width = max(len(encoded[i]) for i in idx)
        ids = torch.full((len(idx), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(idx), width), dtype=torch.long)
        for row, i in enumerate(idx):
            ids[row, :len(encoded[i])] = torch.tensor(encoded[i])
            mask[row, :len(encoded[i])] = 1
        yield ids, mask, torch.tensor([labels[i] for i in idx])


def evaluate(model, encoded: list[list[int]], labels: list[int], pad_id: int, batch_size: int = 64) -> dict:
    import torch
    from sklearn.metrics import accuracy_score, f1_score

    model.eval()
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))  # similar lengths pad less
    preds = [0] * len(encoded)
    loss_sum = 0.0
    with torch.inference_mode():
        for (ids, mask, y), start in zip(_batches(encoded, labels, order, batch_size, pad_id),
                                         range(0, len(order), batch_size)):
            out = model(input_ids=ids, attention_mask=mask, labels=y)
            loss_sum += float(out.loss) * len(y)
            for i, p in zip(order[start:start + batch_size], out.logits.argmax(-1).tolist()):
                preds[i] = p
    model.train()
    return {"accuracy": float(accuracy_score(labels, preds)),
            "macro_f1": float(f1_score(labels, preds, average="macro")),
            "loss": loss_sum / max(len(labels), 1)}


def run(parent: Artifact, config: Config, workdir: Path) -> StageOutput:
    if parent.format != "pytorch":
        raise ArtifactError(f"finetune needs a PyTorch checkpoint, but {parent.path} is {parent.format}")
    import numpy as np
    import torch
    import transformers
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, get_linear_schedule_with_warmup

    transformers.logging.set_verbosity_error()
    started = time.time()
    dataset = data_module.load(config.data)
    random.seed(config.seed)
    np.random.seed(config.seed)
    torch.manual_seed(config.seed)
    if config.threads:
        torch.set_num_threads(config.threads)

    labels = dataset.labels
    tokenizer = AutoTokenizer.from_pretrained(str(parent.path))
    model = AutoModelForSequenceClassification.from_pretrained(
        str(parent.path), num_labels=len(labels), id2label=dict(enumerate(labels)),
        label2id={name: i for i, name in enumerate(labels)}, ignore_mismatched_sizes=True)
    pad_id = tokenizer.pad_token_id or 0

    def encode(texts: list[str]) -> list[list[int]]:
        return tokenizer(texts, truncation=True, max_length=config.max_length)["input_ids"]

    train_ids, train_y = encode(dataset.train.texts), dataset.train.labels
    val = dataset.validation.sample(config.max_eval_examples, config.seed)
    val_ids, val_y = encode(val.texts), val.labels

    steps_per_epoch = math.ceil(len(train_ids) / config.batch_size)
    total_steps = config.max_steps or max(1, int(steps_per_epoch * config.epochs))
    no_decay = ("bias", "LayerNorm.weight", "LayerNorm.bias")
    groups = [
        {"params": [p for n, p in model.named_parameters() if not any(k in n for k in no_decay)],
         "weight_decay": config.weight_decay},
        {"params": [p for n, p in model.named_parameters() if any(k in n for k in no_decay)], "weight_decay": 0.0},
    ]
    optimizer = torch.optim.AdamW(groups, lr=config.learning_rate)
    scheduler = get_linear_schedule_with_warmup(optimizer, int(config.warmup_ratio * total_steps), total_steps)

    log: dict = {"steps": [], "evals": [], "metric": config.metric, "labels": labels,
                 "train_examples": len(train_ids), "validation_examples": len(val_ids)}
    best_score, best_state, best_step, stale, step = -1.0, None, 0, 0, 0
    generator = random.Random(config.seed)
    model.train()

    def run_eval() -> bool:
        nonlocal best_score, best_state, best_step, stale
        result = {"step": step, **evaluate(model, val_ids, val_y, pad_id)}
        log["evals"].append(result)
        if result[config.metric] > best_score:
            best_score, best_step, stale = result[config.metric], step, 0
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            stale += 1
        return stale >= config.patience

    stop = False
    with progress.task("fine-tuning", total_steps) as advance:
        while step < total_steps and not stop:
            order = list(range(len(train_ids)))
            generator.shuffle(order)
            for ids, mask, y in _batches(train_ids, train_y, order, config.batch_size, pad_id):
                loss = model(input_ids=ids, attention_mask=mask, labels=y).loss
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                step += 1
                log["steps"].append({"step": step, "epoch": round(step / steps_per_epoch, 4),
                                     "loss": round(float(loss), 5), "lr": scheduler.get_last_lr()[0]})
                advance(1, description=f"fine-tuning (loss {float(loss):.3f}, best {config.metric} "
                                       f"{max(best_score, 0):.3f})")
                if step % config.eval_every == 0 and (stop := run_eval()):
                    break
                if step >= total_steps:
                    break
    if not log["evals"] or log["evals"][-1]["step"] != step:
        run_eval()
    model.load_state_dict(best_state)
    log.update(best_step=best_step, best_score=best_score, stopped_early=stop, total_steps=step,
               seconds=round(time.time() - started, 1))

    model.save_pretrained(str(workdir), safe_serialization=True)
    tokenizer.model_max_length = config.max_length
    tokenizer.save_pretrained(str(workdir))
    (workdir / LOG_FILE).write_text(json.dumps(log, indent=1))
    return StageOutput(format="pytorch", task="text-classification", precision="fp32", metadata={
        "data": dataset.describe(), "best_step": best_step, f"validation_{config.metric}": best_score,
        "stopped_early": stop, "steps": step, "training_log": LOG_FILE})
