"""Distributions, not single numbers: percentiles with bootstrap intervals and paired tests."""

from __future__ import annotations

import numpy as np

PERCENTILES = (50, 90, 99)


MIN_TAIL_SAMPLES = 10
"""A percentile is called stable once at least this many timings lie beyond it."""


def _as_rounds(samples_ms) -> list[np.ndarray]:
    """One array per measurement round; a flat list of timings is one round."""
    if len(samples_ms) and isinstance(samples_ms[0], (list, tuple, np.ndarray)):
        return [np.asarray(r, dtype=np.float64) for r in samples_ms if len(r)]
    return [np.asarray(samples_ms, dtype=np.float64)] if len(samples_ms) else []


def _boot_percentiles(rounds: list[np.ndarray], qs: list[float], n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """Percentiles `qs` of `n_boot` bootstrap replicates of the pooled timings: shape (n_boot, len(qs)).

    With several rounds, whole rounds are resampled and each keeps its own timings and size (a
    cluster bootstrap): timings within a round share the machine's state of that moment, so the
    round is the independent unit, and resampling timings inside the picked rounds as well would
    count their spread twice. With one round, the timings are resampled one by one.
    """
    if len(rounds) == 1:
        x = rounds[0]
        return np.percentile(x[rng.integers(0, x.size, size=(n_boot, x.size))], qs, axis=1).T
    picks = rng.integers(0, len(rounds), size=(n_boot, len(rounds)))
    if len({r.size for r in rounds}) == 1:
        stacked = np.stack(rounds)[picks].reshape(n_boot, -1)
        return np.percentile(stacked, qs, axis=1).T
    return np.array([np.percentile(np.concatenate([rounds[i] for i in row]), qs) for row in picks])


def tail_warnings(n: int) -> list[str]:
    out = []
    for p in PERCENTILES:
        beyond = n * (100 - p) / 100
        if beyond < MIN_TAIL_SAMPLES:
            needed = int(np.ceil(MIN_TAIL_SAMPLES * 100 / (100 - p)))
            out.append(
                f"p{p} rests on {beyond:.0f} of {n} timings beyond it: indicative only "
                f"(at least {needed} timings for a stable p{p})"
            )
    return out


def latency_summary(samples_ms, n_boot: int = 1000, seed: int = 0) -> dict:
    """p50/p90/p99 and mean with bootstrap 95% confidence intervals.

    `samples_ms` is one list of timings, or one list per measurement round (then whole rounds are
    resampled). `warnings` names the percentiles that rest on too few timings.
    """
    rounds = _as_rounds(samples_ms)
    if not rounds:
        return {"n": 0}
    x = np.concatenate(rounds)
    boot = _boot_percentiles(rounds, list(PERCENTILES), n_boot, np.random.default_rng(seed))
    out: dict = {"n": int(x.size), "rounds": len(rounds), "mean": float(x.mean()), "min": float(x.min())}
    for k, p in enumerate(PERCENTILES):
        estimates = boot[:, k]
        out[f"p{p}"] = float(np.percentile(x, p))
        out[f"p{p}_ci"] = [float(np.percentile(estimates, 2.5)), float(np.percentile(estimates, 97.5))]
    out["warnings"] = tail_warnings(int(x.size))
    return out


def speedup(reference_rounds, variant_rounds, n_boot: int = 1000, seed: int = 0) -> dict:
    """Reference p50 / variant p50 with a 95% interval, paired by round.

    Both were measured in the same rounds, so each bootstrap replicate draws one set of round
    indices for both: a slow moment of the machine slows both sides of the ratio, as it did.
    """
    ref, var = _as_rounds(reference_rounds), _as_rounds(variant_rounds)
    if not ref or not var:
        return {}
    ratio = float(np.median(np.concatenate(ref)) / np.median(np.concatenate(var)))
    paired = len(ref) == len(var) and len(ref) > 1
    if paired:  # the same generator state draws the same round indices for both sides
        draws = (
            _boot_percentiles(ref, [50], n_boot, np.random.default_rng(seed))[:, 0]
            / _boot_percentiles(var, [50], n_boot, np.random.default_rng(seed))[:, 0]
        )
    else:
        a, b = [np.concatenate(ref)], [np.concatenate(var)]
        draws = (
            _boot_percentiles(a, [50], n_boot, np.random.default_rng(seed))[:, 0]
            / _boot_percentiles(b, [50], n_boot, np.random.default_rng(seed + 1))[:, 0]
        )
    return {
        "ratio": ratio,
        "ci": [float(np.percentile(draws, 2.5)), float(np.percentile(draws, 97.5))],
        "paired_by_round": paired,
    }


def paired_latency_test(a_rounds, b_rounds) -> dict:
    """Is A's latency different from B's? Wilcoxon signed-rank test on the per-round log p50 ratios.

    Rounds are the paired unit (both ran in the same stretch of machine time), so machine drift
    between rounds cancels; with 8 rounds the smallest two-sided p-value is 2/256.
    """
    from scipy.stats import wilcoxon

    a, b = _as_rounds(a_rounds), _as_rounds(b_rounds)
    if len(a) != len(b) or len(a) < 2:
        raise ValueError("a paired latency test needs the same rounds, at least two, for both variants")
    per_round = np.array([np.log(np.median(x) / np.median(y)) for x, y in zip(a, b)])
    if np.all(per_round == 0):
        p = 1.0
    else:
        p = float(wilcoxon(per_round, zero_method="zsplit", alternative="two-sided").pvalue)
    return {
        "rounds": len(a),
        "p50_ratio_a_over_b": float(np.exp(np.median(per_round))),
        "rounds_a_slower": int(np.sum(per_round > 0)),
        "p_value": p,
        "significant": p < 0.05,
    }


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
    return {"reference_only_correct": only_ref, "variant_only_correct": only_var, "p_value": p, "significant": p < 0.05}


def classification_metrics(labels: list[int], preds: list[int], n_classes: int, n_boot: int = 1000) -> dict:
    from sklearn.metrics import confusion_matrix, f1_score, precision_recall_fscore_support

    y, p = np.asarray(labels), np.asarray(preds)
    correct = y == p
    precision, recall, f1, support = precision_recall_fscore_support(
        y, p, labels=list(range(n_classes)), zero_division=0
    )
    return {
        "examples": int(y.size),
        "accuracy": float(correct.mean()),
        "accuracy_ci": bootstrap_accuracy_ci(correct, n_boot),
        "macro_f1": float(f1_score(y, p, average="macro", labels=list(range(n_classes)), zero_division=0)),
        "per_class": {
            "precision": precision.tolist(),
            "recall": recall.tolist(),
            "f1": f1.tolist(),
            "support": support.tolist(),
        },
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
        curves.append(
            {
                "class": k,
                "average_precision": float(average_precision_score(positive, probs[:, k])),
                "precision": precision[keep].round(4).tolist(),
                "recall": recall[keep].round(4).tolist(),
            }
        )
    return curves


def calibration(labels: list[int], probs: np.ndarray, bins: int = 10) -> dict:
    """Expected calibration error and the reliability diagram's bins (top-label confidence, equal width).

    ECE = sum over bins of (share of examples) x |accuracy - mean confidence| (Guo et al. 2017).
    """
    y, probs = np.asarray(labels), np.asarray(probs, dtype=np.float64)
    confidence, predicted = probs.max(axis=1), probs.argmax(axis=1)
    correct = predicted == y
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    rows, ece = [], 0.0
    for b in range(bins):
        inside = which == b
        count = int(inside.sum())
        row = {
            "lower": round(float(edges[b]), 4),
            "upper": round(float(edges[b + 1]), 4),
            "count": count,
            "confidence": None,
            "accuracy": None,
        }
        if count:
            row["confidence"], row["accuracy"] = float(confidence[inside].mean()), float(correct[inside].mean())
            ece += count / y.size * abs(row["accuracy"] - row["confidence"])
        rows.append(row)
    return {
        "ece": float(ece),
        "bins": rows,
        "mean_confidence": float(confidence.mean()),
        "how": f"{bins} equal-width bins of the top label's probability",
    }


def changed_predictions(
    labels: list[int], reference_probs: np.ndarray, probs: np.ndarray, texts: list[str], excerpt: int = 240
) -> list[dict]:
    """The examples whose predicted label differs from the reference's, with both models' probabilities.

    Sorted by how far the variant moved the reference's own choice (largest first); `fixed` says the
    variant is right where the reference was wrong, `broke` the reverse.
    """
    ref, var = np.asarray(reference_probs, dtype=np.float64), np.asarray(probs, dtype=np.float64)
    ref_pred, var_pred = ref.argmax(axis=1), var.argmax(axis=1)
    rows = []
    for i in np.flatnonzero(ref_pred != var_pred):
        r, v, y = int(ref_pred[i]), int(var_pred[i]), int(labels[i])
        rows.append(
            {
                "index": int(i),
                "text": texts[i][:excerpt] + ("…" if len(texts[i]) > excerpt else ""),
                "true": y,
                "reference_label": r,
                "reference_probability": round(float(ref[i, r]), 4),
                "variant_label": v,
                "variant_probability": round(float(var[i, v]), 4),
                "reference_label_probability_in_variant": round(float(var[i, r]), 4),
                "effect": "fixed" if v == y else ("broke" if r == y else "both wrong"),
            }
        )
    return sorted(
        rows, key=lambda row: row["reference_probability"] - row["reference_label_probability_in_variant"], reverse=True
    )


def per_class_deltas(labels: list[int], preds: list[int], reference_preds: list[int], n_classes: int) -> dict:
    """Per class: the variant's precision, recall and F1 minus the reference's (points), and how many
    more (or fewer) texts it assigns to the class."""
    from sklearn.metrics import precision_recall_fscore_support

    classes = list(range(n_classes))
    mine = precision_recall_fscore_support(labels, preds, labels=classes, zero_division=0)[:3]
    theirs = precision_recall_fscore_support(labels, reference_preds, labels=classes, zero_division=0)[:3]
    out = {
        key: [round(100 * float(a - b), 3) for a, b in zip(m, t)]
        for key, m, t in zip(("precision", "recall", "f1"), mine, theirs)
    }
    out["predicted"] = [int(np.sum(np.asarray(preds) == k) - np.sum(np.asarray(reference_preds) == k)) for k in classes]
    return out


class CrossNodeComparison(ValueError):
    """Two latencies measured on different kinds of node: their ratio says more about the nodes."""


def compare_variants(results: dict, a: str, b: str, across_node_kinds: bool = False) -> dict:
    """Paired tests between two measured variants of one run: McNemar on their predictions of the same
    texts, and a round-paired test on every latency shape both were measured at.

    Latencies timed on different node kinds (`node_kind` of a profile) are refused unless
    `across_node_kinds`: the ratio would compare machines, not variants."""
    by_name = {v["name"]: v for v in results["variants"]}
    for name in (a, b):
        if name not in by_name:
            raise KeyError(name)
    va, vb = by_name[a], by_name[b]
    for profile, slot in va.get("profiles", {}).items():
        kind_a, kind_b = slot.get("node_kind"), vb.get("profiles", {}).get(profile, {}).get("node_kind")
        if kind_a and kind_b and kind_a != kind_b and not across_node_kinds:
            raise CrossNodeComparison(
                f"{a} was timed on node kind '{kind_a}' and {b} on '{kind_b}' under {profile}: "
                "their latencies compare machines, not variants; measure both on one node kind, "
                "or pass --across-node-kinds"
            )
    out: dict = {"a": a, "b": b, "accuracy": None, "latency": {}}
    truth = (results.get("eval") or {}).get("labels_true")
    if truth is not None and "predictions" in va and "predictions" in vb:
        y = np.asarray(truth)
        correct_a, correct_b = np.asarray(va["predictions"]) == y, np.asarray(vb["predictions"]) == y
        test = mcnemar(correct_b, correct_a)
        out["accuracy"] = {
            "a": float(correct_a.mean()),
            "b": float(correct_b.mean()),
            "a_only_correct": test["variant_only_correct"],
            "b_only_correct": test["reference_only_correct"],
            "p_value": test["p_value"],
            "significant": test["significant"],
        }
    for profile, shapes in va.get("latency_samples_ms", {}).items():
        for shape, rounds in shapes.items():
            other = vb.get("latency_samples_ms", {}).get(profile, {}).get(shape)
            if other and rounds and isinstance(rounds[0], list) and len(rounds) == len(other) and len(rounds) > 1:
                out["latency"][f"{profile}/{shape}"] = {
                    **paired_latency_test(rounds, other),
                    "speedup_b_over_a": speedup(rounds, other),
                }
    return out
