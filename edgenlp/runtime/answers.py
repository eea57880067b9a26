"""A question and a context in, the answer span out: extractive question answering, torch-free.

The context is cut into windows of `max_length` tokens (the question, then as much context as fits),
each overlapping the previous by `stride` tokens, as SQuAD models are trained and evaluated; the model
scores every token as the answer's start and end, and the answer is the best span across all windows
(start before end, at most `max_answer_tokens` long, inside the context). The answer has the Hugging
Face inference API's shape: `{"answer", "score", "start", "end"}`, offsets into the context as given,
`score` the span's start probability times its end probability in its window.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .classifier import length_batches, softmax
from .engines import open_encoder
from .errors import InputError
from .files import PLAIN, Files
from .text import TextTokenizer, configured_max_length, read_tokenizer

MAX_LENGTH, STRIDE, MAX_ANSWER_TOKENS, TOP_K = 384, 128, 30, 20
OUTPUTS = ("start_logits", "end_logits")


class SpanModel:
    """An encoder graph with start and end logits as one `run(inputs) -> (batch, tokens, 2)` array."""

    def __init__(self, graph):
        self.graph = graph

    def run(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        feed = {name: inputs[name] for name in self.graph.input_names}
        start, end = self.graph.run_outputs(list(OUTPUTS), feed)
        return np.stack([start, end], axis=-1)


@dataclass(frozen=True)
class Question:
    """A question and its context, tokenized into windows (`prepare`)."""

    question: str
    context: str
    windows: list[Any]

    @property
    def ids(self) -> list[int]:
        """The longest window's tokens: what the server's batcher weighs a request by."""
        return max((w.ids for w in self.windows), key=len)

    @property
    def overflowing(self) -> list:
        return []


class PairWindows:
    """A tokenizer cutting (question, context) pairs into overlapping windows of the context."""

    def __init__(self, folder: Path, max_length: int = MAX_LENGTH, stride: int = STRIDE, files: Files = PLAIN):
        # the model's own limit caps the window; the overlap is at most half a window
        max_length = min(max_length, configured_max_length(folder, files))
        self.max_length, self.stride = max_length, min(stride, max_length // 2)
        self.text = TextTokenizer(folder, max_length=max_length, files=files)
        self._tok = read_tokenizer(Path(folder) / "tokenizer.json", files)
        self._tok.no_padding()
        self._tok.enable_truncation(max_length, stride=self.stride, strategy="only_second")
        self._question = read_tokenizer(Path(folder) / "tokenizer.json", files)
        self._question.no_truncation()
        self._question.no_padding()
        self._special = len(self._tok.encode("a", "b").ids) - 2  # [CLS] a [SEP] b [SEP]: 3 for BERT

    def windows(self, question: str, context: str) -> list:
        room = self.max_length - self._special - len(self._question.encode(question, add_special_tokens=False).ids)
        if room <= self.stride:
            raise InputError(
                f"the question is too long: it leaves {max(room, 0)} of the window's {self.max_length} tokens for the "
                f"context, no more than the {self.stride}-token stride: shorten the question"
            )
        first = self._tok.encode(question, context)
        return [first, *first.overflowing]


def best_span(
    scores: Sequence[np.ndarray], windows: Sequence, max_answer_tokens: int = MAX_ANSWER_TOKENS, top_k: int = TOP_K
) -> tuple[int, int, float] | None:
    """(start char, end char, probability) of the best span over all windows; `scores`: (tokens, 2) each."""
    best: tuple[float, int, int, float] | None = None
    for logits, window in zip(scores, windows):
        context = np.array([s == 1 for s in window.sequence_ids], dtype=bool)
        if not context.any():
            continue
        start_logits, end_logits = logits[: len(context), 0], logits[: len(context), 1]
        allowed = context.copy()
        allowed[0] = True  # the first token takes the probability of "no answer here", as in training
        start_p = np.where(allowed, softmax(np.where(allowed, start_logits, -np.inf)), 0.0)
        end_p = np.where(allowed, softmax(np.where(allowed, end_logits, -np.inf)), 0.0)
        masked_start = np.where(context, start_logits, -np.inf)
        masked_end = np.where(context, end_logits, -np.inf)
        starts = np.argsort(-masked_start, kind="stable")[:top_k]
        ends = np.argsort(-masked_end, kind="stable")[:top_k]
        for s in starts:
            if not context[s]:
                break
            for e in ends:
                if not context[e]:
                    break
                if e < s or e - s + 1 > max_answer_tokens:
                    continue
                value = float(start_logits[s] + end_logits[e])
                if best is None or value > best[0]:
                    best = (value, window.offsets[s][0], window.offsets[e][1], float(start_p[s] * end_p[e]))
    return None if best is None else best[1:]


class QuestionAnswerer:
    """Answers from a question-answering folder, batched by length like the classifier."""

    def __init__(
        self,
        folder: str | Path,
        threads: int = 1,
        max_length: int | None = None,
        model_file: str | Path | None = None,
        memory_arena: bool = True,
        engine: str = "onnx",
        files: Files = PLAIN,
        stride: int = STRIDE,
    ):
        folder = Path(folder)
        graph = open_encoder(engine, model_file or folder, threads=threads, memory_arena=memory_arena, files=files)
        self.model = SpanModel(graph)
        self.pairs = PairWindows(folder, min(max_length or MAX_LENGTH, MAX_LENGTH), stride, files)
        self.tokenizer = self.pairs.text

    @classmethod
    def around(cls, model, folder: str | Path, max_length: int = MAX_LENGTH, stride: int = STRIDE) -> QuestionAnswerer:
        """An answerer over any object with `run(inputs) -> (batch, tokens, 2)` (a PyTorch model, a peer's)."""
        answerer = cls.__new__(cls)
        answerer.model, answerer.pairs = model, PairWindows(Path(folder), max_length, stride)
        answerer.tokenizer = answerer.pairs.text
        return answerer

    def prepare(self, questions: Sequence[dict] | dict, truncate: bool = True) -> list[Question]:
        """Checked questions (`{"question", "context"}` each) cut into windows, ready for `answer`."""
        items = [questions] if isinstance(questions, dict) else list(questions)
        if not items:
            raise InputError("no questions given: pass at least one {question, context}")
        prepared = []
        for i, item in enumerate(items):
            question, context = (item.get("question"), item.get("context")) if isinstance(item, dict) else (None, None)
            if not isinstance(question, str) or not question.strip():
                raise InputError(f"question {i} is missing or empty: pass {{'question': ..., 'context': ...}}")
            if not isinstance(context, str) or not context.strip():
                raise InputError(f"question {i} has no context: pass the text the answer is to be found in")
            prepared.append(Question(question, context, self.pairs.windows(question, context)))
        return prepared

    def span_scores(self, prepared: Sequence[Question], batch_size: int = 32, max_batch_tokens: int | None = None):
        """Every window's (tokens, 2) start and end logits, per question."""
        if batch_size < 1:
            raise InputError(f"batch_size {batch_size} must be at least 1")
        windows = [(q, w) for q, item in enumerate(prepared) for w in item.windows]
        found: list[np.ndarray] = [np.empty(0)] * len(windows)
        for rows in length_batches([len(w.ids) for _, w in windows], batch_size, max_batch_tokens):
            out = self.model.run(self.tokenizer.pad([windows[i][1] for i in rows]))
            for row, i in enumerate(rows):
                found[i] = out[row, : len(windows[i][1].ids)].astype(np.float64)
        per_question: list[list[np.ndarray]] = [[] for _ in prepared]
        for (q, _), scores in zip(windows, found):
            per_question[q].append(scores)
        return per_question

    def answer(
        self, prepared: Sequence[Question], batch_size: int = 32, max_batch_tokens: int | None = None
    ) -> list[dict]:
        """One `{"answer", "score", "start", "end"}` per prepared question (an empty answer if no span fits)."""
        answers = []
        for item, scores in zip(prepared, self.span_scores(prepared, batch_size, max_batch_tokens)):
            span = best_span(scores, item.windows)
            if span is None:
                answers.append({"answer": "", "score": 0.0, "start": 0, "end": 0})
                continue
            start, end, score = span
            answers.append({"answer": item.context[start:end], "score": score, "start": start, "end": end})
        return answers

    def answers(self, questions: Sequence[dict] | dict, batch_size: int = 32) -> list[dict]:
        """The answer to each `{"question", "context"}`, in the order given."""
        return self.answer(self.prepare(questions), batch_size)
