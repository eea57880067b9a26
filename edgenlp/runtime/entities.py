"""Text in, named entities out: a token classifier on any engine, its subword tags read as word-level spans.

A word is tagged by its first subword (what training labels; the other subwords are not judged), and
consecutive words whose tags say one entity (`B-X` then `I-X`, IOB2; an `I-X` after another type
opens a new one, as seqeval reads it) become one span, with character offsets into the text as given.
The spans have the shape of the Hugging Face inference API's aggregated token classification:
`{"entity_group", "score", "word", "start", "end"}`, `score` the mean of the words' probabilities.
Text already split into words (CoNLL data) is tagged word by word with `tag_words`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .classifier import FolderEncoder, labels_of, length_batches, prepare, softmax
from .errors import BundleError, InputError
from .files import Files

OUTSIDE = "O"


def entity_type(label: str) -> tuple[str, str]:
    """(`B`, `I` or `O`, type) of a tag; a tag without a prefix is inside an entity of its own name."""
    if label == OUTSIDE:
        return OUTSIDE, ""
    prefix, dash, kind = label.partition("-")
    if dash and prefix in ("B", "I") and kind:
        return prefix, kind
    return "I", label


def spans(tags: Sequence[str]) -> list[tuple[str, int, int]]:
    """(type, first, last) of each entity in a sequence of IOB2 tags (seqeval's reading, last inclusive)."""
    found: list[tuple[str, int, int]] = []
    current: list = []
    for i, tag in enumerate(tags):
        prefix, kind = entity_type(tag)
        if prefix == "I" and current and current[0] == kind and current[2] == i - 1:
            current[2] = i
            continue
        if current:
            found.append(tuple(current))  # type: ignore[arg-type]
        current = [kind, i, i] if prefix != OUTSIDE else []
    if current:
        found.append(tuple(current))  # type: ignore[arg-type]
    return found


@dataclass(frozen=True)
class PreparedText:
    """A text and its tokens (`prepare`): the spans' offsets point into the text."""

    text: str
    encoding: Any

    @property
    def ids(self) -> list[int]:
        return self.encoding.ids

    @property
    def overflowing(self) -> list:
        return self.encoding.overflowing


@dataclass
class TaggedWord:
    tag: int
    score: float
    start: int
    end: int


class TokenTagger(FolderEncoder):
    """Named entities from a token-classification folder, batched by length like the classifier."""

    def read_folder(self, folder: Path, files: Files) -> None:
        self.labels = labels_of(files.json(folder / "config.json", default={}), folder / "config.json")
        if not self.labels:
            raise BundleError(f"{folder / 'config.json'} names no tags (id2label): a tagger needs its tag names")

    def prepare(self, texts: str | Sequence[str], truncate: bool = True) -> list[PreparedText]:
        """Checked and tokenized texts, ready for `answer` (a server tokenises on arrival, batches later)."""
        texts = [texts] if isinstance(texts, str) else list(texts)
        return [PreparedText(t, e) for t, e in zip(texts, prepare(self.tokenizer, texts, truncate))]

    def prepare_words(self, sentences: Sequence[Sequence[str]], truncate: bool = True) -> list:
        """Sentences already split into words (CoNLL), tokenized with each subword knowing its word."""
        for i, words in enumerate(sentences):
            if not words or not all(isinstance(w, str) and w.strip() for w in words):
                raise InputError(f"sentence {i} has no words or an empty one: pass lists of non-empty words")
        encodings = self.tokenizer.tokenize_words(sentences)
        if not truncate:
            cut = next((i for i, e in enumerate(encodings) if e.overflowing), None)
            if cut is not None:
                raise InputError(
                    f"sentence {cut} is longer than the model's maximum of {self.tokenizer.max_length} tokens: "
                    "shorten it, or allow truncation"
                )
        return encodings

    def token_probabilities(
        self, encodings: Sequence, batch_size: int = 32, max_batch_tokens: int | None = None
    ) -> list[np.ndarray]:
        """(tokens, tags) probabilities per prepared text, batched by length."""
        if batch_size < 1:
            raise InputError(f"batch_size {batch_size} must be at least 1")
        out: list[np.ndarray] = [np.empty(0)] * len(encodings)
        for rows in length_batches([len(e.ids) for e in encodings], batch_size, max_batch_tokens):
            logits = self.model.run(self.tokenizer.pad([encodings[i] for i in rows]))
            for row, i in enumerate(rows):
                out[i] = softmax(logits[row, : len(encodings[i].ids)].astype(np.float64))
        return out

    @staticmethod
    def words(encoding, probabilities: np.ndarray) -> dict[int, TaggedWord]:
        """Each word's tag (its first subword's), probability and character span (all its subwords')."""
        found: dict[int, TaggedWord] = {}
        for position, (word, (start, end)) in enumerate(zip(encoding.word_ids, encoding.offsets)):
            if word is None:
                continue
            if word not in found:
                tag = int(probabilities[position].argmax())
                found[word] = TaggedWord(tag, float(probabilities[position, tag]), start, end)
            else:
                found[word].end = max(found[word].end, end)
        return found

    def tag_words(self, sentences: Sequence[Sequence[str]], batch_size: int = 32) -> list[list[int]]:
        """The tag index of every word of sentences given as words; words past the model's maximum get `O`."""
        encodings = self.prepare_words(sentences)
        outside = self.labels.index(OUTSIDE) if OUTSIDE in self.labels else 0
        tagged = []
        for words, encoding, probs in zip(sentences, encodings, self.token_probabilities(encodings, batch_size)):
            found = self.words(encoding, probs)
            tagged.append([found[w].tag if w in found else outside for w in range(len(words))])
        return tagged

    def answer(
        self, prepared: Sequence[PreparedText], batch_size: int = 32, max_batch_tokens: int | None = None
    ) -> list[list[dict]]:
        """The entities of prepared texts, batched by length."""
        encodings = [p.encoding for p in prepared]
        answers = []
        for item, probs in zip(prepared, self.token_probabilities(encodings, batch_size, max_batch_tokens)):
            found = self.words(item.encoding, probs)
            order = sorted(found)
            tags = [self.labels[found[w].tag] for w in order]
            entities = []
            for kind, first, last in spans(tags):
                words = [found[w] for w in order[first : last + 1]]
                start, end = words[0].start, words[-1].end
                entities.append(
                    {
                        "entity_group": kind,
                        "score": float(np.mean([w.score for w in words])),
                        "word": item.text[start:end],
                        "start": start,
                        "end": end,
                    }
                )
            answers.append(entities)
        return answers

    def entities(
        self,
        texts: str | Sequence[str],
        batch_size: int = 32,
        truncate: bool = True,
        max_batch_tokens: int | None = None,
    ) -> list[list[dict]]:
        """The entities of each text, in the order given: `[{"entity_group", "score", "word", "start", "end"}]`.

        A text longer than the model's maximum is tagged up to the cut (or refused with `truncate=False`).
        """
        return self.answer(self.prepare(texts, truncate), batch_size, max_batch_tokens)

    def token_tags(self, texts: str | Sequence[str]) -> list[list[dict]]:
        """Every subword tagged other than `O`, as transformers.js's token-classification pipeline lists them:
        `{"entity", "score", "index"}` (index: the position in the model's input)."""
        encodings = [p.encoding for p in self.prepare(texts)]
        out = []
        for encoding, probs in zip(encodings, self.token_probabilities(encodings)):
            tagged = []
            for index, (word, row) in enumerate(zip(encoding.word_ids, probs)):
                best = int(row.argmax())
                if word is not None and self.labels[best] != OUTSIDE:
                    tagged.append({"entity": self.labels[best], "score": float(row[best]), "index": index})
            out.append(tagged)
        return out
