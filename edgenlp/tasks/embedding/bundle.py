"""An embedding bundle's part of the manifest: pooling, dimension, input limits; and its cross-machine check."""

from __future__ import annotations

import numpy as np

MIN_TARGET_COSINE = 0.999
"""Least cosine between a sentence's vector here and on the target (the same file, another CPU)."""


def bundle_section(variant, folder, model_rel: str, engine: str = "onnx") -> dict:
    """Pooling (written as pooling.json, which transformers.js's options mirror), dimension and max length."""
    import json

    from ...runtime.embedding import pooling_of, write_pooling
    from ...runtime.text import configured_max_length

    config = json.loads((folder / "config.json").read_text())
    pooling = pooling_of(folder)
    write_pooling(folder, pooling)
    max_length = min(configured_max_length(folder), int(config.get("max_position_embeddings") or 512))
    return {
        "pooling": pooling.as_json(),
        "dimension": int(config.get("hidden_size") or 0),
        "max_length": max_length,
        "truncation": f"texts longer than {max_length} tokens are cut there by default; truncate=False refuses them",
        "transformers_js": {
            "pipeline": "feature-extraction",
            "options": {"pooling": pooling.mode if pooling.mode != "max" else None, "normalize": pooling.normalize},
        },
    }


def bundle_summary(results: dict, variant: dict) -> dict:
    """Spearman, cosine to the reference and latency of a measured variant, for its bundle's manifest."""
    m = variant.get("metrics") or {}
    return {
        "spearman": m.get("spearman"),
        "spearman_delta_points": (variant.get("ratios") or {}).get("spearman_delta_points"),
        "cosine_to_reference_mean": (m.get("cosine_to_reference") or {}).get("mean"),
        "retrieval_recall_at_10": (m.get("retrieval") or {}).get("recall_at_k"),
        "latency_ms": {
            profile: {shape: {"p50": s.get("p50"), "p90": s.get("p90")} for shape, s in shapes.items()}
            for profile, shapes in (variant.get("latency_ms") or {}).items()
        },
        "throughput_seq_per_s": {
            profile: p.get("throughput_seq_per_s") for profile, p in (variant.get("profiles") or {}).items()
        },
    }


def target_check_set(eval_set, limit: int | None = None) -> tuple[list[str], None]:
    """The held-out sentences a bundle is embedded on elsewhere (no gold answers: vectors are compared)."""
    n = len(eval_set.sentences) if limit is None else min(limit, len(eval_set.sentences))
    return list(eval_set.sentences[:n]), None


def compare_target_answers(here: dict, there: dict, references: list | None = None) -> dict:
    """Cosine between this machine's vectors and the target's, sentence by sentence."""
    a, b = np.asarray(here["embeddings"], dtype=np.float64), np.asarray(there["embeddings"], dtype=np.float64)
    a /= np.maximum(np.linalg.norm(a, axis=-1, keepdims=True), 1e-12)
    b /= np.maximum(np.linalg.norm(b, axis=-1, keepdims=True), 1e-12)
    cos = (a * b).sum(-1)
    return {
        "passed": bool(cos.min() >= MIN_TARGET_COSINE),
        "same_tokenization": True,
        "min_cosine": float(cos.min()),
        "mean_cosine": float(cos.mean()),
        "min_required": MIN_TARGET_COSINE,
        "summary": f"vectors of {len(cos)} sentences: cosine to this machine's mean {cos.mean():.6f}, min {cos.min():.6f}",
    }
