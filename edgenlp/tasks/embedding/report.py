"""The embedding model's Markdown sections and plots: quality against gold and against the reference."""

from __future__ import annotations

from ...report.formatting import MB, MIB, ratio_cell
from ..classification.report import latency_sections


def report_sections(results: dict) -> list[str]:
    sel = results.get("selection")
    ev = results["eval"]
    lines = [
        "## Embedding quality and size",
        "",
        f"Spearman x100 between the cosine of each of {ev['examples']} test pairs and its gold score "
        "(bootstrap 95% interval over pairs; Δ against the reference with an interval from the same "
        f"resampled pairs). Cosine to the reference: every one of the {ev['sentences']} test sentences' "
        f"vectors against the reference's. Retrieval: for {ev['queries']} query sentences, the share of "
        f"the reference's 10 nearest sentences (of the {ev['sentences']}) that the variant also ranks in "
        "its 10 nearest.",
        "",
        "| variant | format | size MB | size vs ref | Spearman [95% CI] | Δ Spearman [95% CI] | cosine mean | "
        "cosine p1 | cosine min | recall@10 of ref's top 10 [95% CI] | peak RSS MiB |",
        "|---|---|---:|---:|---|---|---:|---:|---:|---|---:|",
    ]
    for v in results["variants"]:
        m, r = v["metrics"], v["ratios"]
        lo, hi = m["spearman_ci"]
        d_ci = m.get("spearman_delta_ci")
        cos, ret = m["cosine_to_reference"], m["retrieval"]
        rci = ret.get("recall_at_k_ci")
        mark = " (selected)" if sel and v["name"] == sel["selected"] else ""
        lines.append(
            f"| {v['name']}{mark} | {v.get('format', '?')} {v.get('precision', '')} | {v['size_bytes'] / MB:.1f} | "
            f"{ratio_cell(r['size'])} | {m['spearman']:.2f} [{lo:.2f}-{hi:.2f}] | {r['spearman_delta_points']:+.2f}"
            + (f" [{d_ci[0]:+.2f} to {d_ci[1]:+.2f}]" if d_ci else "")
            + f" | {cos['mean']:.5f} | {cos['p1']:.4f} | {cos['min']:.4f} | {100 * ret['recall_at_k']:.1f}%"
            + (f" [{100 * rci[0]:.1f}-{100 * rci[1]:.1f}]" if rci else "")
            + f" | {v['peak_rss_bytes'] / MIB:.0f} |"
        )
    edges = results["variants"][0]["metrics"]["cosine_to_reference"]["histogram"]["edges"]
    bins = [f"{a:g}-{min(b, 1.0):g}" for a, b in zip(edges[:-1], edges[1:])]
    lines += [
        "",
        "## Cosine to the reference: distribution",
        "",
        "Test sentences whose vector's cosine to the reference's falls in each range.",
        "",
        "| variant | " + " | ".join(bins) + " |",
        "|---|" + "---:|" * len(bins),
    ]
    for v in results["variants"]:
        counts = v["metrics"]["cosine_to_reference"]["histogram"]["counts"]
        lines.append(f"| {v['name']} | " + " | ".join(str(c) for c in counts) + " |")
    return lines + latency_sections(results)


def figures(results: dict) -> list[tuple[str, str | None]]:
    from ...report import plots

    return [("Spearman against latency, with the Pareto front", plots.quality_vs_speed(results))]
