"""Is a new variant faithful to its parent? FP32 logits within tolerance, quantised labels kept."""

from __future__ import annotations


def check_against_parent(parent, child, texts: list[str], settings) -> dict:
    from ... import validate

    return validate.against_parent(
        parent, child, texts, validate.Tolerance(settings.atol, settings.min_label_agreement)
    )
