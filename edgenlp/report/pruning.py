"""What pruning bought: each variant's lineage back to a prune, its shapes, parameters and MACs,
beside the quality, speed and size the harness measured; and what recovery won back.

Only renders what `results.json` holds (the stages' metadata, the training logs, the measurements).
"""

from __future__ import annotations

from ..bench.results import metric, task_of

MB = 1e6


def _prune_ancestor(results: dict, variant: dict) -> dict | None:
    """`pruned_by` as the pipeline recorded it; for older results, the lineage among the measured variants."""
    if "pruned_by" in variant:
        return variant["pruned_by"]
    by_name = {v["name"]: v for v in results["variants"]}
    seen = set()
    while variant is not None and variant["name"] not in seen:
        seen.add(variant["name"])
        if variant.get("stage") == "prune":
            return {"name": variant["name"], "metadata": variant.get("metadata") or {}}
        variant = by_name.get(variant.get("parent"))
    return None


def rows(results: dict) -> list[dict]:
    """One row per variant when any variant descends from a prune; none otherwise."""
    task = task_of(results)
    pruned_any = any(_prune_ancestor(results, v) for v in results["variants"])
    if not pruned_any:
        return []
    out = []
    for v in results["variants"]:
        source = _prune_ancestor(results, v)
        meta = (source or {}).get("metadata") or {}
        macs = {k: m for k, m in (v.get("macs") or {}).items() if m is not None}
        out.append(
            {
                "name": v["name"],
                "pruned_by": source["name"] if source else None,
                "ratio": meta.get("ratio"),
                "mode": meta.get("mode"),
                "importance": meta.get("importance"),
                "layer_heads": meta.get("layer_heads"),
                "layers": _layers(meta),
                "non_embedding_parameters": (meta.get("parameters") or {})
                .get("after", {})
                .get("non_embedding_parameters"),
                "non_embedding_kept": (meta.get("parameters") or {}).get("non_embedding_kept"),
                "parameters": v.get("params"),
                "macs": macs,
                "quality": metric(results, v, task.QUALITY.metric),
                "speed": metric(results, v, task.SPEED[0]),
                "size_mb": v["size_bytes"] / MB,
            }
        )
    return out


def recovery(results: dict) -> list[dict]:
    """For each distilled variant: the validation score right after pruning (step 0) and the best after."""
    out = []
    for name, log in (results.get("training") or {}).items():
        evals = log.get("evals") or []
        if evals and evals[0].get("step") == 0 and len(evals) > 1:
            key = log.get("metric")
            out.append(
                {
                    "name": name,
                    "metric": key,
                    "after_pruning": evals[0].get(key),
                    "after_recovery": log.get("best_score"),
                    "best_step": log.get("best_step"),
                    "steps": log.get("total_steps"),
                    "seconds": log.get("seconds"),
                }
            )
    return out


def _layers(meta: dict) -> str | None:
    """'kept of all (which)' when layers were dropped, else None."""
    kept = meta.get("kept_layers")
    if not kept:
        return None
    return f"{len(kept)} of {len(kept) + len(meta.get('dropped_layers') or [])} ({','.join(map(str, kept))})"


def _fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def markdown_section(results: dict) -> list[str]:
    table = rows(results)
    if not table:
        return []
    task = task_of(results)
    lengths = sorted({k for r in table for k in r["macs"]})
    lines = [
        "## Pruning",
        "",
        f"Layers, heads and feed-forward channels removed by `prune`; {task.QUALITY.label} and {task.SPEED[0]} "
        f"({results['profiles'][0]['name']}) as measured above. MACs: multiply-accumulates of one pass.",
        "",
        "| variant | pruned by | ratio | layers kept | heads per layer | non-embedding params | params | "
        + "".join(f"MACs {k} | " for k in lengths)
        + f"{task.QUALITY.metric} | {task.SPEED[0]} | size MB |",
        "|---|---|---|---|---|---|---|" + "---|" * len(lengths) + "---|---|---|",
    ]
    for r in table:
        kept = f" ({100 * r['non_embedding_kept']:.0f}% kept)" if r["non_embedding_kept"] else ""
        lines.append(
            f"| `{r['name']}` | {r['pruned_by'] or '-'} | {_fmt(r['ratio'], 'g')} "
            f"{'(' + r['mode'] + ', ' + r['importance'] + ')' if r['mode'] else ''} | {r['layers'] or '-'} | "
            f"{','.join(map(str, r['layer_heads'])) if r['layer_heads'] else '-'} | "
            f"{_fmt(r['non_embedding_parameters'], ',')}{kept} | {_fmt(r['parameters'], ',')} | "
            + "".join(f"{_fmt(r['macs'].get(k), ',')} | " for k in lengths)
            + f"{_fmt(r['quality'], '.4g')} | {_fmt(r['speed'], '.3g')} | {r['size_mb']:.1f} |"
        )
    rec = recovery(results)
    if rec:
        lines += [
            "",
            "Recovery by distillation (validation split):",
            "",
            "| variant | metric | right after pruning | after recovery | best step / steps | seconds |",
            "|---|---|---|---|---|---|",
        ]
        lines += [
            f"| `{r['name']}` | {r['metric']} | {_fmt(r['after_pruning'], '.4g')} | {_fmt(r['after_recovery'], '.4g')} "
            f"| {r['best_step']} / {r['steps']} | {r['seconds']} |"
            for r in rec
        ]
    return lines + [""]
