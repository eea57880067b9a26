"""Which INT8 settings suit this CPU, and warnings for those known to be slower or less accurate here.

The advice follows onnxruntime's guidance for its CPU kernels and what edgenlp measured
(`benchmarks/results/quantize_isa.json`): x86 kernels take u8 activations x s8 weights; without
VNNI they add pairs of u8xs8 products in 16 bits (vpmaddubsw), which full-range weights can
saturate; ARM kernels take s8 activations (with a zero point: symmetric ones cost MiniLM 3.9 points
on the tweets, asymmetric 0.65; `benchmarks/results/arm64_check_sme.json`).
"""

from __future__ import annotations

from ..hardware import CpuInfo, cpu_info

X86 = ("avx512_vnni", "avx_vnni", "avx512", "avx2", "generic")
VNNI = ("avx512_vnni", "avx_vnni")
ARM = ("arm64", "arm64-dotprod")


def activation_type(isa: str) -> tuple[str, bool]:
    """(activation dtype, symmetric) that the INT8 kernels of `isa` are built for."""
    if isa in ARM:
        # signed, but asymmetric: a post-GELU or post-softmax range is lopsided, and a symmetric scale
        # spends half its codes on values that never occur (static INT8 of MiniLM on the tweets:
        # -3.9 points symmetric, -0.65 asymmetric, both entropy-calibrated)
        return "int8", False
    return "uint8", False


def per_channel_weights(isa: str) -> bool:
    """Whether per-channel weights are the default for `isa`: on ARM, yes (onnxruntime's ARM guidance: signed
    activations with per-channel weights); on x86 per tensor stays the default, so that
    variants built before keep their ids (per channel is measured as more faithful there too)."""
    return isa in ARM


def advise(
    isa: str | None = None,
    *,
    reduce_range: bool | None = None,
    activation: str | None = None,
    per_channel: bool | None = None,
    weight_type: str = "int8",
    cpu: CpuInfo | None = None,
) -> dict:
    """What suits `isa` (default: this CPU) and warnings about the requested settings."""
    cpu = cpu or cpu_info()
    isa = isa or cpu.isa
    act, symmetric = activation_type(isa)
    suits = [f"activations {act} ({'symmetric' if symmetric else 'asymmetric'}), weights int8 (symmetric)"]
    warnings = []
    if isa in VNNI:
        suits.append("full 8-bit weights: VNNI accumulates u8xs8 products in 32 bits, no saturation")
    elif isa in ("avx512", "avx2"):
        suits.append(
            "no VNNI: u8xs8 pairs are summed in 16 bits (vpmaddubsw) and can saturate; onnxruntime "
            "suggests 7-bit weights (reduce_range), but edgenlp measured full range as more accurate on "
            "AVX2 for dynamic INT8 (97.0% vs 92.9% label agreement), so full range is the default"
        )
        if reduce_range:
            warnings.append(
                f"reduce_range on {isa}: measured here as less accurate than full-range weights for "
                "dynamic INT8 (benchmarks/results/quantize_isa.json)"
            )
    elif isa in ARM:
        suits.append(
            "ARM dot-product kernels (sdot/udot, i8mm) accumulate in 32 bits: full 8-bit weights, no reduce_range"
            if isa == "arm64-dotprod"
            else "ARMv8.0 NEON kernels widen products to 16 bits and accumulate in 32: full 8-bit weights, "
            "no reduce_range"
        )
        suits.append("per-channel weights: the ARM default")
        if reduce_range:
            warnings.append(f"reduce_range on {isa}: the ARM kernels cannot saturate, so the lost bit buys nothing")
    else:
        suits.append("no SIMD INT8 path detected: onnxruntime's portable kernels; INT8 may not beat FP32 here")
        warnings.append("no AVX2, AVX-512 or ARM dot product found: INT8 speed-ups are unlikely on this CPU")
    if activation and activation != act:
        warnings.append(
            f"{activation} activations on {isa}: onnxruntime's kernels here are built for {act}; expect a slower graph"
        )
    if isa not in VNNI and isa not in ARM and activation == "int8":
        warnings.append("s8s8 without VNNI falls back to slower kernels in onnxruntime")
    if weight_type == "uint8":
        if isa in ("avx512", "avx2"):
            suits.append("uint8 weights: u8xu8 kernels widen to 16 bits and sum in 32, exact where u8xs8 saturates")
        else:
            warnings.append(
                f"uint8 weights on {isa}: its signed-weight kernels already accumulate in 32 bits, so unsigned "
                "weights buy no accuracy and may cost speed"
            )
    if per_channel:
        suits.append(
            "per-channel weights: one scale per output column; onnxruntime runs them at per-tensor speed "
            "on x86 and keeps more label agreement (measure it with the harness)"
        )
    if isa != cpu.isa and not (isa in ARM and cpu.isa in ARM):
        warnings.append(f"tuning for {isa}, but this CPU is {cpu.isa}: the latency measured here is not the target's")
    return {
        "isa": isa,
        "cpu": cpu.model,
        "vnni": isa in VNNI,
        "avx512": isa in ("avx512_vnni", "avx512"),
        "arm_dot_product": bool({"asimddp", "i8mm"} & cpu.flags),
        "suits": suits,
        "warnings": warnings,
    }
