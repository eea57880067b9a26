"""What padding costs, and a graph rewrite that removes the part of it that is not compute.

An exported BERT adds float32's minimum (-3.4e38) to the attention scores of padded positions.
onnxruntime's Softmax takes a slow path on that value, so a padded position costs more than a real
one. Any value that drives exp() to exactly zero masks as well: -1e4 does for scores of any
realistic size (BERT's original value). The rewrite is kept only if the logits of padded batches
come out bit for bit the same (checked on random token ids of mixed lengths).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

HUGE = 1e30
LOWERED = -1e4


def _mask_constants(model) -> list:
    """The (tensor proto) float scalars at or below -1e30: the mask value, wherever the exporter put it."""
    from onnx import numpy_helper

    found = []
    tensors = list(model.graph.initializer) + [
        a.t for n in model.graph.node if n.op_type == "Constant" for a in n.attribute if a.name == "value"
    ]
    for t in tensors:
        if t.data_type != 1 or np.prod(t.dims or [1]) > 4:
            continue
        value = numpy_helper.to_array(t)
        if value.size and float(value.min()) <= -HUGE:
            found.append(t)
    return found


def _session(path_or_bytes, threads: int = 1):
    import onnxruntime as ort

    from ..runtime.session import session_options

    source = str(path_or_bytes) if isinstance(path_or_bytes, Path) else path_or_bytes
    return ort.InferenceSession(source, session_options(threads), providers=["CPUExecutionProvider"])


def _feed(session, rows: list[int], width: int, vocab: int, pad_id: int, rng) -> dict:
    names = [i.name for i in session.get_inputs()]
    ids = np.full((len(rows), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(rows), width), dtype=np.int64)
    for r, n in enumerate(rows):
        ids[r, :n] = rng.integers(min(1000, vocab // 4), vocab, n)  # ordinary words, not special tokens
        mask[r, :n] = 1
    feed = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
    return {k: feed[k] for k in names}


def _median_ms(session, feed, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter_ns()
        session.run(None, feed)
        times.append((time.perf_counter_ns() - t0) / 1e6)
    return float(np.median(times))


def lower_mask_value(model_path: Path, max_length: int, vocab: int, pad_id: int, repeats: int = 5) -> dict:
    """Rewrite the mask value of `model_path` in place if that changes no output; report what padding costs."""
    import onnx
    from onnx import numpy_helper

    from .layout import save_model

    model = onnx.load(str(model_path))
    found = _mask_constants(model)
    if not found:
        return {"mask_rewrite": "not needed: the graph has no float32-minimum mask value"}
    original = _session(model_path)
    for t in found:
        t.CopyFrom(numpy_helper.from_array(np.full(numpy_helper.to_array(t).shape, LOWERED, dtype=np.float32), t.name))
    rewritten = _session(model.SerializeToString())
    rng = np.random.default_rng(0)
    width = min(128, max_length)
    worst = 0.0
    for rows in ([width, 3, width // 2, 7], [5, 9, 2, width // 4], [width]):
        feed = _feed(original, rows, max(rows), vocab, pad_id, rng)
        a, b = original.run(None, feed)[0], rewritten.run(None, feed)[0]
        worst = max(worst, float(np.abs(a - b).max()))
    if worst != 0.0:
        return {
            "mask_rewrite": f"not applied: lowering the mask value to {LOWERED:g} changed logits by up to "
            f"{worst:.2e}, so the exported value stays"
        }
    save_model(model, model_path)
    padded = _feed(original, [max(2, width // 8)] * 4, width, vocab, pad_id, rng)
    real = _feed(original, [width] * 4, width, vocab, pad_id, rng)
    for s in (original, rewritten):
        s.run(None, padded)
    timings = {"exported": [], "rewritten": [], "real": []}
    for _ in range(repeats):  # interleaved, so a noisy neighbour slows all three alike
        timings["exported"].append(_median_ms(original, padded, 1))
        timings["rewritten"].append(_median_ms(rewritten, padded, 1))
        timings["real"].append(_median_ms(rewritten, real, 1))
    ms = {k: round(float(np.median(v)), 3) for k, v in timings.items()}
    return {
        "mask_rewrite": f"applied: the mask value float32-min became {LOWERED:g} in {len(found)} place(s); logits of "
        "padded batches are bit for bit the same",
        "padding_cost": {
            "probe": f"4 rows of {width} positions, {max(2, width // 8)} real tokens each, vs 4 rows of {width} real "
            f"tokens; median of {repeats} interleaved runs, 1 thread, on the machine that built the bundle",
            "ms_padded_exported_mask": ms["exported"],
            "ms_padded_rewritten_mask": ms["rewritten"],
            "ms_all_real": ms["real"],
            "padded_vs_real_before": round(ms["exported"] / ms["real"], 3),
            "padded_vs_real_after": round(ms["rewritten"] / ms["real"], 3),
            "advice": "padded positions are computed like real ones: the runtime sorts texts by length and packs "
            "batches so that few positions are padding",
        },
    }
