"""The latency-target search (`search/structure.py`): the fitted latency model, and every candidate's
predicted against measured latency, speed-up and quality. Only renders `results["structure_search"]`."""

from __future__ import annotations


def summary(results: dict) -> dict | None:
    found = results.get("structure_search")
    if not found:
        return None
    target = (
        f"{found['target_speedup']:g}x the fastest unpruned variant ({found.get('against') or '-'}, "
        f"{found['against_ms'] or 0:.2f} ms)"
        if found.get("target_speedup")
        else f"{found['target_ms']:.2f} ms"
    )
    model = found["latency_model"]
    return {
        "target": target,
        "target_ms": found["target_ms"],
        "length": found["length"],
        "threads": found["threads"],
        "profile": found.get("profile"),
        "form": model["form"],
        "coefficients": ", ".join(f"{c:.4g}" for c in model["coefficients"]),
        "probes": len(model["measured"]),
        "fit_error_pct": 100 * model["largest_fit_error"],
        "chosen": found.get("chosen"),
        "rows": [
            {
                "variant": r.get("variant"),
                "shape": f"{r['shape']['layers']} x {r['shape']['heads']} x {r['shape']['width']}",
                "parameters": r["parameters"],
                "gmacs": r["macs"] / 1e9 if r.get("macs") else None,
                "after_pruning": r.get("after_pruning"),
                "after_recovery": r.get("after_recovery"),
                "predicted_ms": r["predicted_ms"],
                "measured_ms": r.get("measured_ms"),
                "speedup": r.get("speedup"),
                "quality": r.get("quality"),
                "meets": r.get("meets"),
            }
            for r in found["candidates"]
        ],
    }


def _fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def markdown_section(results: dict) -> list[str]:
    s = summary(results)
    if s is None:
        return []
    lines = [
        "## Latency-target search",
        "",
        f"Target: {s['target']}, {s['length']} tokens, {s['threads']} thread(s) ({s['profile']}). Latency model "
        f"fitted to {s['probes']} structures timed on this CPU: {s['form']} = {s['coefficients']} "
        f"(largest fit error {s['fit_error_pct']:.1f}%). Chosen: {s['chosen'] or 'none met the target'}.",
        "",
        "| variant | layers x heads x width | non-embedding params | GMACs a pass | predicted ms | measured ms | "
        "speed-up | quality after pruning | after recovery | quantised | meets |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| `{r['variant']}` | {r['shape']} | {r['parameters']:,} | {_fmt(r['gmacs'], '.3f')} | {r['predicted_ms']:.3f} | "
        f"{_fmt(r['measured_ms'], '.3f')} | {_fmt(r['speedup'], '.2f')} | {_fmt(r['after_pruning'], '.4g')} | "
        f"{_fmt(r['after_recovery'], '.4g')} | {_fmt(r['quality'], '.4g')} | {'yes' if r['meets'] else 'no'} |"
        for r in s["rows"]
    ]
    return lines + [""]
