"""One embedding table read three ways: INT8, onnxruntime's 4-bit kernel, edgenlp's 4-bit unpacking.

    python benchmarks/table_kernels.py runs/frontier-tweets/variants/onnx-l3 --lengths 24 128

The word table of an FP32 ONNX variant becomes three one-table graphs, each gathering the rows of a
batch-1 text of `--lengths` random in-vocabulary ids:
- `int8`: what the `quantize` stage's `embedding_bits: 8` makes (onnxruntime's dynamic quantiser):
  `Gather` of INT8 rows, `DequantizeLinear` with one scale;
- `gather-block-quantized`: onnxruntime's weight-only quantiser on the same `Gather` (4-bit blocks of
  `--block-size`, symmetric, opset 21), what `embedding_bits: 4` made before;
- `nibbles`: `edgenlp.quantization.tables.pack_tables` (4-bit blocks with a float16 minimum and step,
  unpacked by standard operators), what `embedding_bits: 4` makes now.
Each runs on 1 thread, the three interleaved for `--rounds` rounds of `--runs` calls; the p50 of
every call is reported with the table's bytes and its error against FP32 over every row. Saves
`benchmarks/results/table_kernels.json`.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import record  # noqa: E402

from edgenlp.artifact import onnx_file  # noqa: E402
from edgenlp.quantization import tables  # noqa: E402


def word_table(model_path: Path):
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(model_path))
    gathered = {n.input[0] for n in model.graph.node if n.op_type == "Gather"}
    found = [t for t in model.graph.initializer if t.name in gathered and len(t.dims) == 2]
    largest = max(found, key=lambda t: t.dims[0])
    return largest.name, numpy_helper.to_array(largest), model.opset_import


def one_gather(table, opsets, path: Path) -> Path:
    """A graph that gathers rows of `table` for `ids` [1, n]: the float starting point of each layout."""
    import onnx
    from onnx import helper, numpy_helper

    graph = helper.make_graph(
        [helper.make_node("Gather", ["table", "ids"], ["rows"], name="word_gather")],
        "table",
        [helper.make_tensor_value_info("ids", onnx.TensorProto.INT64, [1, None])],
        [helper.make_tensor_value_info("rows", onnx.TensorProto.FLOAT, None)],
        [numpy_helper.from_array(table, "table")],
    )
    model = helper.make_model(graph, opset_imports=[o for o in opsets if o.domain in ("", "ai.onnx")])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def layouts(table, opsets, block_size: int, work: Path) -> dict[str, Path]:
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.matmul_nbits_quantizer import DefaultWeightOnlyQuantConfig, MatMulNBitsQuantizer

    out = {}
    source = one_gather(table, opsets, work / "float.onnx")
    out["int8"] = work / "int8.onnx"
    quantize_dynamic(str(source), str(out["int8"]), weight_type=QuantType.QInt8, op_types_to_quantize=["Gather"])
    axes = (("Gather", 1),)
    quantizer = MatMulNBitsQuantizer(
        onnx.load(str(source)),
        bits=4,
        block_size=block_size,
        is_symmetric=True,
        op_types_to_quantize=("Gather",),
        quant_axes=axes,
        algo_config=DefaultWeightOnlyQuantConfig(
            block_size=block_size, is_symmetric=True, op_types_to_quantize=("Gather",), quant_axes=axes
        ),
    )
    quantizer.process()
    out["gather-block-quantized"] = work / "gbq.onnx"
    onnx.save_model(quantizer.model.model, str(out["gather-block-quantized"]))
    out["nibbles"] = one_gather(table, opsets, work / "nibbles.onnx")
    tables.pack_tables(out["nibbles"], ["word_gather"], block_size)
    return out


def table_bytes(path: Path) -> int:
    import onnx

    return sum(len(t.raw_data) or 0 for t in onnx.load(str(path)).graph.initializer if t.dims and len(t.dims) >= 1)


def main() -> int:
    import numpy as np
    import onnxruntime as ort

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("variant", type=Path, help="an FP32 ONNX variant (its largest gathered table is read)")
    parser.add_argument("--lengths", type=int, nargs="+", default=[24, 128])
    parser.add_argument("--block-size", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--name", default="table_kernels")
    args = parser.parse_args()
    name, table, opsets = word_table(onnx_file(args.variant))
    work = Path(tempfile.mkdtemp(prefix="edgenlp-tables-"))
    paths = layouts(table, opsets, args.block_size, work)
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    sessions = {k: ort.InferenceSession(str(p), options, providers=["CPUExecutionProvider"]) for k, p in paths.items()}
    every_row = np.arange(table.shape[0], dtype=np.int64)[None]
    summary: dict = {
        "variant": str(args.variant),
        "table": name,
        "rows": int(table.shape[0]),
        "width": int(table.shape[1]),
        "block_size": args.block_size,
        "threads": 1,
        "rounds": args.rounds,
        "runs": args.runs,
        "layouts": {},
    }
    for layout, session in sessions.items():
        rows = session.run(None, {"ids": every_row})[0][0]
        summary["layouts"][layout] = {
            "bytes": table_bytes(paths[layout]),
            "rmse": float(np.sqrt(((rows - table) ** 2).mean())),
            "max_error": float(np.abs(rows - table).max()),
            "p50_us": {},
        }
    rng = np.random.default_rng(0)
    for length in args.lengths:
        feed = {"ids": rng.integers(0, table.shape[0], (1, length), dtype=np.int64)}
        times: dict[str, list[float]] = {k: [] for k in sessions}
        for session in sessions.values():
            session.run(None, feed)
        for _ in range(args.rounds):
            for layout, session in sessions.items():
                for _ in range(args.runs):
                    start = time.perf_counter()
                    session.run(None, feed)
                    times[layout].append(time.perf_counter() - start)
        for layout, found in times.items():
            summary["layouts"][layout]["p50_us"][str(length)] = round(float(np.median(found)) * 1e6, 1)
    for layout, row in summary["layouts"].items():
        print(
            f"{layout:<24} {row['bytes'] / 1e6:6.2f} MB, rmse {row['rmse']:.5f}, p50 "
            + ", ".join(f"{us:.0f} us at {n} tokens" for n, us in row["p50_us"].items())
        )
    record.save(args.name, summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
