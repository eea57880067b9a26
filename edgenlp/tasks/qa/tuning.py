"""What the accuracy-budget search asks of a reader: F1 on the tuning questions, a latency look."""

from __future__ import annotations

from ..screening import median_ms
from .data import EvalSet
from .scoring import squad_scores


def tuning_quality(model_dir, tuning: EvalSet, threads: int = 1) -> float:
    """SQuAD F1 x100 of an ONNX variant on the tuning questions, one question at a time as deployed."""
    from ...runtime.answers import QuestionAnswerer

    reader = QuestionAnswerer(model_dir, threads=threads)
    found = [reader.answers([{"question": q.question, "context": q.context}])[0]["answer"] for q in tuning.questions]
    return squad_scores(found, [list(q.answers) for q in tuning.questions])["f1"]


def quality_drop(reference: float, value: float) -> float:
    """F1 points lost against the reference."""
    return reference - value


def screen_latency(model_dir, tuning: EvalSet, threads: int, n: int = 30, repeats: int = 3) -> float:
    """Batch-1 p50 (ms) of `n` tuning questions' first windows: a first look, to shortlist candidates."""
    from ...runtime.answers import QuestionAnswerer

    reader = QuestionAnswerer(model_dir, threads=threads)
    return median_ms(
        reader.model.run,
        [reader.tokenizer.pad([reader.pairs.windows(q.question, q.context)[0]]) for q in tuning.questions[:n]],
        repeats,
    )
