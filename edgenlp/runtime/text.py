"""A Hugging Face fast tokenizer (`tokenizer.json`) producing numpy model inputs."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .errors import BundleError
from .files import PLAIN, Files

DEFAULT_MAX_LENGTH = 512


def read_tokenizer(file: Path, files: Files = PLAIN):
    """A `tokenizers.Tokenizer` from the bytes `files` hands over (for a bundle: the checked ones)."""
    from tokenizers import Tokenizer

    if not files.exists(file):
        raise FileNotFoundError(f"{file} not found: the model folder needs a fast tokenizer (tokenizer.json)")
    try:
        return Tokenizer.from_str(files.text(file))
    except Exception as exc:  # tokenizers raises a bare Exception for a file it cannot parse
        first = (str(exc).strip().splitlines() or [""])[0][:200]
        raise BundleError(
            f"{file} is not a tokenizer that tokenizers can read ({first}): copy the model folder or bundle again"
        ) from None


class TextTokenizer:
    def __init__(self, path: str | Path, max_length: int | None = None, files: Files = PLAIN):
        path = Path(path)
        folder = path if path.is_dir() else path.parent
        file = path / "tokenizer.json" if path.is_dir() else path
        self.max_length = max_length or configured_max_length(folder, files)
        self._tok = read_tokenizer(file, files)
        self._tok.no_padding()
        self._tok.enable_truncation(self.max_length)
        self.pad_id = _pad_id(folder, self._tok, files)

    def tokenize(self, texts: Sequence[str]) -> list:
        """One unpadded `tokenizers.Encoding` per text, cut at `max_length` (`.overflowing` holds the rest)."""
        return self._tok.encode_batch(list(texts))

    def tokenize_words(self, sentences: Sequence[Sequence[str]]) -> list:
        """As `tokenize`, for sentences already split into words: each subword's `word_ids` entry is its word."""
        return self._tok.encode_batch([list(words) for words in sentences], is_pretokenized=True)

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


def configured_max_length(folder: Path, files: Files = PLAIN) -> int:
    """The longest input the tokenizer of `folder` produces (its `model_max_length`, at most 512)."""
    value = files.json(Path(folder) / "tokenizer_config.json", default={}).get("model_max_length")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 1:
        return DEFAULT_MAX_LENGTH
    return int(min(value, DEFAULT_MAX_LENGTH))


def _pad_id(folder: Path, tok, files: Files = PLAIN) -> int:
    pad_token = files.json(Path(folder) / "special_tokens_map.json", default={}).get("pad_token", "[PAD]")
    if isinstance(pad_token, dict):
        pad_token = pad_token.get("content")
    pad_id = tok.token_to_id(pad_token) if isinstance(pad_token, str) and pad_token else None
    return int(pad_id) if pad_id is not None else 0
