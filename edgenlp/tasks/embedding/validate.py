"""Is a new variant faithful to its parent? Its sentence vectors point where the parent's do."""

from __future__ import annotations

import numpy as np

MIN_COSINE_FP32 = 0.9999
"""Least cosine of a float variant's vector to its parent's (what rounding alone moves)."""
MIN_COSINE_QUANTISED = 0.9
"""Least cosine of a quantised variant's vector to its parent's, on any checked sentence."""


def embed_with(artifact, texts: list[str]) -> np.ndarray:
    """The artifact's sentence vectors, one sentence at a time (as deployed, and as the harness measures)."""
    from .session import open_embedder

    embedder = open_embedder(artifact.path, artifact.format, threads=1)
    return np.concatenate([embedder.vectors(embedder.tokenizer.encode([t])) for t in texts])


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.maximum(np.linalg.norm(a, axis=-1, keepdims=True), 1e-12)
    b = b / np.maximum(np.linalg.norm(b, axis=-1, keepdims=True), 1e-12)
    return (a * b).sum(-1)


def check_against_parent(parent, child, texts: list[str], settings) -> dict:
    from ...errors import ValidationFailed

    found = cosines(embed_with(parent, texts), embed_with(child, texts))
    quantised = child.precision != "fp32"
    floor = MIN_COSINE_QUANTISED if quantised else MIN_COSINE_FP32
    report = {
        "parent": parent.name,
        "texts": len(texts),
        "min_cosine": float(found.min()),
        "mean_cosine": float(found.mean()),
        "required_min_cosine": floor,
        "passed": bool(found.min() >= floor),
        "summary": f"sentence vectors' cosine to the parent's {found.mean():.5f} on average, {found.min():.5f} at "
        f"worst (at least {floor} needed) on {len(texts)} texts",
    }
    if not report["passed"]:
        worst = int(found.argmin())
        raise ValidationFailed(
            f"{child.name}: its sentence vectors turn away from its parent's (cosine {found[worst]:.4f} on "
            f"text {worst}, at least {floor} needed): exclude sensitive nodes or try per_channel: true"
        )
    return report
