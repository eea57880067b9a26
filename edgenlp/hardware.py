"""What the CPU can do, read once, so that quantisation settings and reports can explain themselves."""

from __future__ import annotations

import os
import platform
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path


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
