"""Entity-level precision, recall and F1 (seqeval's reading of IOB2), with bootstrap and paired intervals.

An entity counts as found only when its type and its exact first and last word match a gold entity
(CoNLL's rule). Counts are kept per sentence, so that resampling sentences for an interval costs a
sum, not a rescoring; `tests/test_ner.py` holds these figures against seqeval's own.
"""

from __future__ import annotations

import numpy as np

from ...runtime.entities import spans


def sentence_counts(gold: list[list[str]], predicted: list[list[str]], types: list[str]) -> np.ndarray:
    """(sentences, types + 1, 3): true positives, predicted and gold entities per sentence, per type
    (the last row: all types together)."""
    index = {t: i for i, t in enumerate(types)}
    counts = np.zeros((len(gold), len(types) + 1, 3), dtype=np.int64)
    for row, (g, p) in enumerate(zip(gold, predicted)):
        truth, found = set(spans(g)), set(spans(p))
        for kind, *_ in truth & found:
            counts[row, index[kind], 0] += 1
        for kind, *_ in found:
            if kind in index:
                counts[row, index[kind], 1] += 1
        for kind, *_ in truth:
            counts[row, index[kind], 2] += 1
        counts[row, -1] = counts[row, :-1].sum(0)
        counts[row, -1, 1] = len(found)  # an entity of a type the gold data lacks is still a false positive
    return counts


def prf(total: np.ndarray) -> tuple[float, float, float]:
    """(precision, recall, F1) x100 of summed (true positives, predicted, gold); 0 where undefined."""
    tp, pred, gold = (float(x) for x in total)
    p = 100 * tp / pred if pred else 0.0
    r = 100 * tp / gold if gold else 0.0
    return p, r, (2 * p * r / (p + r) if p + r else 0.0)


def entity_scores(
    gold: list[list[str]],
    predicted: list[list[str]],
    types: list[str],
    n_boot: int = 0,
    reference: list[list[str]] | None = None,
    seed: int = 0,
) -> dict:
    """Micro precision / recall / F1 x100 with a bootstrap interval over sentences, F1 per type, and given the
    reference's tags the F1 difference with an interval from the same resampled sentences (paired)."""
    counts = sentence_counts(gold, predicted, types)
    ref_counts = sentence_counts(gold, reference, types) if reference is not None else None
    p, r, f1 = prf(counts[:, -1].sum(0))
    out: dict = {
        "entity_precision": p,
        "entity_recall": r,
        "entity_f1": f1,
        "entities_gold": int(counts[:, -1, 2].sum()),
        "entities_predicted": int(counts[:, -1, 1].sum()),
        "per_type": {
            t: dict(zip(("precision", "recall", "f1"), prf(counts[:, i].sum(0))), support=int(counts[:, i, 2].sum()))
            for i, t in enumerate(types)
        },
    }
    rng = np.random.default_rng(seed)
    draws, deltas = [], []
    for _ in range(max(0, n_boot)):
        pick = rng.integers(0, len(gold), len(gold))
        one = prf(counts[pick, -1].sum(0))[2]
        draws.append(one)
        if ref_counts is not None:
            deltas.append(one - prf(ref_counts[pick, -1].sum(0))[2])
    out["entity_f1_ci"] = [float(np.percentile(draws, 2.5)), float(np.percentile(draws, 97.5))] if draws else [f1, f1]
    if ref_counts is not None:
        out["entity_f1_delta_vs_reference"] = f1 - prf(ref_counts[:, -1].sum(0))[2]
        out["entity_f1_delta_ci"] = (
            [float(np.percentile(deltas, 2.5)), float(np.percentile(deltas, 97.5))] if deltas else None
        )
    return out
