"""The reader's half of the training loop: start and end positions in windows of the context, and imitating a teacher.

Each question becomes one window per `stride`-overlapping stretch of its context (as the runtime cuts
them, `runtime/answers.py`); a window holding the first gold answer points at its first and last
token, one without it at the first token ([CLS], "no answer here"), as SQuAD models are trained.
Distilled, the student's start and end distributions are pulled to the teacher's (KL at a temperature).
"""

from __future__ import annotations

from ... import architectures
from ...runtime.answers import MAX_LENGTH, STRIDE, best_span
from ...trust import pretrained_options
from ..classification.train import pad_with
from ..losses import own_loss
from .scoring import squad_scores

SPAN_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


class Trainer:
    METRIC = "f1"
    METRICS = {"f1": True, "exact_match": True, "loss": False}
    """Metric name -> higher is better."""

    def __init__(self, parent_path, dataset, config):
        from transformers import AutoModelForQuestionAnswering, AutoTokenizer

        architectures.register()  # a pruned checkpoint's classes
        self.tokenizer = AutoTokenizer.from_pretrained(str(parent_path), **pretrained_options(parent_path))
        self.model = AutoModelForQuestionAnswering.from_pretrained(str(parent_path), **pretrained_options(parent_path))
        if self.tokenizer.pad_token is None:
            pad_with(self.tokenizer, self.model.config, parent_path)
        self.pad_id = self.tokenizer.pad_token_id or 0
        # windows no longer than the training stage asks, the reader's 384, or the model's positions; not the
        # tokenizer's model_max_length, which is the window a reader was last trained at (a reader trained at
        # 256 can be trained on at 384), and is rewritten by `save`
        self.max_length = min(config.max_length, MAX_LENGTH, self.model.config.max_position_embeddings)
        self.stride = min(STRIDE, self.max_length // 2)
        self.train_rows = self._windows(dataset.train)
        from .data import _sample

        self.val = _sample(dataset.validation, config.max_eval_examples, config.seed)
        self.val_rows = self._windows(self.val)
        self.train_size = len(self.train_rows)
        self.data_description = dataset.describe()
        self.labels: list[str] = []

    def _windows(self, questions) -> list[dict]:
        """One row per window: its tokens, the question it belongs to, offsets, and the gold span's tokens."""
        encoded = self.tokenizer(
            [q.question for q in questions],
            [q.context for q in questions],
            truncation="only_second",
            max_length=self.max_length,
            stride=self.stride,
            return_overflowing_tokens=True,
            return_offsets_mapping=True,
        )
        rows = []
        for i, owner in enumerate(encoded["overflow_to_sample_mapping"]):
            q = questions[owner]
            sequence = encoded.sequence_ids(i)
            offsets = encoded["offset_mapping"][i]
            first, last = q.starts[0], q.starts[0] + len(q.answers[0])
            start = end = 0
            inside = [t for t, s in enumerate(sequence) if s == 1]
            if inside and offsets[inside[0]][0] <= first and offsets[inside[-1]][1] >= last:
                start = next(t for t in inside if offsets[t][1] > first)
                end = next(t for t in reversed(inside) if offsets[t][0] < last)
            rows.append(
                {
                    "question": owner,
                    "input_ids": encoded["input_ids"][i],
                    "token_type_ids": encoded["token_type_ids"][i] if "token_type_ids" in encoded else None,
                    "start": start,
                    "end": end,
                    "sequence_ids": sequence,
                    "offsets": offsets,
                }
            )
        return rows

    def describe(self) -> dict:
        return {"train_windows": self.train_size, "validation_questions": len(self.val), "stride": self.stride}

    def _batches(self, rows, order, batch_size, labelled: bool = True):
        import torch

        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            width = max(len(rows[i]["input_ids"]) for i in idx)
            ids = torch.full((len(idx), width), self.pad_id, dtype=torch.long)
            mask = torch.zeros((len(idx), width), dtype=torch.long)
            types = torch.zeros((len(idx), width), dtype=torch.long)
            for row, i in enumerate(idx):
                n = len(rows[i]["input_ids"])
                ids[row, :n] = torch.tensor(rows[i]["input_ids"])
                mask[row, :n] = 1
                if rows[i]["token_type_ids"] is not None:
                    types[row, :n] = torch.tensor(rows[i]["token_type_ids"])
            batch = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
            if labelled:
                batch["start_positions"] = torch.tensor([rows[i]["start"] for i in idx])
                batch["end_positions"] = torch.tensor([rows[i]["end"] for i in idx])
            yield batch

    def batches(self, rng, batch_size: int):
        order = list(range(self.train_size))
        rng.shuffle(order)
        yield from self._batches(self.train_rows, order, batch_size)

    def evaluate(self, batch_size: int = 64) -> dict:
        """EM and F1 on the validation questions: the best span across each question's windows."""
        import numpy as np

        order = list(range(len(self.val_rows)))
        scores: list = [None] * len(order)
        loss_sum = 0.0
        for batch, start in zip(self._batches(self.val_rows, order, batch_size), range(0, len(order), batch_size)):
            out = self.model(**batch)
            loss_sum += float(out.loss) * len(batch["input_ids"])
            both = np.stack([out.start_logits.detach().numpy(), out.end_logits.detach().numpy()], -1)
            for row, i in enumerate(order[start : start + batch_size]):
                scores[i] = both[row, : len(self.val_rows[i]["input_ids"])]
        predictions = []
        for q, question in enumerate(self.val):
            mine = [(scores[i], _Window(r)) for i, r in enumerate(self.val_rows) if r["question"] == q]
            span = best_span([s for s, _ in mine], [w for _, w in mine])
            predictions.append(question.context[span[0] : span[1]] if span else "")
        found = squad_scores(predictions, [list(q.answers) for q in self.val])
        return {"f1": found["f1"], "exact_match": found["exact_match"], "loss": loss_sum / max(len(order), 1)}

    loss = staticmethod(own_loss)

    @staticmethod
    def distillation_terms(student, teacher, batch: dict, temperature: float, hidden: bool) -> tuple:
        """KL between the student's and the teacher's start distributions, and end distributions, at
        `temperature` (scaled by T^2, over the real tokens); the task loss is the student's own."""
        import torch
        import torch.nn.functional as F

        out = student(**batch, output_hidden_states=hidden)
        with torch.no_grad():
            ref = teacher(**batch, output_hidden_states=hidden)
        T, pad = temperature, batch["attention_mask"] == 0
        soft = 0.0
        for mine, theirs in ((out.start_logits, ref.start_logits), (out.end_logits, ref.end_logits)):
            mine, theirs = mine.masked_fill(pad, -1e4), theirs.masked_fill(pad, -1e4)
            kl = F.kl_div(
                F.log_softmax(mine / T, -1), F.log_softmax(theirs / T, -1), log_target=True, reduction="batchmean"
            )
            soft = soft + kl * T * T / 2
        return out, ref, soft, out.loss

    def save(self, workdir) -> None:
        self.model.save_pretrained(str(workdir), safe_serialization=True)
        self.tokenizer.model_max_length = self.max_length
        self.tokenizer.save_pretrained(str(workdir))


class _Window:
    """A training window as `best_span` reads the runtime's windows (`sequence_ids`, `offsets`)."""

    def __init__(self, row: dict):
        self.sequence_ids, self.offsets = row["sequence_ids"], row["offsets"]
