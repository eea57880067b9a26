"""What the accuracy-budget search asks of an embedding model: Spearman on tuning pairs, a latency look."""

from __future__ import annotations

import numpy as np

from ..screening import median_ms
from .data import EvalSet
from .measure import pair_cosines, spearman


def tuning_quality(model_dir, tuning: EvalSet, threads: int = 1) -> float:
    """Spearman x100 of an ONNX variant on the tuning pairs, each sentence embedded alone as deployed."""
    from ...runtime.embedding import TextEmbedder

    embedder = TextEmbedder(model_dir, threads=threads)
    vectors = np.concatenate([embedder.vectors(embedder.tokenizer.encode([t])) for t in tuning.sentences])
    return 100.0 * spearman(pair_cosines(vectors, tuning.pairs), np.asarray(tuning.scores))


def quality_drop(reference: float, value: float) -> float:
    """Spearman points lost against the reference."""
    return reference - value


def screen_latency(model_dir, tuning: EvalSet, threads: int, n: int = 60, repeats: int = 3) -> float:
    """Batch-1 p50 (ms) at real lengths on `n` tuning sentences: a first look, to shortlist candidates."""
    from ...runtime.embedding import TextEmbedder

    embedder = TextEmbedder(model_dir, threads=threads)
    return median_ms(embedder.model.run, [embedder.tokenizer.encode([t]) for t in tuning.sentences[:n]], repeats)
