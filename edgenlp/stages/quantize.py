"""FP32 ONNX -> INT8 ONNX with onnxruntime's dynamic quantisation, tuned to the CPU it runs on.

Dynamic quantisation stores weights as INT8 and quantises activations on the fly, so it needs no
calibration data. Both the MatMuls and the word-embedding table (a Gather; half of MiniLM's
weights) are quantised by default. The settings follow the instruction set:
- VNNI (AVX512-VNNI, AVX-VNNI) and plain AVX-512: u8 activations x s8 weights at full 8-bit range;
  the VNNI dot-product accumulates in 32 bits, so nothing saturates.
- AVX2 without VNNI: `reduce_range` (7-bit weights), because vpmaddubsw adds pairs of u8 x s8
  products into 16 bits and full-range weights can saturate there.
- ARM64: full range; the NEON/i8mm kernels accumulate in 32 bits.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from ..artifact import Artifact, StageOutput, copy_support_files
from ..errors import ArtifactError
from ..hardware import cpu_info
from . import StageConfig

NAME = "quantize"
ISAS = ("avx512_vnni", "avx_vnni", "avx512", "avx2", "arm64", "generic")

_REASONS = {
    "avx512_vnni": "AVX512-VNNI accumulates u8xs8 products in 32 bits: full 8-bit weights, no saturation",
    "avx_vnni": "AVX-VNNI accumulates u8xs8 products in 32 bits: full 8-bit weights, no saturation",
    "avx512": "AVX-512 without VNNI: full-range weights; the 16-bit pair sums can saturate rarely, accepted",
    "avx2": "AVX2 without VNNI: vpmaddubsw sums u8xs8 pairs in 16 bits, so weights use 7 bits (reduce_range) "
            "to avoid saturation",
    "arm64": "ARM64 NEON/i8mm kernels accumulate in 32 bits: full 8-bit weights",
    "generic": "no SIMD INT8 path detected: 7-bit weights (reduce_range) as the safe default",
}


class Config(StageConfig):
    mode: Literal["dynamic"] = "dynamic"
    isa: Literal["auto", "avx512_vnni", "avx_vnni", "avx512", "avx2", "arm64", "generic"] = "auto"
    """Instruction set to tune for; `auto` reads it from this CPU."""
    per_channel: bool = False
    """One scale per output channel instead of per tensor: sometimes more accurate, slightly larger."""
    reduce_range: bool | None = None
    """7-bit weights; None chooses from the instruction set."""
    op_types: list[str] = ["MatMul", "Gather"]
    """Operators to quantise; Gather covers the embedding tables."""
    nodes_to_exclude: list[str] = []


def resolve(config: Config) -> Config:
    """Pin `auto` choices to this machine, so the artifact id says what was really built."""
    isa = cpu_info().isa if config.isa == "auto" else config.isa
    reduce_range = config.reduce_range if config.reduce_range is not None else isa in ("avx2", "generic")
    return config.model_copy(update={"isa": isa, "reduce_range": reduce_range})


def run(parent: Artifact, config: Config, workdir: Path) -> StageOutput:
    if parent.format != "onnx":
        raise ArtifactError(f"quantize needs an ONNX variant, but {parent.path} is {parent.format}")
    if parent.precision != "fp32":
        raise ArtifactError(f"{parent.path} is already {parent.precision}: quantise an FP32 ONNX variant")
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    config = resolve(config)
    quantize_dynamic(
        str(parent.onnx_path), str(workdir / "model.onnx"),
        weight_type=QuantType.QInt8, per_channel=config.per_channel, reduce_range=config.reduce_range,
        op_types_to_quantize=config.op_types, nodes_to_exclude=config.nodes_to_exclude,
        # Fused contrib ops (from optimize-graph) have no ONNX shape inference; FP32 is their type.
        extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
    )
    copy_support_files(parent.path, workdir)
    quantized = onnx.load(str(workdir / "model.onnx"), load_external_data=False)
    counts: dict[str, int] = {}
    for node in quantized.graph.node:
        if node.op_type in ("MatMulInteger", "DynamicQuantizeLinear", "DequantizeLinear", "QAttention",
                            "DynamicQuantizeMatMul", "MatMulIntegerToFloat", "QGemm"):
            counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return StageOutput(format="onnx", task=parent.task, precision="int8", metadata={
        "mode": config.mode,
        "isa": config.isa,
        "cpu": cpu_info().summary(),
        "reduce_range": config.reduce_range,
        "per_channel": config.per_channel,
        "activation_type": "uint8",
        "weight_type": "int8",
        "op_types": config.op_types,
        "reason": _REASONS[config.isa] + ("" if config.reduce_range == (config.isa in ("avx2", "generic"))
                                          else " (reduce_range overridden by the recipe)"),
        "quantized_nodes": counts,
    })
