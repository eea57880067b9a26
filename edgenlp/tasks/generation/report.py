"""The decoder's Markdown sections and plots: perplexity and fidelity, generation speed, continuations."""

from __future__ import annotations

from ...report.formatting import MB, MIB, ms_cell, number_cell, ratio_cell


def report_sections(results: dict) -> list[str]:

    sel = results.get("selection") or {}
    lines = [
        "## Quality: perplexity and fidelity to the reference",
        "",
        "Sliding-window perplexity (window = context, stride = half) on "
        + ", ".join(f"{k} ({s['tokens']:,} tokens)" for k, s in results["eval"]["streams"].items())
        + "; KL divergence and top-1 agreement of next-token distributions against the reference, per scored "
        f"token; greedy: share of {results['eval']['prompts']} prompts whose {results['eval']['continuation_tokens']} "
        "greedy tokens are identical to the reference's.",
        "",
        "| variant | format | size MB | size vs ref | perplexity [95% CI] | vs ref | mean KL | p99 KL | top-1 agreement | greedy identical |",
        "|---|---|---:|---:|---|---:|---:|---:|---:|---:|",
    ]
    for v in results["variants"]:
        m, r = v["metrics"], v["ratios"]
        lo, hi = m["perplexity_ci"]
        mark = " (selected)" if v["name"] == sel.get("selected") else ""
        agree = m.get("top1_agreement")
        lines.append(
            f"| {v['name']}{mark} | {v.get('format', '?')} {v.get('precision', '')} | {v['size_bytes'] / MB:.1f} | "
            f"{ratio_cell(r['size'])} | {m['perplexity']:.2f} [{lo:.2f}-{hi:.2f}] | {r['perplexity_increase_pct']:+.2f}% | "
            f"{number_cell(m.get('kl_mean'), '{:.4f}')} | {number_cell(m.get('kl_p99'), '{:.4f}')} | "
            f"{number_cell(None if agree is None else 100 * agree, '{:.1f}%')} | {100 * m['greedy_identical']:.0f}% |"
        )
    more = [k for k in results["eval"]["streams"] if k != results["variants"][0]["metrics"]["primary_stream"]]
    for stream in more:
        lines += [
            "",
            f"Perplexity on {stream}: "
            + "; ".join(
                f"`{v['name']}` {v['metrics']['streams'][stream]['perplexity']:.2f} "
                f"({100 * (v['metrics']['streams'][stream]['perplexity_ratio'] - 1):+.2f}%)"
                for v in results["variants"]
            )
            + ".",
        ]
    for p in results["profiles"]:
        name = p["name"]
        bw = (results["variants"][0]["profiles"].get(name) or {}).get("memory_bandwidth") or results["variants"][0].get(
            "memory_bandwidth", {}
        )  # results written before bandwidth per profile
        lines += [
            "",
            f"## Generation speed: profile `{name}` ({p['threads']} thread{'s' if p['threads'] > 1 else ''}, "
            f"batch 1, {p['prompt_tokens']}-token prompt, {p['new_tokens']} new tokens, greedy)",
            "",
            "Time to first token (prefill + first pick) and per-token decode latency, p50 [95% CI] and p90 ms; "
            "speed-up = reference p50 / variant p50 [95% CI, paired by round]; tokens/s = new tokens / whole "
            "generation; bandwidth share = decode tokens/s against the limit set by reading every weight once per "
            "token, and the KV cache of the average step (prompt + half the new tokens), "
            f"at the measured {bw.get('bytes_per_s', 0) / 1e9:.1f} GB/s ({bw.get('how', '')}).",
            "",
            "| variant | TTFT p50 | TTFT speed-up | decode p50 | decode p90 | decode speed-up | tokens/s | decode tokens/s | bandwidth share | no-cache tokens/s | peak RSS MiB |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for v in results["variants"]:
            lat, prof, r = v["latency_ms"].get(name, {}), v["profiles"].get(name, {}), v["ratios"]
            share = prof.get("bandwidth_share")
            nc = prof.get("no_cache") or {}
            lines.append(
                f"| {v['name']} | {ms_cell(lat.get('ttft'))} | {ratio_cell(r['speedup_p50'].get(f'{name}/ttft'), r['speedup_p50_ci'].get(f'{name}/ttft'))} | "
                f"{ms_cell(lat.get('decode'))} | {ms_cell(lat.get('decode'), 'p90').split(' ')[0]} | "
                f"{ratio_cell(r['speedup_p50'].get(f'{name}/decode'), r['speedup_p50_ci'].get(f'{name}/decode'))} | "
                f"{prof.get('tokens_per_s', 0):.1f} | {prof.get('decode_tokens_per_s') or 0:.1f} | "
                f"{number_cell(share, '{:.0%}')}{number_cell(prof.get('bandwidth_limit_tokens_per_s'), ' of {:.0f}', '')} | "
                f"{number_cell(nc.get('tokens_per_s'), '{:.1f}')} | {prof.get('peak_rss_bytes', 0) / MIB:.0f} |"
            )
    lines += ["", "## Continuations of the same prompts (greedy)", ""]
    first = results["variants"][0].get("continuations") or []
    for i, c in enumerate(first):
        lines += [f"**Prompt {i + 1}:** {c['prompt'].strip()!r}", ""]
        lines += [
            f"- `{v['name']}`: {(v.get('continuations') or [{}] * (i + 1))[i].get('text', '').strip()!r}"
            for v in results["variants"]
        ]
        lines.append("")
    return lines


def figures(results: dict) -> list[tuple[str, str | None]]:
    from ...report import plots

    return [("Perplexity against decode latency, with the Pareto front", plots.quality_vs_speed(results))]
