"""Cells of the Markdown tables: the shared formatting every report section (core or task) uses."""

from __future__ import annotations

MB = 1e6
MIB = 2**20


def ms_cell(summary: dict | None, key: str = "p50") -> str:
    """A latency percentile with its interval: `12.34 [12.10-12.60]`; `-` when not measured."""
    if not summary or key not in summary:
        return "-"
    lo, hi = summary.get(f"{key}_ci", [None, None])
    return f"{summary[key]:.2f}" + (f" [{lo:.2f}-{hi:.2f}]" if lo is not None else "")


def ratio_cell(value: float | None, ci: list | None = None) -> str:
    """A ratio such as a speed-up, with its interval: `1.52x [1.48-1.57]`."""
    if value is None:
        return "-"
    return f"{value:.2f}x" + (f" [{ci[0]:.2f}-{ci[1]:.2f}]" if ci else "")


def few_mark(summary: dict | None, pct: int) -> str:
    """A mark on a percentile that rests on too few timings to trust."""
    warnings = (summary or {}).get("warnings") or []
    return "†" if any(w.startswith(f"p{pct} ") for w in warnings) else ""


def throughput_cell(prof: dict) -> str:
    """Sequences per second with the padding share that batching cost."""
    t = prof.get("throughput")
    if t:
        return f"{t['seq_per_s']:.0f} ({100 * t['padding_share']:.0f}% padding)"
    tput = prof.get("throughput_seq_per_s")  # results/1
    return "-" if tput is None else f"{tput:.0f}"


def memory_cell(prof: dict) -> str:
    """Peak / while loading / steady resident memory in MiB."""
    cells = [prof.get("peak_rss_bytes"), prof.get("load_peak_rss_bytes"), prof.get("steady_rss_bytes")]
    return " / ".join("-" if b is None else f"{b / MIB:.0f}" for b in cells)


def number_cell(value, fmt: str, missing: str = "-") -> str:
    """`value` formatted by `fmt`, or `missing` when there is none."""
    return missing if value is None else fmt.format(value)


def interval_cell(ci: list | None, signed: bool = False) -> str:
    """` [lo-hi]` (or ` [+lo to +hi]` for a difference) after a figure; nothing without an interval."""
    if not ci:
        return ""
    return f" [{ci[0]:+.2f} to {ci[1]:+.2f}]" if signed else f" [{ci[0]:.2f}-{ci[1]:.2f}]"
