"""Quantised decoder with its cache in place -> the same decoder with an INT8 KV cache.

For long contexts: at a 512-token prompt GPT-2 small's FP32 cache is about half the bytes a decoding
step reads, and all of its growing memory. `quantization/kv_cache.py` calibrates one scale per
(head, channel) of each layer's keys and values on training text and has onnxruntime's
`GroupQueryAttention` keep the cache as int8; the runtime allocates int8 buffers from the graph's
input types. Every graph of the variant (a `split-prefill` variant has two, sharing one cache) gets
the same scales.

The parent must be quantised already (`quantize` or `quantize-int4` of an `export-fused` graph): the
cache is what is left once the weights are small, and the child is validated, like any quantised
variant, by top-1 agreement with its parent.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from .. import data as data_module
from ..artifact import Artifact, StageOutput, copy_support_files
from ..errors import ArtifactError
from ..quantization import kv_cache
from . import StageConfig

NAME = "quantize-kv"
LIBRARIES = ("onnx", "onnxruntime", "tokenizers", "numpy")


class Config(StageConfig):
    calibration_samples: int = Field(16, ge=1)
    """Windows of training text whose keys and values set each channel's largest magnitude."""
    window: int | None = Field(None, ge=8)
    """Tokens a calibration window (None: the model's context, at most 512): magnitudes grow with position."""
    data: data_module.DataSpec = data_module.DataSpec()


def check_parent(parent: Artifact) -> list[Path]:
    """The parent's graphs, once it is a quantised decoder whose cache is in place."""
    if parent.format != "onnx" or parent.task != "text-generation":
        raise ArtifactError(
            f"quantize-kv shrinks a decoder's KV cache, but {parent.path} is a {parent.format} {parent.task} model"
        )
    if parent.precision == "fp32":
        raise ArtifactError(
            f"{parent.path} is FP32: quantise its weights first (quantize or quantize-int4), then its cache"
        )
    graphs = sorted(parent.path.glob("*.onnx"))
    if not graphs or not all(kv_cache.in_place_cache_inputs(g) for g in graphs):
        raise ArtifactError(
            f"{parent.path} does not keep its KV cache in place (GroupQueryAttention): quantize-kv needs a "
            "decoder from the stage export-fused"
        )
    return graphs


def run(parent: Artifact, config: Config, workdir: Path) -> StageOutput:
    graphs = check_parent(parent)
    import onnx

    from ..corpus import load as load_corpus
    from ..runtime.generation import CausalLM

    decoder = CausalLM(parent.path)
    window = config.window or min(decoder.context, 512)
    ids: list[int] = []
    for doc in load_corpus(config.data).train:
        ids.extend(decoder.encode(doc) + ([decoder.eos_id] if decoder.eos_id is not None else []))
        if len(ids) >= config.calibration_samples * window:
            break
    # a corpus shorter than one window calibrates on what it has
    windows = [ids[i : i + window] for i in range(0, len(ids) - window + 1, window)][: config.calibration_samples]
    windows = windows or ([ids[:window]] if ids else [])
    maxima = dict(zip(decoder.past_names, kv_cache.cache_maxima(decoder, windows)))
    for graph in graphs:
        model = onnx.load(str(graph))
        kv_cache.quantize_cache(model, maxima)
        onnx.save(model, str(workdir / graph.name))
    copy_support_files(parent.path, workdir)
    return StageOutput(
        format="onnx",
        task=parent.task,
        precision=parent.precision,
        metadata={
            **{k: v for k, v in parent.meta.get("metadata", {}).items() if k != "kv_cache"},
            "kv_cache": "int8, in place: one scale per (head, channel) of each layer's keys and values",
            "kv_calibration": {"windows": len(windows), "tokens_a_window": window, "data": config.data.source},
        },
    )
