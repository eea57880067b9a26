"""Embedding tables as 4-bit blocks, unpacked by standard operators: the size lever of a small encoder.

A word-embedding table is only gathered from, a few rows per text, yet after depth and width
pruning it is most of what an INT8 MiniLM ships (a 14,261 x 384 table of a trimmed vocabulary is
5.5 MB of a 9.5 MB bundle). Here each row is cut into blocks of `block_size` values; a block keeps
its minimum and its step ((max - min) / 15) as float16 and its values as 4-bit codes, two a byte.
That is 0.625 bytes a value at block 32, against INT8's 1.

onnxruntime has a kernel for this (`GatherBlockQuantized`, which its weight-only quantiser writes),
but it is slow on CPU: 1.06 ms a MiniLM-L3 run at 128 tokens on an AVX2 EPYC, against 0.04 ms for
the INT8 table (`benchmarks/results/table_gather_profile.json`), and it needs opset 21. Gathering
the packed bytes with the ordinary `Gather` and unpacking them with a dozen elementwise operators
(Cast, Floor, Mul, Sub, Concat, Add) does the same work on only the rows a text reads, 2.3x faster
at 128 tokens (`benchmarks/results/table_kernels.json`), with standard operators only: the graph
keeps its opset, and transformers.js under Node runs it (tested).
Symmetric blocks would waste a level and the sign; the minimum and step fit skewed blocks better.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

LEVELS = 15  # 4-bit codes 0..15
SUFFIX = "_nibbles"


@dataclass(frozen=True)
class Blocks:
    """One table in 4-bit blocks: `codes[r, b, k]` is value k of block b of row r, two to a byte
    (k and k + block/2 share byte k); a value reads back as `offsets + codes * steps`."""

    packed: np.ndarray  # uint8 [rows, blocks, block / 2]
    steps: np.ndarray  # float16 [rows, blocks, 1]
    offsets: np.ndarray  # float16 [rows, blocks, 1]

    @classmethod
    def of(cls, table: np.ndarray, block_size: int) -> Blocks:
        rows, width = table.shape
        blocks = table.astype(np.float32).reshape(rows, width // block_size, block_size)
        low, high = blocks.min(-1, keepdims=True), blocks.max(-1, keepdims=True)
        # the stored (float16) minimum and step are the ones the codes are rounded against
        offsets = low.astype(np.float16)
        steps = ((high - offsets.astype(np.float32)) / LEVELS).astype(np.float16)
        divisor = np.where(steps > 0, steps.astype(np.float32), 1.0)
        codes = np.clip(np.rint((blocks - offsets.astype(np.float32)) / divisor), 0, LEVELS).astype(np.uint8)
        half = block_size // 2
        packed = (codes[..., :half] + 16 * codes[..., half:]).astype(np.uint8)
        return cls(packed, steps, offsets)

    def values(self) -> np.ndarray:
        """The table as it reads back, [rows, width] float32 (what the graph computes for a row)."""
        low = (self.packed % 16).astype(np.float32)
        high = (self.packed // 16).astype(np.float32)
        codes = np.concatenate([low, high], -1)
        out = self.offsets.astype(np.float32) + codes * self.steps.astype(np.float32)
        return out.reshape(out.shape[0], -1)


def tables_to_pack(
    model, block_size: int, min_rows: int | None, exclude: list[str], only: list[str] | None = None
) -> list[str]:
    """Names of the `Gather` nodes (axis 0) of constant float tables of at least `min_rows` rows (None:
    an eighth of the largest table's) and a width `block_size` divides, that are not excluded (and,
    with `only`, are listed)."""
    import onnx

    gathered = {n.input[0] for n in model.graph.node if n.op_type == "Gather"}
    candidates = [
        t
        for t in model.graph.initializer
        if t.data_type == onnx.TensorProto.FLOAT
        and len(t.dims) == 2
        and t.name in gathered
        and t.dims[1] % block_size == 0
    ]
    if not candidates:
        return []
    floor = min_rows if min_rows is not None else max(t.dims[0] for t in candidates) / 8
    tables = {t.name: t for t in candidates if t.dims[0] >= floor}
    chosen = []
    for node in model.graph.node:
        if node.op_type != "Gather" or node.input[0] not in tables or node.name in exclude:
            continue
        axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
        if axis == 0 and (only is None or node.name in only):
            chosen.append(node.name)
    return chosen


def pack_tables(path: Path, nodes: list[str], block_size: int) -> list[str]:
    """Rewrite, in place, each named `Gather` (from `tables_to_pack`) of the model at `path` to read a 4-bit
    table and unpack the rows it gathered. Returns the tables rewritten."""
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(path))
    inits = {t.name: t for t in model.graph.initializer}
    by_name = {n.name: n for n in model.graph.node}
    users: dict[str, int] = {}
    for node in model.graph.node:
        for name in node.input:
            users[name] = users.get(name, 0) + 1
    constants = {
        "sixteenth": np.array(1 / 16, np.float32),
        "sixteen": np.array(16, np.float32),
    }
    done: list[str] = []
    for node_name in nodes:
        gather = by_name[node_name]
        table_name, indices = gather.input[0], gather.input[1]
        table = numpy_helper.to_array(inits[table_name])
        blocks = Blocks.of(table, block_size)
        p = f"{table_name}{SUFFIX}"
        stored = {
            p: blocks.packed,
            f"{p}_steps": blocks.steps,
            f"{p}_offsets": blocks.offsets,
            f"{p}_width": np.array([table.shape[1]], np.int64),
        }
        for name, value in stored.items():
            model.graph.initializer.append(numpy_helper.from_array(value, name=name))
        for name, value in constants.items():
            if f"{SUFFIX}_{name}" not in inits:
                model.graph.initializer.append(numpy_helper.from_array(value, name=f"{SUFFIX}_{name}"))
                inits[f"{SUFFIX}_{name}"] = model.graph.initializer[-1]
        t = f"{node_name}{SUFFIX}"
        unpack = [
            helper.make_node("Gather", [p, indices], [f"{t}/bytes"], axis=0),
            helper.make_node("Cast", [f"{t}/bytes"], [f"{t}/byte"], to=onnx.TensorProto.FLOAT),
            helper.make_node("Mul", [f"{t}/byte", f"{SUFFIX}_sixteenth"], [f"{t}/sixteenths"]),
            helper.make_node("Floor", [f"{t}/sixteenths"], [f"{t}/high"]),
            helper.make_node("Mul", [f"{t}/high", f"{SUFFIX}_sixteen"], [f"{t}/high16"]),
            helper.make_node("Sub", [f"{t}/byte", f"{t}/high16"], [f"{t}/low"]),
            helper.make_node("Concat", [f"{t}/low", f"{t}/high"], [f"{t}/codes"], axis=-1),
            helper.make_node("Gather", [f"{p}_steps", indices], [f"{t}/step16"], axis=0),
            helper.make_node("Cast", [f"{t}/step16"], [f"{t}/step"], to=onnx.TensorProto.FLOAT),
            helper.make_node("Gather", [f"{p}_offsets", indices], [f"{t}/offset16"], axis=0),
            helper.make_node("Cast", [f"{t}/offset16"], [f"{t}/offset"], to=onnx.TensorProto.FLOAT),
            helper.make_node("Mul", [f"{t}/codes", f"{t}/step"], [f"{t}/scaled"]),
            helper.make_node("Add", [f"{t}/scaled", f"{t}/offset"], [f"{t}/blocks"]),
            helper.make_node("Shape", [indices], [f"{t}/index_shape"]),
            helper.make_node("Concat", [f"{t}/index_shape", f"{p}_width"], [f"{t}/shape"], axis=0),
            helper.make_node("Reshape", [f"{t}/blocks", f"{t}/shape"], [gather.output[0]]),
        ]
        for i, new in enumerate(unpack):
            new.name = f"{t}/{i}_{new.op_type}"
        position = list(model.graph.node).index(gather)
        model.graph.node.remove(gather)
        for offset, new in enumerate(unpack):
            model.graph.node.insert(position + offset, new)
        users[table_name] -= 1
        if users[table_name] == 0:  # the float table is gone unless something else reads it
            model.graph.initializer.remove(inits.pop(table_name))
        done.append(table_name)
    if done:
        onnx.save_model(model, str(path))
    return done
