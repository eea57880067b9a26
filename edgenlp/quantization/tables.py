"""Embedding tables as 4-bit blocks (`GatherBlockQuantized`): the size lever of a small encoder.

A word-embedding table is only gathered from, a few rows per text, yet after depth and width
pruning it is most of what an INT8 MiniLM ships (a 14,261 x 384 table of a trimmed vocabulary is
5.5 MB of a 9.5 MB bundle). onnxruntime's weight-only quantiser writes 4-bit blocks along the hidden
size with one scale each; the rest of the graph is left as the INT8 stage made it. The rows cost
more to read than INT8 ones: onnxruntime's `GatherBlockQuantized` CPU kernel took 1.06 ms a run at
128 tokens on an AVX2 EPYC (`benchmarks/table_gather_profile.py`), so a long text pays a millisecond
for the smaller file.
"""

from __future__ import annotations

from pathlib import Path


def four_bit_tables(path: Path, block_size: int, exclude: list[str], only: list[str] | None = None) -> int:
    """Rewrite, in place, every `Gather` of a constant float table in the model at `path` as 4-bit blocks
    of `block_size` values (symmetric, round to nearest). Returns how many tables were rewritten."""
    import onnx
    from onnxruntime.quantization.matmul_nbits_quantizer import DefaultWeightOnlyQuantConfig, MatMulNBitsQuantizer

    model = onnx.load(str(path))
    tables = {t.name for t in model.graph.initializer if t.data_type == onnx.TensorProto.FLOAT and len(t.dims) == 2}
    chosen = [
        n.name
        for n in model.graph.node
        if n.op_type == "Gather" and n.input[0] in tables and n.name not in exclude and (only is None or n.name in only)
    ]
    if not chosen:
        return 0
    others = [n.name for n in model.graph.node if n.op_type == "Gather" and n.name not in chosen]
    axes = (("Gather", 1),)  # blocks run along the hidden size of each row
    quantizer = MatMulNBitsQuantizer(
        model,
        bits=4,
        block_size=block_size,
        is_symmetric=True,
        nodes_to_exclude=others,
        op_types_to_quantize=("Gather",),
        quant_axes=axes,
        algo_config=DefaultWeightOnlyQuantConfig(
            block_size=block_size, is_symmetric=True, op_types_to_quantize=("Gather",), quant_axes=axes
        ),
    )
    quantizer.process()
    onnx.save_model(quantizer.model.model, str(path))
    return len(chosen)
