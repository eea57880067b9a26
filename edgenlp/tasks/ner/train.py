"""The tagger's half of the training loop: a token-classification head, each word judged by its first subword.

Words arrive split (CoNLL); the tokenizer splits them further into subwords, of which only the first
carries the word's tag (the others, and the special tokens, are -100: not judged). That is the
alignment the runtime reads back (`runtime/entities.py`). Distillation is per-token KL to the
teacher's tag distribution over every real position (`losses.soft_label_terms`).
"""

from __future__ import annotations

from ... import architectures
from ...trust import pretrained_options
from ..classification.train import pad_with
from ..losses import own_loss, soft_label_terms
from .scoring import entity_scores

IGNORED = -100
"""The label of a position no loss is computed on (PyTorch's cross-entropy default)."""


class Trainer:
    METRIC = "entity_f1"
    METRICS = {"entity_f1": True, "loss": False}
    """Metric name -> higher is better."""

    def __init__(self, parent_path, dataset, config):
        from transformers import AutoModelForTokenClassification, AutoTokenizer

        self.labels = dataset.labels
        self.types = dataset.entity_types
        architectures.register()  # a pruned checkpoint's classes
        self.tokenizer = AutoTokenizer.from_pretrained(str(parent_path), **pretrained_options(parent_path))
        self.model = AutoModelForTokenClassification.from_pretrained(
            str(parent_path),
            **pretrained_options(parent_path),
            num_labels=len(self.labels),
            id2label=dict(enumerate(self.labels)),
            label2id={name: i for i, name in enumerate(self.labels)},
            ignore_mismatched_sizes=True,
        )
        if self.tokenizer.pad_token is None:
            pad_with(self.tokenizer, self.model.config, parent_path)
        self.pad_id = self.tokenizer.pad_token_id or 0
        self.max_length = config.max_length
        index = {name: i for i, name in enumerate(self.labels)}

        def encode(part) -> list[tuple[list[int], list[int]]]:
            encoded = self.tokenizer(
                part.words, is_split_into_words=True, truncation=True, max_length=config.max_length
            )
            out = []
            for row, tags in enumerate(part.tags):
                seen, labels = set(), []
                for word in encoded.word_ids(row):
                    labels.append(IGNORED if word is None or word in seen else index[tags[word]])
                    if word is not None:
                        seen.add(word)
                out.append((encoded["input_ids"][row], labels))
            return out

        self.train_rows = encode(dataset.train)
        self.val = dataset.validation.sample(config.max_eval_examples, config.seed)
        self.val_rows = encode(self.val)
        self.train_size = len(self.train_rows)
        self.data_description = dataset.describe()

    def describe(self) -> dict:
        return {"labels": self.labels, "train_sentences": self.train_size, "validation_sentences": len(self.val_rows)}

    def _batches(self, rows, order, batch_size):
        import torch

        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            width = max(len(rows[i][0]) for i in idx)
            ids = torch.full((len(idx), width), self.pad_id, dtype=torch.long)
            mask = torch.zeros((len(idx), width), dtype=torch.long)
            labels = torch.full((len(idx), width), IGNORED, dtype=torch.long)
            for row, i in enumerate(idx):
                n = len(rows[i][0])
                ids[row, :n] = torch.tensor(rows[i][0])
                mask[row, :n] = 1
                labels[row, :n] = torch.tensor(rows[i][1])
            yield {"input_ids": ids, "attention_mask": mask, "labels": labels}

    def batches(self, rng, batch_size: int):
        order = list(range(self.train_size))
        rng.shuffle(order)
        yield from self._batches(self.train_rows, order, batch_size)

    def evaluate(self, batch_size: int = 64) -> dict:
        """Entity F1 on the validation sentences (words past the model's maximum count as `O`)."""
        order = sorted(range(len(self.val_rows)), key=lambda i: len(self.val_rows[i][0]))
        predicted: list[list[str]] = [[] for _ in self.val_rows]
        loss_sum = 0.0
        for batch, start in zip(self._batches(self.val_rows, order, batch_size), range(0, len(order), batch_size)):
            out = self.model(**batch)
            loss_sum += float(out.loss) * len(batch["labels"])
            best = out.logits.argmax(-1)
            for row, i in enumerate(order[start : start + batch_size]):
                judged = batch["labels"][row] != IGNORED
                tags = [self.labels[t] for t in best[row][judged].tolist()]
                predicted[i] = tags + ["O"] * (len(self.val.words[i]) - len(tags))
        scores = entity_scores(self.val.tags, predicted, self.types)
        return {"entity_f1": scores["entity_f1"], "loss": loss_sum / max(len(self.val_rows), 1)}

    loss = staticmethod(own_loss)
    distillation_terms = staticmethod(soft_label_terms)

    def save(self, workdir) -> None:
        self.model.save_pretrained(str(workdir), safe_serialization=True)
        self.tokenizer.model_max_length = self.max_length
        self.tokenizer.save_pretrained(str(workdir))
