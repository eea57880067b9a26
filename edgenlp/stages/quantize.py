"""FP32 ONNX -> INT8 ONNX with onnxruntime's dynamic quantisation, tuned to the CPU it runs on.

Dynamic quantisation stores weights as INT8 and quantises activations on the fly, so it needs no
calibration data. Both the MatMuls and the word-embedding table (a Gather; half of MiniLM's
weights) are quantised by default: u8 activations x s8 weights.

`isa: auto` reads the instruction set and decides one thing from it, `reduce_range` (7-bit weights).
Without VNNI (AVX2, AVX-512 without VNNI), onnxruntime's u8 x s8 kernels add pairs of products in
16 bits (vpmaddubsw), which full-range weights can saturate; 7-bit weights cannot. Measured on
AVX2 (`benchmarks/quantize_isa.py`, `benchmarks/results/quantize_isa.json`), the saturation costs
less than the lost bit: full-range weights kept 97.0% label agreement with FP32 against 92.9% for
7-bit weights (87.27% against 85.44% accuracy on SST-2), at speeds within each other's intervals. So full range is chosen everywhere; the ISA and the reason are recorded
with every variant, and `reduce_range: true` remains a recipe setting.

Where the saturation itself matters, `weight_type: uint8` stores unsigned weights: onnxruntime's u8 x u8
kernels widen both to 16 bits and accumulate in 32 (vpmaddwd), so they are exact on every x86 CPU, and
slower than u8 x s8 without VNNI. On AVX2 it is what brings smoothed MiniLM embeddings to 95% of FP32's
nearest neighbours (`benchmarks/results/embeddings_minilm_sts_u8_avx2.json`), as u8 x s8 does on a VNNI CPU.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Literal

from pydantic import Field, model_serializer, model_validator

from ..artifact import Artifact, StageOutput, copy_support_files
from ..errors import ArtifactError
from ..hardware import cpu_info
from ..quantization import preflight, tables
from . import StageConfig

NAME = "quantize"
LIBRARIES = ("onnx", "onnxruntime")
log = logging.getLogger(__name__)
ISAS = ("avx512_vnni", "avx_vnni", "avx512", "avx2", "arm64", "arm64-dotprod", "generic")
IsaChoice = Literal["auto", "avx512_vnni", "avx_vnni", "avx512", "avx2", "arm64", "arm64-dotprod", "generic"]
"""`auto` (this CPU's) or an instruction set to build for: `arm64` is ARMv8.0 NEON, `arm64-dotprod`
ARMv8.2+ with sdot/udot (Neoverse, Cortex-A55/A76 and later), where onnxruntime's kernels differ."""

_MEASURED = (
    "measured on AVX2: 7-bit weights lost more label agreement (92.9% vs 97.0%) than 16-bit saturation "
    "of full-range weights, at equal speed within the intervals, so full range"
)
_REASONS = {
    "avx512_vnni": "AVX512-VNNI accumulates u8xs8 products in 32 bits: full 8-bit weights, no saturation",
    "avx_vnni": "AVX-VNNI accumulates u8xs8 products in 32 bits: full 8-bit weights, no saturation",
    "avx512": "AVX-512 without VNNI sums u8xs8 pairs in 16 bits (vpmaddubsw), as AVX2 does; " + _MEASURED,
    "avx2": "AVX2 without VNNI sums u8xs8 pairs in 16 bits (vpmaddubsw), which can saturate; " + _MEASURED,
    "arm64": "ARM64 NEON kernels widen u8xs8 products to 16 bits and accumulate in 32: full 8-bit weights; "
    "per-channel weights (the preflight's ARM setting)",
    "arm64-dotprod": "ARM64 sdot/udot kernels accumulate in 32 bits: full 8-bit weights; per-channel weights "
    "(the preflight's ARM setting)",
    "generic": "no SIMD INT8 path detected: onnxruntime's portable kernel accumulates in 32 bits, full 8-bit weights",
}
UNSIGNED_WEIGHTS = "uint8 weights set by the recipe: u8 x u8 kernels widen to 16 bits and accumulate in 32, exact"
REDUCE_RANGE = {isa: False for isa in ISAS}
"""What `reduce_range: null` becomes per instruction set (see the module docstring for why)."""


class Config(StageConfig):
    mode: Literal["dynamic"] = "dynamic"
    isa: IsaChoice = "auto"
    """Instruction set to tune for; `auto` reads it from this CPU."""
    per_channel: bool | None = None
    """One scale per output channel: measured on SST-2 MiniLM, 98.3% label agreement with FP32 against
    97.0% per tensor, at the same speed. None: per channel for ARM (the preflight's advice), per tensor
    on x86 (so the variants built before this choice keep their ids)."""
    reduce_range: bool | None = None
    """7-bit weights; None chooses from the instruction set."""
    weight_type: Literal["int8", "uint8"] = "int8"
    """`int8`: u8 x s8, onnxruntime's fastest kernels, which saturate without VNNI; `uint8`: u8 x u8, exact on
    every x86 CPU (asymmetric weights, a zero point per tensor or channel), slower without VNNI."""
    op_types: list[str] = ["MatMul", "Gemm", "Gather"]
    """Operators to quantise; Gemm covers GPT-2's Conv1D projections, Gather the embedding tables."""
    nodes_to_exclude: list[str] = []
    attention_matmuls: bool = False
    """Also quantise the MatMuls of two activations (attention scores and context; onnxruntime's dynamic
    default leaves them in float): faster on some CPUs, at a quality cost the benchmark measures."""
    embedding_bits: Literal[8, 4] = 8
    """Bits of the embedding tables (the `Gather`s of `op_types`): 4 stores the large ones as 4-bit blocks
    (a float16 minimum and step a block), 0.625 bytes a value at block 32 against INT8's 1, for a bundle
    under a size budget; the rows a text reads are unpacked by standard operators
    (`quantization/tables.py`), 2.3x faster than onnxruntime's `GatherBlockQuantized` kernel at 128
    tokens on an AVX2 EPYC (`benchmarks/results/table_kernels.json`)."""
    embedding_block_size: Literal[16, 32, 64, 128] = 32
    """Values per 4-bit block when `embedding_bits` is 4."""
    embedding_min_rows: int | None = Field(None, ge=1)
    """With `embedding_bits` 4, tables of fewer rows stay INT8. None: those with at least an eighth of the
    largest table's rows, which in a BERT is the word table alone; its position (512 rows) and
    token-type (2) tables are read once a token each too, and would save a few hundred kB."""

    @model_serializer(mode="wrap")
    def _ids_unchanged_by_settings_left_default(self, handler):
        """The 4-bit settings and unsigned weights enter the dump (and so the artifact id) only where they
        apply, so that variants built before them keep their ids."""
        out = handler(self)
        if isinstance(out, dict):
            if self.embedding_bits == 8:
                out.pop("embedding_min_rows", None)
            if self.weight_type == "int8":
                out.pop("weight_type", None)
        return out

    @model_validator(mode="after")
    def _four_bit_tables_need_gather(self) -> Config:
        if self.embedding_bits == 4 and "Gather" not in self.op_types:
            raise ValueError("embedding_bits 4 quantises the embedding tables: add Gather to op_types, or drop it")
        return self


def resolve(config: Config) -> Config:
    """Pin `auto` choices to this machine, so the artifact id says what was really built."""
    isa = cpu_info().isa if config.isa == "auto" else config.isa
    reduce_range = config.reduce_range if config.reduce_range is not None else REDUCE_RANGE[isa]
    per_channel = config.per_channel if config.per_channel is not None else preflight.per_channel_weights(isa)
    return config.model_copy(update={"isa": isa, "reduce_range": reduce_range, "per_channel": per_channel})


def check_parent(parent: Artifact, stage: str = NAME) -> None:
    if parent.format != "onnx":
        raise ArtifactError(f"{stage} needs an ONNX variant, but {parent.path} is {parent.format}")
    if parent.precision != "fp32":
        raise ArtifactError(f"{parent.path} is already {parent.precision}: quantise an FP32 ONNX variant")


def quantisable_nodes(model_path: Path, op_types: list[str]) -> list[str]:
    """The nodes dynamic quantisation touches for `op_types`, fused attention and embeddings included: what
    the accuracy-budget search ranks and may return to float."""
    from ..quantization import calibration

    return calibration.quantisable_nodes(model_path, with_fused_ops(op_types))


def check_excluded(
    parent: Artifact, op_types: list[str], names: list[str], quantisable: Callable = quantisable_nodes
) -> None:
    """Refuse node names that are not nodes the quantiser would touch (a typo would silently do nothing)."""
    unknown = sorted(set(names) - set(quantisable(parent.onnx_path, op_types))) if names else []
    if unknown:
        raise ArtifactError(
            f"nodes_to_exclude names {len(unknown)} node(s) that are not quantisable {op_types} "
            f"nodes of {parent.onnx_path.name} (first: {unknown[0]}): check the names"
        )


def quantize_file(parent: Artifact, config: Config, out: Path, only: list[str] | None = None) -> list[str]:
    """Write the dynamically quantised parent to `out`; `only`: quantise just these nodes. Returns the
    tables stored at 4 bits."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    check_excluded(parent, config.op_types, config.nodes_to_exclude)
    packed: list[str] = []
    if config.embedding_bits == 4:  # chosen on the parent, left in float by onnxruntime, then packed
        packed = tables.tables_to_pack(
            onnx.load(str(parent.onnx_path)),
            config.embedding_block_size,
            config.embedding_min_rows,
            config.nodes_to_exclude,
            only,
        )
        if not packed and only is None:
            raise ArtifactError(
                f"embedding_bits 4, but {parent.onnx_path.name} gathers from no float table of at least "
                f"{config.embedding_min_rows or 1} rows, {config.embedding_block_size} values wide, outside "
                "nodes_to_exclude: lower embedding_min_rows or embedding_block_size, or set embedding_bits 8"
            )
    quantize_dynamic(
        str(parent.onnx_path),
        str(out),
        weight_type=QuantType.QUInt8 if config.weight_type == "uint8" else QuantType.QInt8,
        per_channel=config.per_channel,
        reduce_range=config.reduce_range,
        op_types_to_quantize=with_fused_ops(config.op_types),
        nodes_to_exclude=[*config.nodes_to_exclude, *packed],
        nodes_to_quantize=only,
        # Fused contrib ops (from optimize-graph) have no ONNX shape inference; FP32 is their type.
        extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT, "MatMulConstBOnly": not config.attention_matmuls},
    )
    return tables.pack_tables(out, packed, config.embedding_block_size) if packed else []


FUSED_OPS = {"MatMul": ("Attention",), "Gather": ("EmbedLayerNormalization",)}
"""What `optimize-graph` fuses each operator into: quantising MatMuls quantises a fused attention's packed
Q/K/V weight too (onnxruntime's QAttention), and quantising Gathers the word table of a fused embedding
(QEmbedLayerNormalization). Without this a fused graph kept its attention weights in float."""


def with_fused_ops(op_types: list[str]) -> list[str]:
    return [*op_types, *(fused for op in op_types for fused in FUSED_OPS.get(op, ()) if fused not in op_types)]


def run(parent: Artifact, config: Config, workdir: Path) -> StageOutput:
    check_parent(parent)
    config = resolve(config)
    advice = preflight.advise(
        config.isa, reduce_range=config.reduce_range, per_channel=config.per_channel, weight_type=config.weight_type
    )
    for warning in advice["warnings"]:
        log.warning("preflight: %s", warning)
    four_bit_tables = quantize_file(parent, config, workdir / "model.onnx")
    copy_support_files(parent.path, workdir)
    return StageOutput(
        format="onnx",
        task=parent.task,
        precision="int8",
        metadata={
            "mode": config.mode,
            "isa": config.isa,
            "cpu": cpu_info().summary(),
            "reduce_range": config.reduce_range,
            "per_channel": config.per_channel,
            # onnxruntime's DynamicQuantizeLinear emits u8 only; the ARM kernels take u8 x s8 too
            "activation_type": "uint8",
            "weight_type": config.weight_type,
            "op_types": config.op_types,
            "embedding_bits": config.embedding_bits,
            "four_bit_tables": four_bit_tables,
            "reason": _REASONS[config.isa]
            + (
                ""
                if config.reduce_range == REDUCE_RANGE[config.isa]
                else f" (reduce_range={config.reduce_range} set by the recipe)"
            )
            + (f"; {UNSIGNED_WEIGHTS}" if config.weight_type == "uint8" else ""),
            "nodes_in_float": config.nodes_to_exclude,
            "preflight": advice,
            "quantized_nodes": quantized_node_counts(workdir / "model.onnx"),
        },
    )


QUANTIZED_OPS = (
    "MatMulInteger",
    "DynamicQuantizeLinear",
    "DequantizeLinear",
    "QuantizeLinear",
    "QAttention",
    "DynamicQuantizeMatMul",
    "MatMulIntegerToFloat",
    "QGemm",
    "GatherBlockQuantized",
)


def quantized_node_counts(model_path: Path) -> dict[str, int]:
    import onnx

    counts: dict[str, int] = {}
    for node in onnx.load(str(model_path), load_external_data=False).graph.node:
        if node.op_type in QUANTIZED_OPS:
            counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return counts
