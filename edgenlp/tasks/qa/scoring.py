"""SQuAD v1.1's official exact match and F1 (its normalisation: lower case, no punctuation, no articles, single
spaces), the best over a question's gold answers, with bootstrap and paired intervals over questions."""

from __future__ import annotations

import re
import string
from collections import Counter

import numpy as np

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = set(string.punctuation)


def normalize(text: str) -> str:
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def f1(prediction: str, truth: str) -> float:
    ours, theirs = normalize(prediction).split(), normalize(truth).split()
    common = sum((Counter(ours) & Counter(theirs)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(ours), common / len(theirs)
    return 2 * precision * recall / (precision + recall)


def per_question(predictions: list[str], answers: list[list[str]]) -> tuple[np.ndarray, np.ndarray]:
    """(exact match, F1) of each prediction, each the best over the question's gold answers (0 or 1)."""
    em = np.array([max(float(normalize(p) == normalize(t)) for t in truths) for p, truths in zip(predictions, answers)])
    f = np.array([max(f1(p, t) for t in truths) for p, truths in zip(predictions, answers)])
    return em, f


def _interval(values: np.ndarray, picks: list[np.ndarray]) -> list[float]:
    draws = [100 * float(values[p].mean()) for p in picks]
    return (
        [float(np.percentile(draws, 2.5)), float(np.percentile(draws, 97.5))]
        if draws
        else [100 * float(values.mean())] * 2
    )


def squad_scores(
    predictions: list[str], answers: list[list[str]], n_boot: int = 0, reference: list[str] | None = None, seed: int = 0
) -> dict:
    """EM and F1 x100 with bootstrap intervals over questions; given the reference's answers, the F1
    difference with an interval from the same resampled questions (paired)."""
    em, f = per_question(predictions, answers)
    rng = np.random.default_rng(seed)
    picks = [rng.integers(0, len(f), len(f)) for _ in range(max(0, n_boot))]
    out = {
        "exact_match": 100 * float(em.mean()),
        "f1": 100 * float(f.mean()),
        "exact_match_ci": _interval(em, picks),
        "f1_ci": _interval(f, picks),
    }
    if reference is not None:
        _, ref_f = per_question(reference, answers)
        delta = f - ref_f
        out["f1_delta_vs_reference"] = 100 * float(delta.mean())
        out["f1_delta_ci"] = _interval(delta, picks) if picks else None
    return out
