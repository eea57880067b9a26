"""Text in, sentence embeddings out: an encoder on any engine, its token vectors pooled (torch-free).

The graph gives one vector per token (`last_hidden_state`, what Optimum's `feature-extraction` export
and transformers.js's pipeline of that name read); the sentence's vector is their mean over the real
tokens (or the first token's, or their maximum), scaled to unit length when the model was trained so.
How a model pools is the model's own fact: sentence-transformers keeps it in `modules.json` and
`1_Pooling/config.json`; edgenlp's variants and bundles carry it as `pooling.json`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .classifier import FolderEncoder, length_batches, prepare
from .errors import BundleError, InputError
from .files import PLAIN, Files

POOLING_FILE = "pooling.json"
MODES = ("mean", "cls", "max")
# sentence-transformers' pooling keys, not secrets ("token" in a key name trips bandit's B105)
_ST_MODES = {  # nosec B105
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_cls_token": "cls",
    "pooling_mode_max_tokens": "max",
}


@dataclass(frozen=True)
class Pooling:
    mode: str = "mean"
    normalize: bool = True
    source: str = "default"
    """Where it was read: `pooling.json`, `sentence-transformers`, or `default` (mean, normalised)."""

    def apply(self, hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """(batch, tokens, dim) token vectors and their attention mask -> (batch, dim) sentence vectors."""
        hidden = hidden.astype(np.float32, copy=False)
        if self.mode == "cls":
            pooled = hidden[:, 0]
        elif self.mode == "max":
            pooled = np.where(mask[..., None] > 0, hidden, -np.inf).max(axis=1)
        else:
            weights = mask[..., None].astype(np.float32)
            pooled = (hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)
        if self.normalize:
            pooled = pooled / np.maximum(np.linalg.norm(pooled, axis=-1, keepdims=True), 1e-12)
        return pooled

    def as_json(self) -> dict:
        return {"mode": self.mode, "normalize": self.normalize}


def _checked(value: dict, where: Path) -> Pooling:
    mode, normalize = value.get("mode", "mean"), value.get("normalize", True)
    if mode not in MODES or not isinstance(normalize, bool):
        raise BundleError(
            f"{where}: pooling {value!r} is not understood: mode must be one of {', '.join(MODES)} and "
            "normalize true or false"
        )
    return Pooling(mode, normalize, where.name)


def pooling_of(folder: str | Path, files: Files = PLAIN) -> Pooling:
    """How the model in `folder` pools: its `pooling.json`, else sentence-transformers' files, else mean
    pooling with unit length (what a bare encoder used for embeddings is given)."""
    folder = Path(folder)
    own = folder / POOLING_FILE
    if files.exists(own):
        return _checked(files.json(own), own)
    modules = folder / "modules.json"
    if not files.exists(modules):
        return Pooling()
    try:
        listed = json.loads(files.text(modules))
    except ValueError as exc:
        raise BundleError(f"{modules} is not valid JSON ({exc}): the file is damaged") from None
    if not isinstance(listed, list) or not all(isinstance(m, dict) for m in listed):
        raise BundleError(f"{modules} is not a list of modules: the file is damaged")
    types = [str(m.get("type", "")) for m in listed]
    normalize = any(t.endswith("Normalize") for t in types)
    pooling_dir = next((str(m.get("path", "")) for m in listed if str(m.get("type", "")).endswith("Pooling")), None)
    mode = "mean"
    if pooling_dir:
        config_file = folder / pooling_dir / "config.json"
        if not config_file.resolve().is_relative_to(folder.resolve()):
            raise BundleError(f"{modules} names a pooling folder outside the model folder: the file is not trusted")
        config = files.json(config_file, default={})
        chosen = [name for key, name in _ST_MODES.items() if config.get(key)]
        others = [k for k, v in config.items() if k.startswith("pooling_mode_") and v and k not in _ST_MODES]
        if others or len(chosen) > 1:
            raise BundleError(
                f"{config_file} pools by {', '.join(others or chosen)}: edgenlp pools by one of "
                f"{', '.join(MODES)}; save the model with one of those"
            )
        mode = chosen[0] if chosen else "mean"
    return Pooling(mode, normalize, "sentence-transformers")


def write_pooling(folder: Path, pooling: Pooling) -> None:
    from ..fsio import write_json_atomic

    write_json_atomic(Path(folder) / POOLING_FILE, pooling.as_json())


def carry_pooling(source: Path, target: Path) -> None:
    """Record the source model's pooling in `target` (a sentence-transformers model's, or its pooling.json)."""
    pooling = pooling_of(source)
    if pooling.source != "default":
        write_pooling(target, pooling)


class TextEmbedder(FolderEncoder):
    """Sentence embeddings from an encoder folder, batched by length like the classifier."""

    def read_folder(self, folder: Path, files: Files) -> None:
        self.pooling = pooling_of(folder, files)

    def vectors(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        """Sentence vectors of encoded inputs (one batch)."""
        return self.pooling.apply(self.model.run(inputs), inputs["attention_mask"])

    def prepare(self, texts: str | Sequence[str], truncate: bool = True) -> list:
        """Checked and tokenized texts, ready for `answer` (a server tokenises on arrival, batches later)."""
        return prepare(self.tokenizer, texts, truncate)

    def answer(
        self,
        encodings: Sequence,
        batch_size: int = 32,
        max_batch_tokens: int | None = None,
        normalize: bool | None = None,
    ) -> np.ndarray:
        """Vectors of prepared texts, batched by length; `normalize=None` keeps the model's own choice."""
        if batch_size < 1:
            raise InputError(f"batch_size {batch_size} must be at least 1")
        pooling = self.pooling if normalize is None else Pooling(self.pooling.mode, normalize, self.pooling.source)
        out = np.empty((len(encodings), 0), dtype=np.float32)
        for rows in length_batches([len(e.ids) for e in encodings], batch_size, max_batch_tokens):
            inputs = self.tokenizer.pad([encodings[i] for i in rows])
            vectors = pooling.apply(self.model.run(inputs), inputs["attention_mask"])
            if out.shape[1] == 0:
                out = np.empty((len(encodings), vectors.shape[-1]), dtype=np.float32)
            out[rows] = vectors
        return out

    def embed(
        self,
        texts: str | Sequence[str],
        batch_size: int = 32,
        truncate: bool = True,
        normalize: bool | None = None,
        max_batch_tokens: int | None = None,
    ) -> np.ndarray:
        """A (texts, dimension) float32 array, one row per text in the order given.

        `normalize=None` keeps the model's own choice; True or False overrides it (TEI's `normalize`).
        A text longer than the model's maximum is cut there, or refused with `truncate=False`.
        """
        return self.answer(self.prepare(texts, truncate), batch_size, max_batch_tokens, normalize)
