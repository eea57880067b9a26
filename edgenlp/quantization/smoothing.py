"""Activation smoothing (SmoothQuant) for dynamic INT8: move the outlier channels' range into the weights.

Dynamic INT8 gives each activation tensor one scale. A transformer's hidden states carry a few channels
far larger than the rest (after LayerNorm and GELU), so one scale leaves the others a handful of levels.
For `y = x @ W`, any per-input-channel `s > 0` gives the same `y = (x / s) @ (diag(s) W)`: dividing `x`
by `s_j = max|x_j|^alpha / max|W_j|^(1 - alpha)` (Xiao et al., 2023) evens the channels out, and the
weights, quantised per output channel, absorb the range. Exact in FP32; the one cost is a Mul by `1/s`
before each group of MatMuls that share an input (`seq x hidden` multiplications, against the MatMul's
`seq x hidden x out`).

Only MatMuls whose second input is a weight used by nothing else are touched (a tied weight would change
its other use), and every MatMul reading one activation shares that activation's `s`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SUFFIX = "_smoothed"
SCALE_RANGE = (1e-2, 1e2)
"""Per-channel scales are clipped here: a channel that never fires in calibration gets no extreme scale."""


@dataclass
class Smoothed:
    inputs: int
    """Activation tensors divided by their scales (one Mul each)."""
    matmuls: int
    """MatMuls whose weights absorbed the scales."""
    scale_min: float
    scale_max: float


def weight_matmuls(model) -> dict[str, list]:
    """Activation tensor -> the MatMuls that multiply it by a weight of their own, in graph order."""
    weights = {init.name for init in model.graph.initializer}
    uses: dict[str, int] = {}
    for node in model.graph.node:
        for name in node.input:
            uses[name] = uses.get(name, 0) + 1
    groups: dict[str, list] = {}
    for node in model.graph.node:
        if node.op_type != "MatMul" or len(node.input) != 2:
            continue
        x, w = node.input
        if w in weights and x not in weights and uses[w] == 1:
            groups.setdefault(x, []).append(node)
    return groups


def activation_maxima(model_path: Path, tensors: Iterable[str], batches: Iterable[dict]) -> dict[str, np.ndarray]:
    """Each tensor's largest magnitude per channel (last axis) over the calibration feeds, one batch at a time."""
    import onnx
    import onnxruntime as ort

    from ..runtime import session_options

    probe = onnx.load(str(model_path))
    names = list(tensors)
    present = {o.name for o in probe.graph.output}
    for name in names:
        if name not in present:
            probe.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    session = ort.InferenceSession(probe.SerializeToString(), session_options(2), providers=["CPUExecutionProvider"])
    accepted = {i.name for i in session.get_inputs()}
    maxima: dict[str, np.ndarray] = {}
    for feed in batches:
        found = session.run(names, {k: v for k, v in feed.items() if k in accepted})
        for name, value in zip(names, found):
            peak = np.abs(value).reshape(-1, value.shape[-1]).max(0)
            maxima[name] = np.maximum(maxima[name], peak) if name in maxima else peak
    return maxima


def smooth(model, maxima: dict[str, np.ndarray], alpha: float) -> Smoothed:
    """Rewrite `model` in place: divide each calibrated MatMul input by its scales, multiply the weights."""
    from onnx import helper, numpy_helper

    groups = weight_matmuls(model)
    weights = {init.name: init for init in model.graph.initializer}
    scales_seen: list[np.ndarray] = []
    matmuls = 0
    for x, nodes in groups.items():
        if x not in maxima:
            continue
        ws = [numpy_helper.to_array(weights[n.input[1]]) for n in nodes]
        w_peak = np.max([np.abs(w).max(axis=1) for w in ws], axis=0)
        scale = np.maximum(maxima[x], 1e-5) ** alpha / np.maximum(w_peak, 1e-5) ** (1 - alpha)
        scale = np.clip(scale, *SCALE_RANGE).astype(np.float32)
        inverse = numpy_helper.from_array((1 / scale).astype(np.float32), name=x + SUFFIX + "_inverse_scale")
        model.graph.initializer.append(inverse)
        mul = helper.make_node("Mul", [x, inverse.name], [x + SUFFIX], name=x + SUFFIX)
        model.graph.node.insert(list(model.graph.node).index(nodes[0]), mul)
        for node, w in zip(nodes, ws):
            node.input[0] = x + SUFFIX
            weights[node.input[1]].CopyFrom(numpy_helper.from_array(w * scale[:, None], name=node.input[1]))
        scales_seen.append(scale)
        matmuls += len(nodes)
    every = np.concatenate(scales_seen) if scales_seen else np.ones(1)
    return Smoothed(len(scales_seen), matmuls, float(every.min()), float(every.max()))
