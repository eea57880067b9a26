"""Distributions, not single numbers: percentiles with bootstrap intervals and paired tests."""

from __future__ import annotations

import numpy as np

PERCENTILES = (50, 90, 99)


def _two_stage_resample(rounds: list[np.ndarray], n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """Bootstrap that resamples whole rounds, then samples within each picked round.

    Timings within one round share the machine's state of that moment (another tenant, a clock
    change), so they are not independent: resampling single timings gives intervals that two runs
    on different minutes fail to share. Resampling rounds first carries that drift into the interval.
    """
    sizes = np.array([len(r) for r in rounds])
    n = int(sizes.sum())
    out = np.empty((n_boot, n))
    for b in range(n_boot):
        picked = rng.integers(0, len(rounds), size=len(rounds))
        parts = [rounds[i][rng.integers(0, sizes[i], size=sizes[i])] for i in picked]
        drawn = np.concatenate(parts)
        out[b] = np.resize(drawn, n)
    return out


def latency_summary(samples_ms: list[float] | list[list[float]], n_boot: int = 1000, seed: int = 0) -> dict:
    """p50/p90/p99 and mean with bootstrap 95% confidence intervals.

    `samples_ms` is either one list of timings (independent bootstrap) or one list per
    measurement round (two-stage bootstrap over rounds, then timings).
    """
    grouped = bool(samples_ms) and isinstance(samples_ms[0], (list, tuple, np.ndarray))
    rounds = [np.asarray(r, dtype=np.float64) for r in samples_ms if len(r)] if grouped else []
    x = np.concatenate(rounds) if grouped and rounds else np.asarray([] if grouped else samples_ms, dtype=np.float64)
    if x.size == 0:
        return {"n": 0}
    rng = np.random.default_rng(seed)
    if len(rounds) > 1:
        boot = _two_stage_resample(rounds, n_boot, rng)
    else:
        boot = x[rng.integers(0, x.size, size=(n_boot, x.size))]
    out: dict = {"n": int(x.size), "rounds": max(1, len(rounds)), "mean": float(x.mean()), "min": float(x.min())}
    for p in PERCENTILES:
        estimates = np.percentile(boot, p, axis=1)
        out[f"p{p}"] = float(np.percentile(x, p))
        out[f"p{p}_ci"] = [float(np.percentile(estimates, 2.5)), float(np.percentile(estimates, 97.5))]
    return out


def bootstrap_accuracy_ci(correct: np.ndarray, n_boot: int = 1000, seed: int = 0) -> list[float]:
    rng = np.random.default_rng(seed)
    means = correct[rng.integers(0, correct.size, size=(n_boot, correct.size))].mean(axis=1)
    return [float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))]


def mcnemar(reference_correct: np.ndarray, variant_correct: np.ndarray) -> dict:
    """Exact McNemar test on the discordant pairs: is the variant's accuracy change real?"""
    from scipy.stats import binomtest

    only_ref = int(np.sum(reference_correct & ~variant_correct))
    only_var = int(np.sum(~reference_correct & variant_correct))
    n = only_ref + only_var
    p = 1.0 if n == 0 else float(binomtest(only_var, n, 0.5).pvalue)
    return {"reference_only_correct": only_ref, "variant_only_correct": only_var, "p_value": p,
            "significant": p < 0.05}


def classification_metrics(labels: list[int], preds: list[int], n_classes: int, n_boot: int = 1000) -> dict:
    from sklearn.metrics import confusion_matrix, f1_score, precision_recall_fscore_support

    y, p = np.asarray(labels), np.asarray(preds)
    correct = y == p
    precision, recall, f1, support = precision_recall_fscore_support(
        y, p, labels=list(range(n_classes)), zero_division=0)
    return {
        "examples": int(y.size),
        "accuracy": float(correct.mean()),
        "accuracy_ci": bootstrap_accuracy_ci(correct, n_boot),
        "macro_f1": float(f1_score(y, p, average="macro", labels=list(range(n_classes)), zero_division=0)),
        "per_class": {"precision": precision.tolist(), "recall": recall.tolist(), "f1": f1.tolist(),
                      "support": support.tolist()},
        "confusion_matrix": confusion_matrix(y, p, labels=list(range(n_classes))).tolist(),
    }


def pr_curves(labels: list[int], probs: np.ndarray, points: int = 50) -> list[dict]:
    """One-vs-rest precision-recall curves, thinned to about `points` points each for the report."""
    from sklearn.metrics import average_precision_score, precision_recall_curve

    y = np.asarray(labels)
    curves = []
    for k in range(probs.shape[1]):
        positive = (y == k).astype(int)
        if positive.sum() == 0:
            continue
        precision, recall, _ = precision_recall_curve(positive, probs[:, k])
        keep = np.unique(np.linspace(0, len(precision) - 1, min(points, len(precision))).astype(int))
        curves.append({"class": k, "average_precision": float(average_precision_score(positive, probs[:, k])),
                       "precision": precision[keep].round(4).tolist(), "recall": recall[keep].round(4).tolist()})
    return curves
