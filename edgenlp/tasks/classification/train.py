"""The classifier's half of the training loop (fine-tuning, distillation) and its padding rule."""

from __future__ import annotations

from ... import architectures
from ...trust import pretrained_options
from ..losses import own_loss, soft_label_terms


def pad_with(tokenizer, config, where) -> None:
    """Give a tokenizer without a pad token the model's own pad id; never change the model's special ids.

    A model whose config names a pad id keeps it (RoBERTa's position embeddings use it as their padding
    index: another id breaks the export); a model with none (GPT-2) pads with its end-of-text token, which
    its classifier skips (it reads the last non-pad token).
    """
    from ...errors import DataError

    pad_id = config.pad_token_id
    if pad_id is None:
        if tokenizer.eos_token is None:
            raise DataError(
                f"{where}: neither the model nor its tokenizer names a pad token: set pad_token_id in "
                "config.json (and pad_token in tokenizer_config.json)"
            )
        tokenizer.pad_token = tokenizer.eos_token
        config.pad_token_id = tokenizer.eos_token_id
        return
    token = tokenizer.convert_ids_to_tokens(int(pad_id)) if 0 <= int(pad_id) < len(tokenizer) else None
    if token is None:
        raise DataError(
            f"{where}: config.json's pad_token_id {pad_id} is not a token of its tokenizer "
            f"({len(tokenizer)} tokens): set pad_token in tokenizer_config.json to the model's pad token"
        )
    tokenizer.pad_token = token


class Trainer:
    """The classifier's half of the fine-tuning loop: a sequence-classification head on the parent."""

    METRIC = "accuracy"
    METRICS = {"accuracy": True, "macro_f1": True, "loss": False}
    """Metric name -> higher is better."""

    def __init__(self, parent_path, dataset, config):
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        self.labels = dataset.labels
        architectures.register()  # a pruned checkpoint's classes
        self.tokenizer = AutoTokenizer.from_pretrained(str(parent_path), **pretrained_options(parent_path))
        self.model = AutoModelForSequenceClassification.from_pretrained(
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

        def encode(texts: list[str]) -> list[list[int]]:
            return self.tokenizer(texts, truncation=True, max_length=config.max_length)["input_ids"]

        self.train_ids, self.train_y = encode(dataset.train.texts), dataset.train.labels
        val = dataset.validation.sample(config.max_eval_examples, config.seed)
        self.val_ids, self.val_y = encode(val.texts), val.labels
        self.train_size = len(self.train_ids)
        self.data_description = dataset.describe()

    def describe(self) -> dict:
        return {"labels": self.labels, "train_examples": len(self.train_ids), "validation_examples": len(self.val_ids)}

    def _batches(self, encoded, labels, order, batch_size):
        import torch

        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            width = max(len(encoded[i]) for i in idx)
            ids = torch.full((len(idx), width), self.pad_id, dtype=torch.long)
            mask = torch.zeros((len(idx), width), dtype=torch.long)
            for row, i in enumerate(idx):
                ids[row, : len(encoded[i])] = torch.tensor(encoded[i])
                mask[row, : len(encoded[i])] = 1
            yield {"input_ids": ids, "attention_mask": mask, "labels": torch.tensor([labels[i] for i in idx])}

    def batches(self, rng, batch_size: int):
        order = list(range(len(self.train_ids)))
        rng.shuffle(order)
        yield from self._batches(self.train_ids, self.train_y, order, batch_size)

    def evaluate(self, batch_size: int = 64) -> dict:
        from sklearn.metrics import accuracy_score, f1_score

        order = sorted(range(len(self.val_ids)), key=lambda i: len(self.val_ids[i]))  # similar lengths pad less
        preds = [0] * len(self.val_ids)
        loss_sum = 0.0
        for batch, start in zip(
            self._batches(self.val_ids, self.val_y, order, batch_size), range(0, len(order), batch_size)
        ):
            out = self.model(**batch)
            loss_sum += float(out.loss) * len(batch["labels"])
            for i, p in zip(order[start : start + batch_size], out.logits.argmax(-1).tolist()):
                preds[i] = p
        return {
            "accuracy": float(accuracy_score(self.val_y, preds)),
            "macro_f1": float(f1_score(self.val_y, preds, average="macro")),
            "loss": loss_sum / max(len(self.val_y), 1),
        }

    loss = staticmethod(own_loss)
    distillation_terms = staticmethod(soft_label_terms)

    def save(self, workdir) -> None:
        self.model.save_pretrained(str(workdir), safe_serialization=True)
        self.tokenizer.model_max_length = self.max_length
        self.tokenizer.save_pretrained(str(workdir))
