"""A Hugging Face fast tokenizer (`tokenizer.json`) producing numpy model inputs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np

DEFAULT_MAX_LENGTH = 512


class TextTokenizer:
    def __init__(self, path: str | Path, max_length: int | None = None):
        from tokenizers import Tokenizer

        path = Path(path)
        folder = path if path.is_dir() else path.parent
        file = path / "tokenizer.json" if path.is_dir() else path
        if not file.exists():
            raise FileNotFoundError(f"{file} not found: the model folder needs a fast tokenizer (tokenizer.json)")
        self.max_length = max_length or configured_max_length(folder)
        self._tok = Tokenizer.from_file(str(file))
        self._tok.no_padding()
        self._tok.enable_truncation(self.max_length)
        self.pad_id = _pad_id(folder, self._tok)

    def tokenize(self, texts: Sequence[str]) -> list:
        """One unpadded `tokenizers.Encoding` per text, cut at `max_length` (`.overflowing` holds the rest)."""
        return self._tok.encode_batch(list(texts))

    def pad(self, encodings: Sequence, pad_to: int | None = None) -> dict[str, np.ndarray]:
        """Token ids, attention mask and token types for a batch, padded to its longest text (or `pad_to`)."""
        width = pad_to or max(len(e.ids) for e in encodings)
        n = len(encodings)
        ids = np.full((n, width), self.pad_id, dtype=np.int64)
        mask = np.zeros((n, width), dtype=np.int64)
        types = np.zeros((n, width), dtype=np.int64)
        for row, enc in enumerate(encodings):
            k = min(len(enc.ids), width)
            ids[row, :k] = enc.ids[:k]
            mask[row, :k] = 1
            types[row, :k] = enc.type_ids[:k]
        return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}

    def encode(self, texts: Sequence[str], pad_to: int | None = None) -> dict[str, np.ndarray]:
        return self.pad(self.tokenize(texts), pad_to)

    def lengths(self, texts: Sequence[str]) -> list[int]:
        return [len(e.ids) for e in self.tokenize(texts)]


def configured_max_length(folder: Path) -> int:
    """The longest input the tokenizer of `folder` produces (its `model_max_length`, at most 512)."""
    cfg = Path(folder) / "tokenizer_config.json"
    if cfg.exists():
        value = json.loads(cfg.read_text()).get("model_max_length") or DEFAULT_MAX_LENGTH
        return int(min(value, DEFAULT_MAX_LENGTH))
    return DEFAULT_MAX_LENGTH


def _pad_id(folder: Path, tok) -> int:
    special = folder / "special_tokens_map.json"
    pad_token = "[PAD]"
    if special.exists():
        value = json.loads(special.read_text()).get("pad_token", pad_token)
        pad_token = value["content"] if isinstance(value, dict) else value
    pad_id = tok.token_to_id(pad_token) if pad_token else None
    return int(pad_id) if pad_id is not None else 0
