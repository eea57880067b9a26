"""The accuracy-budget search, per-node sensitivity and calibration, as rows for the Markdown and HTML reports."""

from __future__ import annotations

from ..bench.results import metric, task_of

SHOWN_NODES = 12


def _fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _measured(results: dict) -> dict[str, dict]:
    return {v["name"]: v for v in results["variants"]}


def trial_rows(results: dict) -> list[dict]:
    """Every trial with its tuning figures and, for the measured ones, the harness's test-split figures."""
    found = results.get("search")
    if not found:
        return []
    task = task_of(results)
    measured = _measured(results)
    out = []
    for t in found["trials"]:
        v = measured.get(t.get("variant") or "")
        out.append(
            {
                **t,
                "test_drop": metric(results, v, task.QUALITY.drop_metric) if v else None,
                "measured_speed": metric(results, v, task.SPEED[0]) if v else None,
                "selected": bool(v) and (results.get("selection") or {}).get("selected") == v["name"],
            }
        )
    return out


def sensitivity_rows(results: dict) -> list[dict]:
    """(base, mode, setting, the most damaging nodes) per analysed base and mode."""
    found = results.get("search") or {}
    out = []
    for base, modes in (found.get("sensitivity") or {}).items():
        for mode, entry in modes.items():
            out.append(
                {
                    "base": base,
                    "mode": mode,
                    "setting": entry.get("setting", {}),
                    "rows": entry["rows"],
                    "shown": entry["rows"][:SHOWN_NODES],
                }
            )
    return out


def calibration_rows(results: dict) -> list[dict]:
    out = []
    for v in results["variants"]:
        meta = v.get("metadata") or {}
        calib = meta.get("calibration")
        if calib:
            out.append(
                {
                    "name": v["name"],
                    **calib,
                    "mask_nodes": len(meta.get("mask_nodes_in_float") or []),
                    "float_nodes": len(meta.get("nodes_in_float") or []),
                    "warnings": (meta.get("preflight") or {}).get("warnings") or [],
                }
            )
    return out


def markdown_section(results: dict) -> list[str]:
    lines = []
    calib = calibration_rows(results)
    if calib:
        lines += [
            "## Static INT8 calibration",
            "",
            "Ranges from the training split, streamed one batch at a time; the attention-mask path is left "
            "out of calibration and quantisation. Peak memory: the process's high-water mark during calibration.",
            "",
            "| variant | calibrator | samples | batches | seconds | peak RSS MiB | mask nodes in float | "
            "nodes in float | preflight warnings |",
            "|---|---|---:|---:|---:|---:|---:|---:|---|",
        ]
        lines += [
            f"| `{r['name']}` | {r['method']} | {r['samples']} | {r['batches']} | {r['seconds']}"
            f"{' (cached)' if r.get('reused') else ''} | {_fmt(r.get('peak_rss_mib'), '.0f')} | {r['mask_nodes']} | "
            f"{r['float_nodes']} | {'; '.join(r['warnings']) or '-'} |"
            for r in calib
        ]
        lines.append("")
    found = results.get("search")
    if not found:
        return lines
    task = task_of(results)
    unit = found["drop_unit"]
    tuning = found["tuning"]
    lines += [
        "## Accuracy-budget search",
        "",
        f"Budget: at most {found['budget']:g} {unit} of {task.QUALITY.metric} lost against the reference, judged "
        f"on the tuning split ({tuning['name']}, {tuning['examples']:,} examples, {tuning['split']}); the test "
        f"figures come from the harness run above, which the search never saw. Reference on the tuning split: "
        f"{found['reference_quality']:.4g}. Latency look: a short batch-1 timing that shortlists candidates; "
        f"the harness measures the shortlist, and selection takes the fastest by that measurement.",
        "",
    ]
    for base, b in found["bases"].items():
        lines.append(
            f"- base `{base}`: tuning {task.QUALITY.metric} {b['tuning_quality']:.4g} "
            f"({b['tuning_drop']:+.2f} {unit}){'; skipped: ' + b['skipped'] if b.get('skipped') else ''}"
        )
    lines += [
        "",
        f"| base | setting | nodes in float | tuning {task.QUALITY.metric} | tuning drop | latency look ms | "
        f"status | test drop | {task.SPEED[0]} (harness) | why |",
        "|---|---|---:|---:|---:|---:|---|---:|---:|---|",
    ]
    for t in trial_rows(results):
        status = t["status"] + (" (selected)" if t["selected"] else "")
        lines.append(
            f"| `{t['base']}` | {t['label']} | {len(t['float_nodes'])} | {_fmt(t['tuning_quality'], '.4g')} | "
            f"{_fmt(t['tuning_drop'], '+.2f')} | {_fmt(t['latency_look_ms'], '.2f')} | {status} | "
            f"{_fmt(t['test_drop'], '+.2f')} | {_fmt(t['measured_speed'], '.3g')} | {t['reason'] or '-'} |"
        )
    for s in sensitivity_rows(results):
        setting = s["setting"]
        lines += [
            "",
            f"### Sensitivity: `{s['base']}`, {s['mode']}"
            f"{' ' + setting['calibrator'] if setting.get('calibrator') else ''} "
            f"({len(s['rows'])} nodes, {SHOWN_NODES} most damaging shown)",
            "",
            "Each node quantised alone: KL divergence of the output distribution from FP32 on probe batches, "
            f"largest logit change, and the drop on {setting.get('tuning_examples', '?')} tuning examples.",
            "",
            f"| rank | node | op | KL | max abs diff | tuning drop ({unit}) |",
            "|---:|---|---|---:|---:|---:|",
        ]
        lines += [
            f"| {r['rank']} | `{r['node']}` | {r['op_type']} | {r['kl_mean']:.2e} | {r['max_abs_diff']:.3g} | "
            f"{_fmt(r.get('quality_drop'), '+.2f')} |"
            for r in s["shown"]
        ]
    return lines + [""]
