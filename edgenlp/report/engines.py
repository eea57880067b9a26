"""Which engine to ship for each target profile, and the figures that say why (Markdown and HTML rows)."""

from __future__ import annotations

from ..bench.results import engine_of, metric, task_of


def rows(results: dict) -> list[dict]:
    """One row per profile and speed target when the run measured more than one engine."""
    targets = (results.get("selection") or {}).get("by_target") or []
    if len({engine_of(v) for v in results["variants"]}) < 2:
        return []
    task = task_of(results)
    out = []
    for t in targets:
        quality = {}
        for engine, best in t["by_engine"].items():
            v = next(x for x in results["variants"] if x["name"] == best["variant"])
            quality[engine] = metric(results, v, task.QUALITY.metric, t["profile"])
        out.append({**t, "quality": quality})
    return out


def engines_measured(results: dict) -> list[str]:
    return sorted({engine_of(v) for v in results["variants"]})


def markdown_section(results: dict) -> list[str]:
    found = rows(results)
    if not found:
        return []
    task = task_of(results)
    engines = engines_measured(results)
    lines = [
        "",
        "## Which engine to ship",
        "",
        "Per profile and target: the variant selection picks (fastest within the selection limits), then "
        f"each engine's fastest variant within the same limits ({task.QUALITY.label} beside it). "
        "Engines measured: " + ", ".join(f"`{e}`" for e in engines) + ".",
        "",
        "| profile | target | ship | engine | " + " | ".join(f"best {e}" for e in engines) + " |",
        "|---|---|---|---|" + "---|" * len(engines),
    ]
    for r in found:
        cells = []
        for e in engines:
            best = r["by_engine"].get(e)
            cells.append("-" if best is None else f"`{best['variant']}` {best['value']:.3g} ({r['quality'][e]:.4g})")
        lines.append(
            f"| {r['profile']} | {r['target']} ({r['metric']}) | `{r['selected'] or 'none'}` | "
            f"{r['engine'] or '-'} | " + " | ".join(cells) + " |"
        )
    lines += [f"- {r['profile']}, {r['target']}: {r['why']}." for r in found]
    skipped = results.get("skipped") or {}
    lines += [f"- `{name}` was not built: {why}" for name, why in skipped.items()]
    return lines + [""]
