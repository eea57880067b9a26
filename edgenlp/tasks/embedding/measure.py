"""The harness side: embeddings' quality against the gold scores and against the reference's vectors.

Quality is Spearman's correlation (x100) between the cosine of each test pair's vectors and its gold
score, as STS results are reported, with a bootstrap interval over pairs and a paired interval of the
difference to the reference. Faithfulness to the reference: the cosine of every sentence's vector to the
reference's (mean, 1st percentile, minimum, a histogram) and nearest-neighbour agreement: for each query
sentence, the share of the reference's 10 nearest sentences of the corpus (the test split's distinct
sentences) that the variant also puts in its 10 nearest. Timing is the encoder's: one sentence at real
lengths (and fixed lengths), end to end (tokenise, run, pool), and batches of 32 for indexing.
"""

from __future__ import annotations

import numpy as np

from ..classification.measure import (  # noqa: F401  (the encoder's checks and timing are the classifier's)
    check_profiles,
    encoder_timings,
    speedups,
    truncated_input,
    workloads,
)
from .session import unpack

TOP_K = 10
HISTOGRAM_EDGES = [0.0, 0.9, 0.95, 0.97, 0.98, 0.99, 0.995, 0.999, 0.9999, 1.0001]


def speed_targets(profile: dict) -> list[tuple[str, str]]:
    """One sentence at each measured length, and sentences in batches (indexing a corpus)."""
    targets = [
        ("real lengths" if s == "real" else f"{s} tokens", "p50_ms" if s == "real" else f"p50_ms_len{s}")
        for s in profile["seq_lengths"]
    ]
    if profile.get("throughput_batch"):
        targets.append((f"batches of {profile['throughput_batch']}", "ms_per_sentence_batch"))
    return targets


def eval_request(candidate, reference) -> dict:
    return {}


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-12)


def pair_cosines(vectors: np.ndarray, pairs: list) -> np.ndarray:
    u = _unit(vectors)
    idx = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    return (u[idx[:, 0]] * u[idx[:, 1]]).sum(-1)


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(x, y).statistic)


def spearman_figures(cos: np.ndarray, gold: np.ndarray, ref_cos: np.ndarray | None, n_boot: int, seed: int = 0) -> dict:
    """Spearman x100 with a bootstrap interval over pairs, and (given the reference's cosines) the
    difference with an interval from the same resampled pairs (paired)."""
    from scipy.stats import rankdata

    rng = np.random.default_rng(seed)
    value = 100 * spearman(cos, gold)
    draws, deltas = [], []
    for _ in range(max(0, n_boot)):
        pick = rng.integers(0, len(gold), len(gold))
        g = rankdata(gold[pick])
        one = 100 * float(np.corrcoef(rankdata(cos[pick]), g)[0, 1])
        draws.append(one)
        if ref_cos is not None:
            deltas.append(one - 100 * float(np.corrcoef(rankdata(ref_cos[pick]), g)[0, 1]))
    out = {
        "spearman": value,
        "spearman_ci": [float(np.percentile(draws, 2.5)), float(np.percentile(draws, 97.5))]
        if draws
        else [value, value],
    }
    if ref_cos is not None:
        out["spearman_delta_vs_reference"] = value - 100 * spearman(ref_cos, gold)
        out["spearman_delta_ci"] = (
            [float(np.percentile(deltas, 2.5)), float(np.percentile(deltas, 97.5))] if deltas else None
        )
    return out


def nearest(vectors: np.ndarray, queries: list[int], k: int = TOP_K) -> np.ndarray:
    """Each query's k nearest sentences of the corpus by cosine, itself excluded (a sentence is its own nearest)."""
    u = _unit(vectors)
    sims = u[queries] @ u.T
    sims[np.arange(len(queries)), queries] = -np.inf
    return np.argsort(-sims, axis=1, kind="stable")[:, :k]


