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
    if child.precision == "fp32":
        result.update(check="logits", atol=tolerance.atol, passed=max_diff <= tolerance.atol)
        if max_diff > tolerance.atol:
            raise ValidationFailed(
                f"{child.name}: FP32 logits differ from {parent.name} by {max_diff:.2e} "
                f"(> atol {tolerance.atol}): the conversion is wrong; report it, or raise "
                "validation.atol in the recipe if the difference is expected"
            )
    else:
        result.update(
            check="label_agreement",
            min_label_agreement=tolerance.min_label_agreement,
            passed=agreement >= tolerance.min_label_agreement,
        )
        if agreement < tolerance.min_label_agreement:
            raise ValidationFailed(
                f"{child.name}: agrees with {parent.name} on only {agreement:.1%} of labels "
                f"(< {tolerance.min_label_agreement:.0%}): exclude sensitive nodes, try "
                "per_channel: true, or lower validation.min_label_agreement"
            )
    return result
