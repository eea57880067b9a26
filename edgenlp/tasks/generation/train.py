"""The language model's half of the training loop: next-token loss on windows of the corpus."""

from __future__ import annotations

import math

from ... import architectures
from ...errors import DataError
from ...runtime.generation import context_of
from ...trust import pretrained_options
from ..losses import own_loss, soft_label_terms


class Trainer:
    """The language model's half of the training loop: next-token loss on windows of the corpus."""

    METRIC = "perplexity"
    METRICS = {"perplexity": False, "loss": False}

    def __init__(self, parent_path, corpus, config):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        architectures.register()  # a pruned checkpoint's classes
        self.tokenizer = AutoTokenizer.from_pretrained(str(parent_path), **pretrained_options(parent_path))
        self.model = AutoModelForCausalLM.from_pretrained(str(parent_path), **pretrained_options(parent_path))
        context, _ = context_of(self.model.config.to_dict(), f"{parent_path}/config.json")
        self.block = min(config.max_length, context)
        eos = self.tokenizer.eos_token_id
        self.train_blocks = self._blocks(corpus.train, eos)
        if not self.train_blocks:
            raise DataError(
                f"corpus '{corpus.name}' is too small for one training window of {self.block} tokens: "
                "give more text or lower max_length"
            )
        self.val_blocks = self._blocks(corpus.validation, eos)[: config.max_eval_examples]
        if not self.val_blocks:
            raise DataError(
                f"corpus '{corpus.name}' has too little validation text for one window of {self.block} "
                "tokens: give more text, raise validation_fraction or lower max_length"
            )
        self.train_size = len(self.train_blocks)
        self.data_description = corpus.describe()

    def _blocks(self, docs: list[str], eos: int) -> list[list[int]]:
        ids: list[int] = []
        for enc in self.tokenizer(docs, add_special_tokens=False)["input_ids"]:
            ids.extend(enc + [eos])
        return [ids[i : i + self.block] for i in range(0, len(ids) - self.block + 1, self.block)]

    def describe(self) -> dict:
        return {
            "window": self.block,
            "train_windows": len(self.train_blocks),
            "train_tokens": len(self.train_blocks) * self.block,
            "validation_windows": len(self.val_blocks),
        }

    def batches(self, rng, batch_size: int):
        import torch

        order = list(range(len(self.train_blocks)))
        rng.shuffle(order)
        for start in range(0, len(order), batch_size):
            ids = torch.tensor([self.train_blocks[i] for i in order[start : start + batch_size]])
            yield {"input_ids": ids, "labels": ids}

    def evaluate(self, batch_size: int = 16) -> dict:
        import torch

        total, count = 0.0, 0
        for start in range(0, len(self.val_blocks), batch_size):
            ids = torch.tensor(self.val_blocks[start : start + batch_size])
            loss = float(self.model(input_ids=ids, labels=ids).loss)
            n = ids.shape[0] * (ids.shape[1] - 1)
            total, count = total + loss * n, count + n
        loss = total / count
        return {"loss": loss, "perplexity": math.exp(loss)}

    loss = staticmethod(own_loss)
    distillation_terms = staticmethod(soft_label_terms)

    def save(self, workdir) -> None:
        self.model.save_pretrained(str(workdir), safe_serialization=True)
        self.tokenizer.model_max_length = int(getattr(self.model.config, "n_positions", self.block))
        self.tokenizer.save_pretrained(str(workdir))
