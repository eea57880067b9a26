"""What the CPU can do, read once, so that quantisation settings and reports can explain themselves,
and how fast it reads memory, which bounds a decoder's tokens a second."""

from __future__ import annotations

import os
import platform
import time
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class CpuInfo:
    model: str
    arch: str
    logical_cores: int
    flags: frozenset[str]

    @property
    def isa(self) -> str:
        """The best INT8 instruction family: avx512_vnni, avx_vnni, avx512, avx2, arm64-dotprod, arm64 or generic."""
        if self.arch in ("aarch64", "arm64"):
            return "arm64-dotprod" if {"asimddp", "i8mm"} & self.flags else "arm64"
        if "avx512_vnni" in self.flags or "avx512vnni" in self.flags:
            return "avx512_vnni"
        if "avx_vnni" in self.flags:
            return "avx_vnni"
        if "avx512f" in self.flags and "avx512bw" in self.flags:
            return "avx512"
        if "avx2" in self.flags:
            return "avx2"
        return "generic"

    @property
    def int8_saturates(self) -> bool:
        """Whether onnxruntime's u8 x s8 kernels here add pairs of products in 16 bits (x86 without VNNI)."""
        return self.isa in ("avx2", "avx512")

    def summary(self) -> dict:
        d = asdict(self)
        interesting = (
            "avx2",
            "avx512f",
            "avx512bw",
            "avx512_vnni",
            "avx_vnni",
            "amx_int8",
            "asimd",
            "asimddp",
            "i8mm",
            "sve",
        )
        d["flags"] = sorted(f for f in self.flags if f in interesting)
        d["isa"] = self.isa
        return d


@lru_cache(maxsize=1)
def cpu_info() -> CpuInfo:
    model, flags = platform.processor() or "unknown", set()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            key = key.strip().lower()
            if key in ("model name", "hardware") and model in ("unknown", "", platform.machine()):
                model = value.strip()
            elif key in ("flags", "features") and not flags:
                flags = set(value.split())
    return CpuInfo(model=model, arch=platform.machine(), logical_cores=os.cpu_count() or 1, flags=frozenset(flags))


_BANDWIDTH: dict = {}


def memory_bandwidth(threads: int = 1) -> dict:
    """This machine's memory read bandwidth with `threads` readers: the faster of two readers, each the
    best of 5 passes over data far beyond any cache.

    numpy's sum reads one stream a thread (numpy releases the GIL, so two threads measure what a
    two-thread decode can read). onnxruntime's int8 matrix-vector product reads its weights the
    way a decoding step does, in several streams at once; on the VNNI EPYC a fused INT8 decoder
    read at 131% of numpy's figure, so numpy's alone can understate the limit. The limit a profile
    is held to uses its own thread count.
    """
    if threads not in _BANDWIDTH:
        readers = {"numpy_sum": _numpy_read(threads), "onnxruntime_int8_gemv": _gemv_read(threads)}
        found = {k: v for k, v in readers.items() if v}
        _BANDWIDTH[threads] = {
            "bytes_per_s": max(found.values()),
            "threads": threads,
            "readers_bytes_per_s": readers,
            "how": f"the faster of numpy sums over 512 MiB of float64 and onnxruntime's int8 matrix-vector "
            f"product over 256 MiB of weights, by {threads} thread(s), best of 5 each (read only)",
        }
    return dict(_BANDWIDTH[threads])


def _numpy_read(threads: int) -> float:
    from concurrent.futures import ThreadPoolExecutor

    data = np.ones(64 * 2**20, dtype=np.float64)  # 512 MiB
    parts = np.array_split(data, threads)
    best = float("inf")
    with ThreadPoolExecutor(threads) as pool:
        for _ in range(5):
            t0 = time.perf_counter()
            list(pool.map(np.sum, parts))
            best = min(best, time.perf_counter() - t0)
    return data.nbytes / best


def _gemv_read(threads: int) -> float | None:
    """Bytes a second onnxruntime's DynamicQuantizeMatMul reads for one row against 256 MiB of int8 weights."""
    try:
        import onnxruntime as ort
        from onnx import TensorProto, helper, numpy_helper

        rows, cols = 8192, 32768
        weights = np.frombuffer(np.random.default_rng(0).bytes(rows * cols), dtype=np.int8).reshape(rows, cols)
        node = helper.make_node("DynamicQuantizeMatMul", ["x", "w", "scale", "zero"], ["y"], domain="com.microsoft")
        graph = helper.make_graph(
            [node],
            "bandwidth",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, rows])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, cols])],
            [
                numpy_helper.from_array(weights, "w"),
                numpy_helper.from_array(np.full(cols, 0.01, np.float32), "scale"),
                numpy_helper.from_array(np.zeros(cols, np.int8), "zero"),
            ],
        )
        model = helper.make_model(
            graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)], ir_version=9
        )
        from .runtime.session import session_options

        session = ort.InferenceSession(
            model.SerializeToString(), session_options(threads), providers=["CPUExecutionProvider"]
        )
        del weights, model, graph
        x = {"x": np.ones((1, rows), dtype=np.float32)}
        session.run(None, x)
        best = float("inf")
        for _ in range(5):
            t0 = time.perf_counter()
            session.run(None, x)
            best = min(best, time.perf_counter() - t0)
        return rows * cols / best
    except Exception:  # one reader less: the limit stands on numpy's alone
        return None
