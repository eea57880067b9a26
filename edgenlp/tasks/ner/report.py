"""The tagger's Markdown sections and plots: entity scores, F1 per type against the reference, what changed."""

from __future__ import annotations

from ...report.formatting import MB, MIB, interval_cell, ratio_cell
from ..classification.report import latency_sections


def report_sections(results: dict) -> list[str]:
    sel, ev = results.get("selection"), results["eval"]
    lines = [
        "## Entity scores and size",
        "",
        f"Entity-level precision, recall and F1 x100 (seqeval's reading of IOB2: type and both ends exact) on "
        f"{ev['examples']} test sentences ({ev['words']} words), tagged one sentence at a time; each word is "
        "tagged by its first subword. F1 with a bootstrap 95% interval over sentences; Δ against the reference "
        "with an interval from the same resampled sentences. Word agreement: words tagged as the reference tags them.",
        "",
        "| variant | format | size MB | size vs ref | precision | recall | F1 [95% CI] | Δ F1 [95% CI] | "
        "word agreement | sentences changed | peak RSS MiB |",
        "|---|---|---:|---:|---:|---:|---|---|---:|---:|---:|",
    ]
    for v in results["variants"]:
        m, r = v["metrics"], v["ratios"]
        agree = m.get("word_agreement_with_reference")
        mark = " (selected)" if sel and v["name"] == sel["selected"] else ""
        lines.append(
            f"| {v['name']}{mark} | {v.get('format', '?')} {v.get('precision', '')} | {v['size_bytes'] / MB:.1f} | "
            f"{ratio_cell(r['size'])} | {m['entity_precision']:.2f} | {m['entity_recall']:.2f} | "
            f"{m['entity_f1']:.2f}{interval_cell(m['entity_f1_ci'])} | {r['entity_f1_delta_points']:+.2f}"
            f"{interval_cell(m.get('entity_f1_delta_ci'), signed=True)} | "
            f"{'-' if agree is None else f'{100 * agree:.2f}%'} | {m.get('sentences_with_changed_entities', '-')} | "
            f"{v['peak_rss_bytes'] / MIB:.0f} |"
        )
    types = ev["entity_types"]
    ref = next(v for v in results["variants"] if v["name"] == results["reference"])
    lines += [
        "",
        "## F1 per entity type",
        "",
        "The reference's F1 per type (gold entities in brackets), then each variant's difference in points.",
        "",
        "| variant | " + " | ".join(f"{t} ({ref['metrics']['per_type'][t]['support']})" for t in types) + " |",
        "|---|" + "---:|" * len(types),
        f"| {ref['name']} (reference) | "
        + " | ".join(f"{ref['metrics']['per_type'][t]['f1']:.1f}" for t in types)
        + " |",
    ]
    for v in results["variants"]:
        delta = v["metrics"].get("per_type_f1_delta")
        if delta:
            lines.append(f"| {v['name']} | " + " | ".join(f"{delta[t]:+.1f}" for t in types) + " |")
    changed = [(v["name"], c) for v in results["variants"] for c in v["metrics"].get("changed_vs_reference", [])[:3]]
    if changed:
        lines += ["", "## Entities that changed against the reference (first three per variant)", ""]
        lines += [
            f"- `{name}`: “{c['text'][:160]}”: {', '.join(c['reference']) or 'none'} → {', '.join(c['variant']) or 'none'}"
            for name, c in changed
        ]
    return lines + latency_sections(results)


def figures(results: dict) -> list[tuple[str, str | None]]:
    from ...report import plots

    return [("Entity F1 against latency, with the Pareto front", plots.quality_vs_speed(results))]
