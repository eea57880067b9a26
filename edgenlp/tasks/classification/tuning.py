"""What the accuracy-budget search asks of a classifier: accuracy on the tuning split and a first latency look."""

from __future__ import annotations

from ..screening import median_ms
from .data import EvalSet


def tuning_quality(model_dir, tuning: EvalSet, threads: int = 1) -> float:
    """Accuracy (%) of an ONNX variant on the tuning split, one text at a time as deployed."""
    from ...runtime import TextClassifier

    classifier = TextClassifier(model_dir, threads=threads)
    hits = sum(
        int(classifier.logits(classifier.tokenizer.encode([t]))[0].argmax()) == y
        for t, y in zip(tuning.texts, tuning.labels)
    )
    return 100.0 * hits / max(1, len(tuning.texts))


def quality_drop(reference: float, value: float) -> float:
    """Accuracy points lost against the reference."""
    return reference - value


def screen_latency(model_dir, tuning: EvalSet, threads: int, n: int = 60, repeats: int = 3) -> float:
    """Batch-1 p50 (ms) at real lengths on `n` tuning texts: a short first look, to shortlist candidates
    for the harness, which measures them properly."""
    from ...runtime import TextClassifier

    classifier = TextClassifier(model_dir, threads=threads)
    return median_ms(classifier.logits, [classifier.tokenizer.encode([t]) for t in tuning.texts[:n]], repeats)
