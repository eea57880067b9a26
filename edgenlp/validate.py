"""Every variant is checked against its parent before anyone benchmarks it.

FP32 variants must reproduce the parent's logits within `atol`; quantised variants report how
often they agree with the parent's label and must stay above `min_label_agreement`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .artifact import Artifact
from .bench.runners import open_runner
from .errors import ValidationFailed
from .runtime import TextTokenizer


@dataclass(frozen=True)
class Tolerance:
    atol: float = 1e-3
    min_label_agreement: float = 0.9


def _logits(artifact: Artifact, batches: list[dict[str, np.ndarray]]) -> np.ndarray:
    runner = open_runner(artifact.path, artifact.format, threads=2)
    return np.concatenate([runner.logits(b) for b in batches])


def against_parent(
    parent: Artifact, child: Artifact, texts: list[str], tolerance: Tolerance = Tolerance(), batch_size: int = 16
) -> dict:
    tokenizer = TextTokenizer(child.path)
    batches = [tokenizer.encode(texts[i : i + batch_size]) for i in range(0, len(texts), batch_size)]
    expected, got = _logits(parent, batches), _logits(child, batches)
    max_diff = float(np.abs(expected - got).max())
    agreement = float((expected.argmax(-1) == got.argmax(-1)).mean())
    result = {
        "examples": len(texts),
        "parent": parent.name,
        "max_abs_logit_diff": max_diff,
        "label_agreement": agreement,
    }
    return judged(result, child, parent.name, max_diff, agreement, tolerance)


def judged(
    result: dict,
    child: Artifact,
    parent_name: str,
    max_diff: float,
    agreement: float,
    tolerance: Tolerance,
    outputs: str = "logits",
    kept: str = "labels",
) -> dict:
    """The verdict every encoder task gives a new variant: an FP32 one must reproduce its parent's `outputs`
    within `atol`; a quantised one must keep the parent's answer on `min_label_agreement` of its `kept`."""
    if child.precision == "fp32":
        result.update(check="logits", atol=tolerance.atol, passed=max_diff <= tolerance.atol)
        if max_diff > tolerance.atol:
            raise ValidationFailed(
                f"{child.name}: FP32 {outputs} differ from {parent_name} by {max_diff:.2e} "
                f"(> atol {tolerance.atol}): the conversion is wrong; report it, or raise "
                "validation.atol in the recipe if the difference is expected"
            )
        return result
    floor = tolerance.min_label_agreement
    result.update(check="label_agreement", min_label_agreement=floor, passed=agreement >= floor)
    if agreement < floor:
        raise ValidationFailed(
            f"{child.name}: agrees with {parent_name} on only {agreement:.1%} of {kept} (< {floor:.0%}): "
            "exclude sensitive nodes, try per_channel: true, or lower validation.min_label_agreement"
        )
    return result
