"""The embedding model's half of the training loop: pairs scored for similarity, and imitating a teacher.

A batch holds both sentences of each pair, stacked (first sentences, then second sentences), so that
any code that runs the bare encoder on a batch (pruning's calibration and its layer ranking) sees plain
encoder inputs; `labels` are the pair scores scaled to 0-1. The loss is sentence-transformers'
CosineSimilarityLoss: the squared error between the cosine of the pooled vectors and the score. Distilled,
the student's pooled vectors are pulled towards the teacher's (1 - cosine, plus their squared distance).
"""

from __future__ import annotations

from ... import architectures
from ...runtime.embedding import pooling_of, write_pooling
from ...trust import pretrained_options
from .data import MAX_SCORE


def _pool(hidden, mask, pooling):
    import torch

    if pooling.mode == "cls":
        pooled = hidden[:, 0]
    elif pooling.mode == "max":
        pooled = hidden.masked_fill(mask.unsqueeze(-1) == 0, float("-inf")).max(dim=1).values
    else:
        weights = mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
    return torch.nn.functional.normalize(pooled, dim=-1) if pooling.normalize else pooled


def _encoder_inputs(batch: dict) -> dict:
    return {k: v for k, v in batch.items() if k != "labels"}


class Trainer:
    METRIC = "spearman"
    METRICS = {"spearman": True, "loss": False}
    """Metric name -> higher is better."""

    def __init__(self, parent_path, dataset, config):
        import transformers

        architectures.register()  # a pruned checkpoint's classes
        self.pooling = pooling_of(parent_path)
        self.tokenizer = transformers.AutoTokenizer.from_pretrained(str(parent_path), **pretrained_options(parent_path))
        self.model = transformers.AutoModel.from_pretrained(str(parent_path), **pretrained_options(parent_path))
        self.pad_id = self.tokenizer.pad_token_id or 0
        self.max_length = config.max_length

        def encode(texts: list[str]) -> list[list[int]]:
            return self.tokenizer(texts, truncation=True, max_length=config.max_length)["input_ids"]

        train = dataset.train
        self.train_a, self.train_b, self.train_y = encode(train.first), encode(train.second), train.scores
        val = dataset.validation.sample(config.max_eval_examples, config.seed)
        self.val_a, self.val_b, self.val_y = encode(val.first), encode(val.second), val.scores
        self.train_size = len(self.train_y)
        self.data_description = dataset.describe()
        self.labels: list[str] = []

    def describe(self) -> dict:
        return {"pooling": self.pooling.as_json(), "train_pairs": self.train_size, "validation_pairs": len(self.val_y)}

    def _batches(self, first, second, scores, order, batch_size):
        import torch

        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            rows = [first[i] for i in idx] + [second[i] for i in idx]
            width = max(len(r) for r in rows)
            ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
            mask = torch.zeros((len(rows), width), dtype=torch.long)
            for row, r in enumerate(rows):
                ids[row, : len(r)] = torch.tensor(r)
                mask[row, : len(r)] = 1
            yield {
                "input_ids": ids,
                "attention_mask": mask,
                "labels": torch.tensor([scores[i] / MAX_SCORE for i in idx], dtype=torch.float32),
            }

    def batches(self, rng, batch_size: int):
        order = list(range(self.train_size))
        rng.shuffle(order)
        yield from self._batches(self.train_a, self.train_b, self.train_y, order, batch_size)

    def _pair_cosines(self, model, batch):
        import torch

        out = model(**_encoder_inputs(batch))
        vectors = _pool(out.last_hidden_state, batch["attention_mask"], self.pooling)
        half = vectors.shape[0] // 2
        return torch.nn.functional.cosine_similarity(vectors[:half], vectors[half:], dim=-1)

    def loss(self, model, batch):
        """CosineSimilarityLoss: squared error between the pair's cosine and its score (0-1)."""
        return ((self._pair_cosines(model, batch) - batch["labels"]) ** 2).mean()

    @staticmethod
    def distillation_terms(student, teacher, batch: dict, temperature: float, hidden: bool) -> tuple:
        """The student's pooled vectors against the teacher's: 1 - cosine plus their squared distance
        (`temperature` has no meaning here); the task loss is the pair-score loss."""
        import torch

        inputs = _encoder_inputs(batch)
        pooling = pooling_of(student.name_or_path)
        out = student(**inputs, output_hidden_states=hidden)
        with torch.no_grad():
            ref = teacher(**inputs, output_hidden_states=hidden)
        mask = batch["attention_mask"]
        mine, theirs = _pool(out.last_hidden_state, mask, pooling), _pool(ref.last_hidden_state, mask, pooling)
        soft = (1 - torch.nn.functional.cosine_similarity(mine, theirs, dim=-1)).mean() + ((mine - theirs) ** 2).sum(
            -1
        ).mean()
        half = mine.shape[0] // 2
        cos = torch.nn.functional.cosine_similarity(mine[:half], mine[half:], dim=-1)
        return out, ref, soft, ((cos - batch["labels"]) ** 2).mean()

    def evaluate(self, batch_size: int = 64) -> dict:
        import numpy as np
        from scipy.stats import spearmanr

        cosines, loss_sum = [], 0.0
        order = list(range(len(self.val_y)))
        for batch in self._batches(self.val_a, self.val_b, self.val_y, order, batch_size):
            cos = self._pair_cosines(self.model, batch)
            loss_sum += float(((cos - batch["labels"]) ** 2).sum())
            cosines += cos.tolist()
        return {
            "spearman": 100.0 * float(spearmanr(np.asarray(cosines), np.asarray(self.val_y)).statistic),
            "loss": loss_sum / max(len(self.val_y), 1),
        }

    def save(self, workdir) -> None:
        self.model.save_pretrained(str(workdir), safe_serialization=True)
        self.tokenizer.model_max_length = self.max_length
        self.tokenizer.save_pretrained(str(workdir))
        write_pooling(workdir, self.pooling)
