"""Activation ranges for static INT8, collected batch by batch, and QDQ models built from them.

onnxruntime's calibrators keep every intermediate output of one `collect_data` call in memory
(tens of MB per sentence for MiniLM), so the batches are fed one call at a time: MinMax merges its
running ranges and the histogram calibrators (Entropy, Percentile) merge their histograms, and
memory stays bounded by one batch whatever the sample count.

The attention mask is kept out on purpose. Exported BERT and GPT-2 graphs turn the mask into
additive float32 minima (-3.4e38) through a small subgraph (`attention_mask` -> Unsqueeze -> Cast
-> Sub -> Mul/Where) or a Where against a huge constant; a calibrator that sees those tensors either
stretches one range over 38 orders of magnitude (MinMax: every real value lands in one bin) or asks
numpy for a histogram it cannot bin (Percentile: "Too many bins for data range"). `mask_path` finds
the tensors computed only from the mask or such constants, plus the nodes that add them to real
activations; their tensors are not calibrated and those nodes are never quantised.

Ranges are cached by content (model, data, settings) under the cache folder, so the accuracy-budget
search quantises many node subsets from one calibration.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import ArtifactError, DataError
from . import MIN_CALIBRATION_SAMPLES

CALIBRATORS = ("minmax", "entropy", "percentile")
MASK_INPUTS = ("attention_mask",)
HUGE = 1e30
"""A constant this large is a mask value (float32 minimum, -inf stand-ins), not a weight."""
MIN_SAMPLES = MIN_CALIBRATION_SAMPLES
"""Fewer calibration samples than this give ranges from a handful of sentences: refused."""


@dataclass
class MaskPath:
    tensors: set[str] = field(default_factory=set)
    """Tensors holding mask values: computed only from the mask or huge constants, or made by adding them."""
    nodes: list[str] = field(default_factory=list)
    """Nodes that read or make those tensors: never quantised."""


def _constant_values(model) -> dict[str, np.ndarray]:
    """Small constants (initializers and Constant nodes), where mask values hide."""
    from onnx import numpy_helper

    out = {}
    for init in model.graph.initializer:
        if np.prod(init.dims, dtype=np.int64) <= 16:
            out[init.name] = numpy_helper.to_array(init)
    for node in model.graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value" and np.prod(attr.t.dims, dtype=np.int64) <= 16:
                    out[node.output[0]] = numpy_helper.to_array(attr.t)
    return out


FUSED_MASK_READERS = {
    "Attention": (),
    "QAttention": (),
    "MultiHeadAttention": (),
    "EmbedLayerNormalization": (1,),
    "QEmbedLayerNormalization": (1,),
}
"""Fused operators (`optimize-graph`) that read the mask as a mask, not as values added to theirs: they are off
the mask path, and only the outputs listed here (by index: the mask they pass on) carry it further."""


def mask_path(model) -> MaskPath:
    """The mask subgraph of an ONNX model (graphs are stored in topological order)."""
    constants = _constant_values(model)
    static = {i.name for i in model.graph.initializer} | set(constants)
    derived = {i.name for i in model.graph.input if i.name in MASK_INPUTS}
    derived |= {
        name
        for name, value in constants.items()
        if value.dtype.kind == "f" and value.size and float(np.abs(value).max()) >= HUGE
    }
    mixed: set[str] = set()
    nodes = []
    for node in model.graph.node:
        inputs = [i for i in node.input if i]
        if node.op_type in ("Constant", "Shape", "Size") or not inputs:
            continue  # a shape is not a value: what is computed from it carries no mask values
        if node.op_type in FUSED_MASK_READERS:
            derived.update(node.output[i] for i in FUSED_MASK_READERS[node.op_type] if i < len(node.output))
            continue
        live = [i for i in inputs if i not in static or i in derived]
        touched = [i for i in live if i in derived or i in mixed]
        if not touched:
            continue
        nodes.append(node.name)
        if all(i in derived for i in live):
            derived.update(node.output)
        elif any(i in derived for i in live):
            mixed.update(node.output)  # scores + mask: still holds the mask value, but no further
    return MaskPath(tensors=derived | mixed, nodes=nodes)


def _calibrator_class(method: str, keep_out: set[str]):
    from onnxruntime.quantization.calibrate import EntropyCalibrater, MinMaxCalibrater, PercentileCalibrater

    base = {"minmax": MinMaxCalibrater, "entropy": EntropyCalibrater, "percentile": PercentileCalibrater}[method]

    class MaskAware(base):
        def select_tensors_to_calibrate(self, model):
            tensors, infos = super().select_tensors_to_calibrate(model)
            return tensors - keep_out, infos

    return MaskAware


class _OneBatch:
    """A CalibrationDataReader over one batch: `collect_data` is called once per batch."""

    def __init__(self, batch: dict):
        self._batch = batch

    def get_next(self):
        batch, self._batch = self._batch, None
        return batch


class _PeakMemory:
    """Peak resident memory of this process from now on (Linux resets its high-water mark on request)."""

    def __enter__(self):
        self.reset = False
        try:
            Path("/proc/self/clear_refs").write_text("5")
            self.reset = True
        except OSError:
            pass
        self.start_mib = _status_mib("VmRSS")
        return self

    def __exit__(self, *exc):
        self.peak_mib = _status_mib("VmHWM") if self.reset else None


def _status_mib(key: str) -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


@dataclass
class Calibration:
    ranges_file: Path
    method: str
    mask_nodes: list[str]
    stats: dict


def settings_key(
    model_id: str,
    data_id: str,
    method: str,
    samples: int,
    batch_size: int,
    op_types: list[str],
    symmetric: bool,
    percentile: float,
) -> str:
    """The cache key of one calibration: the model's artifact id (its content), the data and the settings."""
    text = json.dumps([model_id, data_id, method, samples, batch_size, sorted(op_types), symmetric, percentile])
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def calibrate(
    model_path: Path,
    batches: Iterable[dict],
    method: str,
    op_types: list[str],
    *,
    symmetric: bool,
    percentile: float,
    cache_key: str,
) -> Calibration:
    """Ranges of the tensors around `op_types` nodes, from `batches` (feeds), one batch in memory at a time."""
    import onnx
    from onnxruntime.quantization import save_tensors_data

    from .. import settings
    from ..fsio import write_json_atomic

    if method not in CALIBRATORS:
        raise ArtifactError(f"unknown calibrator '{method}': use one of {', '.join(CALIBRATORS)}")
    model = onnx.load(str(model_path), load_external_data=False)
    mask = mask_path(model)
    cache = settings.cache_dir() / "calibration"
    cached = cache / f"{cache_key}.json"
    if cached.exists() and (cached.with_suffix(".stats.json")).exists():
        stats = json.loads(cached.with_suffix(".stats.json").read_text())
        return Calibration(cached, method, mask.nodes, {**stats, "reused": True})
    cache.mkdir(parents=True, exist_ok=True)
    options: dict = {"symmetric": symmetric}
    if method == "percentile":
        options.update(num_bins=2048, percentile=percentile)
    elif method == "entropy":
        options.update(num_bins=128, num_quantized_bins=128)
    import tempfile

    t0 = time.perf_counter()
    samples = n_batches = 0
    with tempfile.TemporaryDirectory(prefix="edgenlp-calib-") as tmp, _PeakMemory() as memory:
        cls = _calibrator_class(method, mask.tensors)
        calibrator = cls(model_path, op_types, str(Path(tmp) / "augmented.onnx"), **options)
        calibrator.augment_graph()
        calibrator.create_inference_session()
        try:
            with contextlib.redirect_stdout(io.StringIO()):  # onnxruntime prints a line per batch
                for batch in batches:
                    calibrator.collect_data(_OneBatch(batch))
                    samples += int(next(iter(batch.values())).shape[0])
                    n_batches += 1
                if not n_batches:
                    raise DataError("the calibration set is empty: give the recipe's data a training split with texts")
                ranges = calibrator.compute_data()
        except ValueError as exc:  # onnxruntime's own messages, e.g. a histogram it cannot bin
            raise ArtifactError(
                f"{method} calibration failed: {' '.join(str(exc).split())[:200]}: try another "
                "calibrator or leave the offending operator type out of op_types"
            ) from exc
        del calibrator
    stats = {
        "method": method,
        "samples": samples,
        "batches": n_batches,
        "seconds": round(time.perf_counter() - t0, 2),
        "peak_rss_mib": None if memory.peak_mib is None else round(memory.peak_mib, 1),
        "rss_before_mib": None if memory.start_mib is None else round(memory.start_mib, 1),
        "calibrated_tensors": len(ranges.data),
        "mask_tensors_left_out": len(mask.tensors),
    }
    partial = cached.with_name(f".{cached.name}.{os.getpid()}.tmp")
    save_tensors_data(ranges, partial)
    os.replace(partial, cached)
    write_json_atomic(cached.with_suffix(".stats.json"), stats)
    return Calibration(cached, method, mask.nodes, {**stats, "reused": False})


