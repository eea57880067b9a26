"""What the accuracy-budget search asks of a tagger: entity F1 on the tuning sentences, a latency look."""

from __future__ import annotations

from ..screening import median_ms
from .data import EvalSet
from .measure import entity_types
from .scoring import entity_scores


def tuning_quality(model_dir, tuning: EvalSet, threads: int = 1) -> float:
    """Entity F1 x100 of an ONNX variant on the tuning sentences, one sentence at a time as deployed."""
    from ...runtime.entities import TokenTagger

    tagger = TokenTagger(model_dir, threads=threads)
    predicted = [[tagger.labels[t] for t in tagger.tag_words([words], batch_size=1)[0]] for words in tuning.words]
    return entity_scores(tuning.tags, predicted, entity_types(tagger.labels))["entity_f1"]


def quality_drop(reference: float, value: float) -> float:
    """Entity-F1 points lost against the reference."""
    return reference - value


def screen_latency(model_dir, tuning: EvalSet, threads: int, n: int = 60, repeats: int = 3) -> float:
    """Batch-1 p50 (ms) at real lengths on `n` tuning sentences: a first look, to shortlist candidates."""
    from ...runtime.entities import TokenTagger

    tagger = TokenTagger(model_dir, threads=threads)
    return median_ms(tagger.model.run, [tagger.tokenizer.encode([t]) for t in tuning.texts[:n]], repeats)