def retrieval_agreement(
    vectors: np.ndarray, reference: np.ndarray, queries: list[int], n_boot: int, k: int = TOP_K
) -> dict:
    """Recall@k of the reference's top k: the share of them the variant also ranks in its top k."""
    ours, theirs = nearest(vectors, queries, k), nearest(reference, queries, k)
    per_query = np.array([len(set(a) & set(b)) / k for a, b in zip(ours, theirs)])
    rng = np.random.default_rng(0)
    means = [per_query[rng.integers(0, len(per_query), len(per_query))].mean() for _ in range(max(0, n_boot))]
    return {
        "k": k,
        "queries": len(queries),
        "corpus": int(vectors.shape[0]),
        "recall_at_k": float(per_query.mean()),
        "recall_at_k_ci": [float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))] if means else None,
        "queries_all_same": float((per_query == 1.0).mean()),
    }


def cosine_figures(vectors: np.ndarray, reference: np.ndarray) -> dict:
    cos = (_unit(vectors) * _unit(reference)).sum(-1)
    counts, _ = np.histogram(np.clip(cos, 0, 1.0), bins=HISTOGRAM_EDGES)
    return {
        "mean": float(cos.mean()),
        "p1": float(np.percentile(cos, 1)),
        "p5": float(np.percentile(cos, 5)),
        "min": float(cos.min()),
        "histogram": {"edges": HISTOGRAM_EDGES, "counts": counts.tolist()},
    }


def summarise(candidate, raw: dict, reference_raw: dict, payload: dict, profiles, settings) -> dict:
    """Spearman, cosine to the reference, retrieval agreement; then the encoder's latency figures."""
    vectors, reference = unpack(raw["eval"]["vectors"]), unpack(reference_raw["eval"]["vectors"])
    gold = np.asarray(payload["scores"], dtype=np.float64)
    cos = pair_cosines(vectors, payload["pairs"])
    ref_cos = None if raw is reference_raw else pair_cosines(reference, payload["pairs"])
    metrics: dict = {
        "examples": len(payload["pairs"]),
        "sentences": int(vectors.shape[0]),
        "dimension": int(vectors.shape[1]),
        "pooling": raw["eval"].get("pooling"),
        **spearman_figures(cos, gold, ref_cos, settings.bootstrap),
        "cosine_to_reference": cosine_figures(vectors, reference),
        "retrieval": retrieval_agreement(vectors, reference, payload["queries"], settings.bootstrap),
    }
    return {"metrics": metrics, **encoder_timings(candidate, raw, profiles, settings)}


def eval_section(payload: dict, reference_raw: dict, profiles) -> dict:
    return {
        "name": payload["name"],
        "examples": len(payload["pairs"]),
        "sentences": len(payload["texts"]),
        "queries": len(payload["queries"]),
        "mean_tokens": reference_raw["profiles"][profiles[0].name]["process"]["mean_tokens"],
    }


def ratios(v: dict, ref: dict, settings) -> dict:
    """Speed-ups against the reference (95% interval paired by round) and the Spearman difference."""
    return {
        **speedups(v, ref, settings),
        "spearman_delta_points": v["metrics"]["spearman"] - ref["metrics"]["spearman"],
    }


def metric(results: dict, variant: dict, name: str, profile: str) -> float | None:
    """The task's gate and selection metrics (points, or ms per sentence), None for another name."""
    ref = next(v for v in results["variants"] if v["name"] == results["reference"])
    m = variant["metrics"]
    if name == "spearman":
        return m["spearman"]
    if name == "spearman_drop":
        return ref["metrics"]["spearman"] - m["spearman"]
    if name == "cosine_mean":
        return m["cosine_to_reference"]["mean"]
    if name == "cosine_p1":
        return m["cosine_to_reference"]["p1"]
    if name == "retrieval_agreement":
        return 100 * m["retrieval"]["recall_at_k"]
    if name == "ms_per_sentence_batch":
        per_second = (variant["profiles"].get(profile) or {}).get("throughput_seq_per_s")
        return 1000.0 / per_second if per_second else float("nan")
    return None
