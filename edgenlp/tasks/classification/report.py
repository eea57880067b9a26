"""The classifier's Markdown sections and plots: accuracy and size, what compression changed, latency."""

from __future__ import annotations

from ...report.formatting import MB, MIB, few_mark, memory_cell, ms_cell, ratio_cell, throughput_cell


def report_sections(results: dict) -> list[str]:
    """Accuracy and size, then one latency table per profile (Markdown lines)."""

    sel = results.get("selection")
    lines = [
        "## Accuracy and size",
        "",
        "| variant | format | size MB | size vs ref | accuracy % [95% CI] | Δ acc (points) | McNemar p | macro-F1 % | agreement with ref | peak RSS MiB |",
        "|---|---|---:|---:|---|---:|---:|---:|---:|---:|",
    ]
    for v in results["variants"]:
        m, r = v["metrics"], v["ratios"]
        lo, hi = m["accuracy_ci"]
        mc = m.get("mcnemar_vs_reference", {}).get("p_value")
        agree = m.get("label_agreement_with_reference")
        mark = " (selected)" if sel and v["name"] == sel["selected"] else ""
        lines.append(
            f"| {v['name']}{mark} | {v.get('format', '?')} {v.get('precision', '')} | {v['size_bytes'] / MB:.1f} | {ratio_cell(r['size'])} | "
            f"{100 * m['accuracy']:.2f} [{100 * lo:.1f}-{100 * hi:.1f}] | {r['accuracy_delta_points']:+.2f} | "
            f"{'-' if mc is None else f'{mc:.3f}'} | {100 * m['macro_f1']:.2f} | "
            f"{'-' if agree is None else f'{100 * agree:.1f}%'} | {v['peak_rss_bytes'] / MIB:.0f} |"
        )
    return lines + error_analysis_section(results) + latency_sections(results)


def latency_sections(results: dict) -> list[str]:
    """One latency table per profile: batch-1 percentiles per input length, end to end, throughput, memory."""
    lines: list[str] = []
    for p in results["profiles"]:
        name = p["name"]
        shapes = [("real" if s == "real" else f"len{s}") for s in p["seq_lengths"]]
        lines += [
            "",
            f"## Latency: profile `{name}` ({p['threads']} thread{'s' if p['threads'] > 1 else ''}, "
            f"batch {p['batch_size']})",
            "",
            "p50 ms [95% CI], p90 and p99 ms; speed-up = reference p50 / variant p50 [95% CI, rounds "
            "resampled in pairs]. Throughput: batches of the evaluation texts padded to their longest "
            "text (padding share in brackets). Memory: peak over the process, peak while loading, resident "
            "after the measurements.",
            "",
            "| variant | "
            + " | ".join(f"{s} p50 | {s} p90 | {s} p99 | {s} speed-up" for s in shapes)
            + " | end-to-end p50 | throughput seq/s | peak / load / steady RSS MiB | fits budget |",
            "|---|" + "---:|" * (4 * len(shapes) + 4),
        ]
        for v in results["variants"]:
            lat = v["latency_ms"].get(name, {})
            prof = v["profiles"].get(name, {})
            cells = []
            for s in shapes:
                summ = lat.get(s)
                key = f"{name}/{s}"
                cells += [
                    ms_cell(summ),
                    ms_cell(summ, "p90").split(" ")[0] + few_mark(summ, 90),
                    ms_cell(summ, "p99").split(" ")[0] + few_mark(summ, 99),
                    ratio_cell(v["ratios"]["speedup_p50"].get(key), (v["ratios"].get("speedup_p50_ci") or {}).get(key)),
                ]
            fits = prof.get("fits_memory_budget")
            lines.append(
                f"| {v['name']} | " + " | ".join(cells) + f" | {ms_cell(prof.get('e2e_ms'))} | "
                f"{throughput_cell(prof)} | {memory_cell(prof)} | "
                f"{'-' if fits is None else ('yes' if fits else 'NO')} (budget {p.get('memory_budget_mb') or '-'} MiB) |"
            )
        if any(few_mark((v["latency_ms"].get(name) or {}).get(s), 99) for v in results["variants"] for s in shapes):
            lines += [
                "",
                "† rests on fewer than 10 timings beyond the percentile: indicative only; raise "
                "`bench.iterations` (1,000 per length for a stable p99).",
            ]
    return lines


def error_analysis_section(results: dict, shown: int = 10) -> list[str]:
    """What each variant changed against the reference: calibration, per-class deltas, changed texts.

    Results written before these figures existed (no `calibration` in the metrics) get no section.
    """
    variants = [v for v in results["variants"] if "calibration" in v["metrics"]]
    if not variants:
        return []
    names = results["eval"]["labels"]
    lines = [
        "",
        "## What compression changed",
        "",
        "Calibration: expected calibration error (ECE, 10 equal-width bins of the top label's probability; "
        "0 = confidence matches accuracy). Changed: test texts whose predicted label differs from the "
        f"reference `{results['reference']}` (fixed: now right; broke: was right).",
        "",
        "| variant | ECE % | mean confidence % | changed | fixed | broke | both wrong | "
        + " | ".join(f"Δ recall {n} | Δ F1 {n}" for n in names)
        + " |",
        "|---|---:|---:|---:|---:|---:|---:|" + "---:|---:|" * len(names),
    ]
    for v in variants:
        m = v["metrics"]
        changed = m.get("changed_vs_reference") or []
        effects = [sum(c["effect"] == e for c in changed) for e in ("fixed", "broke", "both wrong")]
        delta = m.get("per_class_delta")
        cells = (
            " | ".join(f"{delta['recall'][k]:+.2f} | {delta['f1'][k]:+.2f}" for k in range(len(names)))
            if delta
            else " | ".join("- | -" for _ in names)
        )
        lines.append(
            f"| {v['name']} | {100 * m['calibration']['ece']:.2f} | "
            f"{100 * m['calibration']['mean_confidence']:.1f} | "
            + ("-" if v["name"] == results["reference"] else str(len(changed)))
            + f" | {' | '.join(map(str, effects))} | {cells} |"
        )
    for v in variants:
        changed = v["metrics"].get("changed_vs_reference") or []
        if not changed:
            continue
        lines += [
            "",
            f"`{v['name']}`: the {min(shown, len(changed))} of {len(changed)} changed texts the variant "
            "moved most (reference label and its probability → variant label and its probability):",
            "",
            "| # | text | true | reference | variant | effect |",
            "|---:|---|---|---|---|---|",
        ]
        for c in changed[:shown]:
            text = c["text"].replace("|", "\\|").replace("\n", " ")
            lines.append(
                f"| {c['index']} | {text} | {names[c['true']]} | {names[c['reference_label']]} "
                f"{c['reference_probability']:.3f} | {names[c['variant_label']]} {c['variant_probability']:.3f} "
                f"| {c['effect']} |"
            )
    return lines


def figures(results: dict) -> list[tuple[str, str | None]]:
    from ...report import plots

    return [
        ("Accuracy against latency, with the Pareto front", plots.accuracy_vs_latency(results)),
        ("Confusion matrices", plots.confusion_matrices(results)),
        ("Precision-recall curves (one vs rest)", plots.pr_curves(results)),
        ("Reliability diagrams (calibration)", plots.reliability_diagrams(results)),
    ]
