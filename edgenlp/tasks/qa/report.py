"""The reader's Markdown sections and plots: EM and F1 with intervals, and the answers that changed."""

from __future__ import annotations

from ...report.formatting import MB, MIB, interval_cell, ratio_cell
from ..classification.report import latency_sections


def report_sections(results: dict) -> list[str]:
    sel, ev = results.get("selection"), results["eval"]
    lines = ["## Answers: exact match, F1 and size", ""]
    if ev.get("note"):
        lines += [f"**Note:** {ev['note']}.", ""]
    lines += [
        f"SQuAD v1.1's exact match and F1 x100 (its normalisation; the best over each question's gold answers) on "
        f"{ev['examples']} test questions, answered one at a time: windows of the context "
        f"({ev['windows_per_question']:.2f} per question on average), the best span across them. Bootstrap 95% "
        "intervals over questions; Δ F1 against the reference with an interval from the same resampled questions.",
        "",
        "| variant | format | size MB | size vs ref | EM [95% CI] | F1 [95% CI] | Δ F1 [95% CI] | answers as ref | "
        "peak RSS MiB |",
        "|---|---|---:|---:|---|---|---|---:|---:|",
    ]
    for v in results["variants"]:
        m, r = v["metrics"], v["ratios"]
        agree = m.get("answer_agreement_with_reference")
        mark = " (selected)" if sel and v["name"] == sel["selected"] else ""
        lines.append(
            f"| {v['name']}{mark} | {v.get('format', '?')} {v.get('precision', '')} | {v['size_bytes'] / MB:.1f} | "
            f"{ratio_cell(r['size'])} | {m['exact_match']:.2f}{interval_cell(m['exact_match_ci'])} | "
            f"{m['f1']:.2f}{interval_cell(m['f1_ci'])} | {r['f1_delta_points']:+.2f}{interval_cell(m.get('f1_delta_ci'), True)} | "
            f"{'-' if agree is None else f'{100 * agree:.1f}%'} | {v['peak_rss_bytes'] / MIB:.0f} |"
        )
    changed = [(v["name"], c) for v in results["variants"] for c in v["metrics"].get("changed_vs_reference", [])[:3]]
    if changed:
        lines += ["", "## Answers that changed against the reference (first three per variant)", ""]
        lines += [
            f"- `{name}`: “{c['question'][:120]}”: {c['reference']!r} → {c['variant']!r} (gold {c['gold']!r})"
            for name, c in changed
        ]
    return lines + latency_sections(results)


def figures(results: dict) -> list[tuple[str, str | None]]:
    from ...report import plots

    return [("F1 against latency, with the Pareto front", plots.quality_vs_speed(results))]