def quantize_qdq(
    model_path: Path,
    out_path: Path,
    calibration: Calibration,
    *,
    op_types: list[str],
    per_channel: bool,
    reduce_range: bool,
    activation: str,
    activation_symmetric: bool,
    nodes_to_exclude: list[str] = (),
    nodes_to_quantize: list[str] | None = None,
) -> None:
    """A QDQ model from cached ranges; the mask path is never quantised."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    method = {
        "minmax": CalibrationMethod.MinMax,
        "entropy": CalibrationMethod.Entropy,
        "percentile": CalibrationMethod.Percentile,
    }[calibration.method]
    quantize_static(
        str(model_path),
        str(out_path),
        None,
        quant_format=QuantFormat.QDQ,
        op_types_to_quantize=op_types,
        per_channel=per_channel,
        reduce_range=reduce_range,
        activation_type=QuantType.QUInt8 if activation == "uint8" else QuantType.QInt8,
        weight_type=QuantType.QInt8,
        nodes_to_exclude=sorted(set(nodes_to_exclude) | set(calibration.mask_nodes)),
        nodes_to_quantize=nodes_to_quantize,
        calibrate_method=method,
        calibration_cache_path=str(calibration.ranges_file),
        extra_options={
            "ActivationSymmetric": activation_symmetric,
            "WeightSymmetric": True,
            # fused contrib ops have no ONNX shape inference; FP32 is their type
            "DefaultTensorType": onnx.TensorProto.FLOAT,
        },
    )


def quantisable_nodes(model_path: Path, op_types: list[str], exclude: Iterable[str] = ()) -> list[str]:
    """Names of the nodes a quantiser would touch: of `op_types`, off the mask path, not excluded."""
    import onnx

    model = onnx.load(str(model_path), load_external_data=False)
    keep_out = set(mask_path(model).nodes) | set(exclude)
    weights = {i.name for i in model.graph.initializer}
    out = []
    for node in model.graph.node:
        if node.op_type not in op_types or node.name in keep_out:
            continue
        if node.op_type == "Gather" and node.input[0] not in weights:
            continue  # a Gather of shapes or indices, not of an embedding table
        out.append(node.name)
    return out


def graph_input_names(model_path: Path) -> set[str]:
    import onnx

    return {i.name for i in onnx.load(str(model_path), load_external_data=False).graph.input}


def check_sample_count(found: int, asked: int, where: str) -> None:
    """Refuse an empty or too small calibration set, naming where the samples came from."""
    if found == 0:
        raise DataError(
            f"the calibration set is empty: {where} has no usable text; give the recipe data with a training split"
        )
    if found < MIN_SAMPLES:
        raise DataError(
            f"the calibration set has {found} sample(s) from {where} (asked for {asked}), fewer than "
            f"{MIN_SAMPLES}: give more training data"
        )


def text_feeds(texts: list[str], model_dir: Path, batch_size: int):
    """`texts` as the graph's feeds, in batches of similar length (less padding), streamed."""
    from ..runtime import TextTokenizer, onnx_file

    tokenizer = TextTokenizer(model_dir)
    names = graph_input_names(onnx_file(model_dir))
    lengths = tokenizer.lengths(texts)
    order = sorted(range(len(texts)), key=lengths.__getitem__)
    for start in range(0, len(order), batch_size):
        encoded = tokenizer.encode([texts[i] for i in order[start : start + batch_size]])
        yield {k: v for k, v in encoded.items() if k in names}
