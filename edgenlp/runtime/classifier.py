"""Text in, labels and probabilities out: a tokenizer and a classifier on any engine, batched by length.

Batches are packed from texts of similar length (sorted, then cut at `batch_size` texts or
`max_batch_tokens` padded positions), so a batch pads little: a padded position costs as much as a
real one, and a little more where onnxruntime's Softmax meets the mask value (measured in
benchmarks/runtime.py; bundles lower that value to one that costs nothing, checked to change no output).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Self

import numpy as np

from .engines import open_encoder
from .errors import BundleError, InputError
from .files import PLAIN, Files
from .text import TextTokenizer


def labels_of(config: dict, where: Path) -> list[str]:
    """The label names in class order, from a config's `id2label` (keys: class indices)."""
    id2label = config.get("id2label") or {}
    if not isinstance(id2label, dict):
        raise BundleError(f"{where}: id2label is a {type(id2label).__name__}, not a mapping of class index to label")
    bad = next((k for k in id2label if not str(k).strip().lstrip("-").isdigit()), None)
    if bad is not None:
        raise BundleError(f"{where}: id2label key {bad!r} is not a class index: the keys must be 0, 1, 2, ...")
    order = sorted(id2label, key=int)
    if [int(k) for k in order] != list(range(len(order))):
        raise BundleError(f"{where}: id2label keys {order} are not 0..{len(order) - 1}: one label per class index")
    return [str(id2label[k]) for k in order]


class FolderEncoder:
    """An encoder graph on an engine, the tokenizer of its folder, and what the task reads there besides
    (`read_folder`: labels, pooling): how the classifier, the tagger and the embedder start."""

    def __init__(
        self,
        folder: str | Path,
        threads: int = 1,
        max_length: int | None = None,
        model_file: str | Path | None = None,
        memory_arena: bool = True,
        engine: str = "onnx",
        files: Files = PLAIN,
    ):
        folder = Path(folder)
        model = open_encoder(engine, model_file or folder, threads=threads, memory_arena=memory_arena, files=files)
        self._start(model, TextTokenizer(folder, max_length=max_length, files=files), folder, files)

    @classmethod
    def around(cls, model, folder: str | Path) -> Self:
        """One over any object with the graph's `run(inputs)` (a PyTorch model, a peer's)."""
        reader = cls.__new__(cls)
        reader._start(model, TextTokenizer(folder), Path(folder), PLAIN)
        return reader

    def _start(self, model, tokenizer: TextTokenizer, folder: Path, files: Files) -> None:
        self.model, self.tokenizer = model, tokenizer
        self.read_folder(folder, files)

    def read_folder(self, folder: Path, files: Files) -> None:
        """What the task needs from the folder besides the graph and the tokenizer."""


class TextClassifier(FolderEncoder):
    def read_folder(self, folder: Path, files: Files) -> None:
        self.labels = labels_of(files.json(folder / "config.json", default={}), folder / "config.json")

    def logits(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        return self.model.run(inputs)

    def classify(
        self,
        texts: str | Sequence[str],
        batch_size: int = 32,
        truncate: bool = True,
        max_batch_tokens: int | None = None,
        sort_by_length: bool = True,
    ) -> list[dict]:
        """One `{label, score, probabilities, truncated}` per text, in the order given.

        A text longer than the model's maximum is cut there (`truncated: true`), or refused with
        `truncate=False`. `sort_by_length=False` batches the texts as given (each batch padded to its
        longest text): the same answers for a float model, more padding.
        """
        return self.answer(self.prepare(texts, truncate), batch_size, max_batch_tokens, sort_by_length)

    def prepare(self, texts: str | Sequence[str], truncate: bool = True) -> list:
        """Checked and tokenized texts (one `tokenizers.Encoding` each), ready for `answer`."""
        return prepare(self.tokenizer, texts, truncate)

    def answer(
        self,
        encodings: Sequence,
        batch_size: int = 32,
        max_batch_tokens: int | None = None,
        sort_by_length: bool = True,
        raw_scores: bool = False,
    ) -> list[dict]:
        """Answers for prepared texts; `raw_scores` adds each label's logit."""
        if batch_size < 1:
            raise InputError(f"batch_size {batch_size} must be at least 1")
        n = len(encodings)
        lengths = [len(e.ids) for e in encodings]
        batches = (
            length_batches(lengths, batch_size, max_batch_tokens)
            if sort_by_length
            else [list(range(i, min(i + batch_size, n))) for i in range(0, n, batch_size)]
        )
        logits: np.ndarray | None = None
        for rows in batches:
            out = self.logits(self.tokenizer.pad([encodings[i] for i in rows]))
            if logits is None:
                logits = np.empty((n, out.shape[-1]), dtype=np.float32)
            logits[rows] = out
        probs = softmax(logits)
        names = self.labels or [str(i) for i in range(probs.shape[-1])]
        answers = []
        for row, raw, encoding in zip(probs, logits, encodings):
            best = int(row.argmax())
            answer = {
                "label": names[best],
                "score": float(row[best]),
                "probabilities": {k: float(x) for k, x in zip(names, row)},
                "truncated": bool(encoding.overflowing),
            }
            if raw_scores:
                answer["logits"] = {k: float(x) for k, x in zip(names, raw)}
            answers.append(answer)
        return answers


def prepare(tokenizer: TextTokenizer, texts: str | Sequence[str], truncate: bool = True) -> list:
    """Checked and tokenized texts; one longer than the model's maximum is cut, or refused with `truncate=False`."""
    texts = [texts] if isinstance(texts, str) else list(texts)
    check_texts(texts)
    encodings = tokenizer.tokenize(texts)
    if not truncate:
        cut = next((i for i, e in enumerate(encodings) if e.overflowing), None)
        if cut is not None:
            raise InputError(
                f"text {cut} is longer than the model's maximum of {tokenizer.max_length} "
                "tokens: shorten it, or allow truncation"
            )
    return encodings


def check_texts(texts: Sequence[str]) -> None:
    if not texts:
        raise InputError("no texts given: pass at least one text")
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise InputError(f"text {i} is a {type(text).__name__}, not a string: pass text")
        if not text.strip():
            raise InputError(f"text {i} is empty: pass text with at least one word")


def length_batches(lengths: Sequence[int], batch_size: int, max_batch_tokens: int | None = None) -> list[list[int]]:
    """Row indices grouped into batches of similar length, shortest first.

    A batch closes at `batch_size` texts or when its padded size (rows x longest) would pass
    `max_batch_tokens`; a single text longer than that budget still gets a batch of its own.
    """
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    batches: list[list[int]] = []
    current: list[int] = []
    for i in order:
        full = len(current) >= batch_size or (
            max_batch_tokens is not None and current and (len(current) + 1) * lengths[i] > max_batch_tokens
        )
        if full:
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    return batches


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(shifted)
    return e / e.sum(axis=-1, keepdims=True)
