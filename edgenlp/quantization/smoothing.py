"""Activation smoothing (SmoothQuant) for dynamic INT8: move the outlier channels' range into the weights.

Dynamic INT8 gives each activation tensor one scale. A transformer's hidden states carry a few channels
far larger than the rest (after LayerNorm and GELU), so one scale leaves the others a handful of levels.
For `y = x @ W`, any per-input-channel `s > 0` gives the same `y = (x / s) @ (diag(s) W)`: dividing `x`
by `s_j = max|x_j|^alpha / max|W_j|^(1 - alpha)` (Xiao et al., 2023) evens the channels out, and the
weights, quantised per output channel, absorb the range. Exact in FP32; the one cost is a Mul by `1/s`
before each group of MatMuls that share an input (`seq x hidden` multiplications, against the MatMul's
`seq x hidden x out`).

Only MatMuls whose second input is a weight used by nothing else are touched (a tied weight would change
its other use), and every MatMul reading one activation shares that activation's `s`. A graph fused by
`optimize-graph` is smoothed too: its `Attention` nodes multiply their input by one packed Q/K/V weight
(`hidden x 3 hidden`), which takes the scales as a MatMul's would, and the attention output, whose
channels are the V projection's, is divided where it is made: V's weight columns and bias absorb `1/s`,
so that group needs no Mul at all.
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
    """Activation tensors divided by their scales (a Mul each, but for the `folded` ones)."""
    matmuls: int
    """MatMuls (and fused Attentions) whose weights absorbed the scales."""
    scale_min: float
    scale_max: float
    folded: int = 0
    """Of `inputs`, those divided inside the fused Attention that makes them (no Mul)."""


SMOOTHABLE_OPS = ("MatMul", "Attention")
"""Nodes whose input 0 is multiplied by a weight (input 1) laid out input channels x outputs."""


def _readers(model) -> dict[str, int]:
    """Tensor name -> how many node inputs read it."""
    count: dict[str, int] = {}
    for node in model.graph.node:
        for name in node.input:
            count[name] = count.get(name, 0) + 1
    return count


def weight_matmuls(model) -> dict[str, list]:
    """Activation tensor -> the MatMuls (or fused Attentions) that multiply it by a weight of their own, in
    graph order."""
    weights = {init.name for init in model.graph.initializer}
    uses = _readers(model)
    groups: dict[str, list] = {}
    for node in model.graph.node:
        if node.op_type not in SMOOTHABLE_OPS or len(node.input) < 2:
            continue
        x, w = node.input[:2]
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
    makers = _attention_outputs_to_fold(model, groups, weights)
    scales_seen: list[np.ndarray] = []
    matmuls = folded = 0
    for x, nodes in groups.items():
        if x not in maxima:
            continue
        ws = [numpy_helper.to_array(weights[n.input[1]]) for n in nodes]
        w_peak = np.max([np.abs(w).max(axis=1) for w in ws], axis=0)
        scale = np.maximum(maxima[x], 1e-5) ** alpha / np.maximum(w_peak, 1e-5) ** (1 - alpha)
        scale = np.clip(scale, *SCALE_RANGE).astype(np.float32)
        if x in makers and _divide_v_projection(makers[x], weights, scale):
            folded += 1
        else:
            inverse = numpy_helper.from_array((1 / scale).astype(np.float32), name=x + SUFFIX + "_inverse_scale")
            model.graph.initializer.append(inverse)
            mul = helper.make_node("Mul", [x, inverse.name], [x + SUFFIX], name=x + SUFFIX)
            model.graph.node.insert(list(model.graph.node).index(nodes[0]), mul)
            for node in nodes:
                node.input[0] = x + SUFFIX
        for node, w in zip(nodes, ws):
            weights[node.input[1]].CopyFrom(numpy_helper.from_array(w * scale[:, None], name=node.input[1]))
        scales_seen.append(scale)
        matmuls += len(nodes)
    every = np.concatenate(scales_seen) if scales_seen else np.ones(1)
    return Smoothed(len(scales_seen), matmuls, float(every.min()), float(every.max()), folded)


def _attention_outputs_to_fold(model, groups: dict[str, list], weights: dict) -> dict[str, object]:
    """Smoothed inputs made by a fused Attention whose weight and bias are its own, whose output goes only to
    that group and which has no other output (a decoder's `present` cache would carry V divided, for a
    reader outside the graph): output tensor -> the Attention. (A pruned layer's Q/K/V sizes come from
    `qkv_hidden_sizes` when onnxruntime wrote it; otherwise the packed weight is three equal parts.)"""
    readers = _readers(model)
    graph_outputs = {o.name for o in model.graph.output}
    found = {}
    for node in model.graph.node:
        if node.op_type != "Attention" or len(node.input) < 3 or len([o for o in node.output if o]) != 1:
            continue
        out, w, b = node.output[0], node.input[1], node.input[2]
        if (
            out in groups
            and out not in graph_outputs
            and readers[out] == len(groups[out])
            and w in weights
            and b in weights
            and readers[w] == 1
            and readers[b] == 1
        ):
            found[out] = node
    return found


def _divide_v_projection(attention, weights: dict, scale: np.ndarray) -> bool:
    """Attention's output channel j is V's channel j (heads merged in order): divide V's columns and bias.
    False, and nothing changed, where V's width is not the output's (a layout this reading does not know)."""
    from onnx import helper, numpy_helper

    sizes = next(
        (list(helper.get_attribute_value(a)) for a in attention.attribute if a.name == "qkv_hidden_sizes"), None
    )
    w_name, b_name = attention.input[1], attention.input[2]
    w, b = numpy_helper.to_array(weights[w_name]).copy(), numpy_helper.to_array(weights[b_name]).copy()
    v_start = sum(sizes[:2]) if sizes else 2 * (w.shape[1] // 3)
    if w.shape[1] - v_start != scale.shape[0] or b.shape != (w.shape[1],):
        return False
    w[:, v_start:] /= scale
    b[v_start:] /= scale
    weights[w_name].CopyFrom(numpy_helper.from_array(w, name=w_name))
    weights[b_name].CopyFrom(numpy_helper.from_array(b, name=b_name))
    return True
