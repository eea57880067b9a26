"""Per-node quantisation sensitivity: quantise one node alone and see what it does to the outputs.

For every quantisable node (MatMul, Gemm, Gather, and Add or others when asked) a model with only
that node quantised is built with the variant's own settings (one calibration serves them all),
and compared with the FP32 parent on probe batches from the calibration set (mean KL divergence of
the output distributions, maximum absolute logit difference) and, where a tuning evaluation is
given, on the tuning split (the task's quality and its drop). The ranking (largest KL first) is
the order in which the accuracy-budget search returns nodes to float.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)


def _outputs(model_path: Path, probe: Sequence[dict]) -> list[np.ndarray]:
    import onnxruntime as ort

    from ..runtime import session_options

    session = ort.InferenceSession(str(model_path), session_options(1), providers=["CPUExecutionProvider"])
    names = {i.name for i in session.get_inputs()}
    first = session.get_outputs()[0].name
    return [session.run([first], {k: v for k, v in feed.items() if k in names})[0] for feed in probe]


def divergence(reference: list[np.ndarray], candidate: list[np.ndarray]) -> dict:
    """Mean KL(reference || candidate) of the softmax over the last axis, and the largest logit difference."""
    kls, worst = [], 0.0
    for ref, got in zip(reference, candidate):
        ref64, got64 = ref.astype(np.float64), got.astype(np.float64)
        log_p = ref64 - ref64.max(-1, keepdims=True)
        log_p -= np.log(np.exp(log_p).sum(-1, keepdims=True))
        log_q = got64 - got64.max(-1, keepdims=True)
        log_q -= np.log(np.exp(log_q).sum(-1, keepdims=True))
        kls.append(np.maximum((np.exp(log_p) * (log_p - log_q)).sum(-1), 0.0).ravel())
        worst = max(worst, float(np.abs(ref64 - got64).max()))
    return {"kl_mean": float(np.concatenate(kls).mean()) if kls else 0.0, "max_abs_diff": worst}


def analyse(
    parent_model: Path,
    nodes: Sequence[str],
    op_types: dict[str, str],
    quantise_only: Callable[[str, Path], None],
    probe: Sequence[dict],
    tuning: Callable[[Path], float] | None = None,
    reference_quality: float | None = None,
    quality_drop: Callable[[float, float], float] | None = None,
) -> list[dict]:
    """One row per node, most damaging first: `quantise_only(node, out)` writes the one-node model."""
    from ..artifact import copy_support_files

    reference = _outputs(parent_model, probe)
    rows = []
    with tempfile.TemporaryDirectory(prefix="edgenlp-sensitivity-") as tmp:
        out = Path(tmp) / "model.onnx"
        copy_support_files(parent_model.parent, Path(tmp))  # the tokenizer, for the tuning evaluation
        for i, node in enumerate(nodes):
            quantise_only(node, out)
            row = {"node": node, "op_type": op_types.get(node, "?"), **divergence(reference, _outputs(out, probe))}
            if tuning is not None:
                row["tuning_quality"] = tuning(Path(tmp))
                if reference_quality is not None and quality_drop is not None:
                    row["quality_drop"] = quality_drop(reference_quality, row["tuning_quality"])
            rows.append(row)
            log.info("sensitivity %d/%d %s: KL %.2e", i + 1, len(nodes), node, row["kl_mean"])
    rows.sort(key=lambda r: (-r["kl_mean"], -r.get("quality_drop", 0.0)))
    for rank, row in enumerate(rows, 1):
        row["rank"] = rank
    return rows
