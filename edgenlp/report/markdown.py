"""`results.json` -> `report.md`: the run, the selection, the task's own sections, lineage and environment."""

from __future__ import annotations

from pathlib import Path

from ..bench.results import task_of
from ..fsio import write_text_atomic
from . import attention, engines, pruning, search, structure, targets, tuning


def render(results: dict) -> str:
    ref = results["reference"]
    run = results.get("run", {})
    env = results["environment"]
    lines = [f"# edgenlp report: {run.get('recipe', 'benchmark')}", ""]
    if run:
        lines += [
            f"Model `{run.get('model')}`, data `{run.get('data', {}).get('name')}`; "
            f"evaluated on {results['eval']['examples']:,} held-out {results['eval'].get('unit', 'examples')} "
            f"({results['eval']['name']}). "
            f"Reference: `{ref}`.",
            "",
        ]
        lines += [
            f"- Note: {note}" for note in (run.get("data", {}).get("notes") or []) + results["eval"].get("notes", [])
        ]
    sel = results.get("selection")
    if sel:
        limits = ", ".join(f"{k} {v}" for k, v in sel["constraints"].items() if v is not None) or "none"
        lines += [
            f"**Selected: `{sel['selected'] or 'none meets the limits'}`** ({sel['objective']} under "
            f"profile `{sel['profile']}`; limits: {limits}). Pareto front ({task_of(results).QUALITY.label}, speed, size): "
            + ", ".join(f"`{n}`" for n in sel["pareto_front"])
            + "."
        ]
        lines += [f"- `{n}` rejected: {why}" for n, why in sel["rejected"].items()]
        lines.append("")
    gates = results.get("gates")
    if gates and gates.get("variant") is None:
        lines += [f"**Gate FAILED** (`{gates['expression']}`): {gates['reason']}.", ""]
    elif gates:
        lines += [
            f"**Gate {'FAILED' if gates['failed'] else 'passed'}** for `{gates['variant']}` "
            f"(`{gates['expression']}`): "
            + "; ".join(
                f"{t['term']} = {t['value']:.3g}{' (triggered)' if t['triggered'] else ''}" for t in gates["terms"]
            ),
            "",
        ]
    lines += task_of(results).report_sections(results)
    lines += engines.markdown_section(results)
    lines += pruning.markdown_section(results)
    lines += structure.markdown_section(results)
    lines += tuning.markdown_section(results)
    lines += attention.markdown_section(results)
    lines += search.markdown_section(results)
    lines += targets.markdown_section(results)
    notes = []
    for v in results["variants"]:
        meta = v.get("metadata") or {}
        if "reason" in meta and "block_size" in meta:
            notes.append(
                f"- `{v['name']}`: INT4 weight-only ({meta['algorithm']}, block {meta['block_size']}, "
                f"accuracy_level {meta['accuracy_level']}, LM head {'4-bit' if meta['lm_head_quantized'] else 'float'}, "
                f"{meta['gemm_rewritten_to_matmul']} Gemm rewritten to MatMul). Why: {meta['reason']}."
            )
        elif "reason" in meta:
            notes.append(
                f"- `{v['name']}`: quantised for **{meta['isa']}** (reduce_range={meta['reduce_range']}, "
                f"per_channel={meta['per_channel']}, {meta['activation_type']} activations x "
                f"{meta['weight_type']} weights, ops {', '.join(meta['op_types'])}). Why: {meta['reason']}."
            )
        if "fusions" in meta:
            fused = ", ".join(f"{k} x{n}" for k, n in meta["fusions"].items()) or "none"
            notes.append(f"- `{v['name']}`: fusions applied: {fused}.")
        val = v.get("validation")
        if val and val.get("summary"):
            notes.append(f"- `{v['name']}` validated against `{val['parent']}`: {val['summary']}.")
        elif val:
            if val["check"] == "logits":
                notes.append(
                    f"- `{v['name']}` validated against `{val['parent']}`: max |Δlogit| "
                    f"{val['max_abs_logit_diff']:.1e} (tolerance {val['atol']}) on {val['examples']} texts."
                )
            else:
                notes.append(
                    f"- `{v['name']}` validated against `{val['parent']}`: label agreement "
                    f"{100 * val['label_agreement']:.1f}% (minimum {100 * val['min_label_agreement']:.0f}%) "
                    f"on {val['examples']} texts."
                )
    if notes:
        lines += ["", "## How the variants were made", "", *notes]
    cpu = env["cpu"]
    versions = ", ".join(f"{k} {v}" for k, v in env["versions"].items())
    lines += [
        "",
        "## Environment",
        "",
        f"- CPU: {cpu['model']} ({cpu['arch']}, {cpu['logical_cores']} logical cores, INT8 ISA {cpu['isa']}; "
        f"flags {', '.join(cpu['flags']) or 'none'})",
        f"- Python {env['python']}; {versions}",
        f"- Threads: {env['threads_note']}. Each variant and profile ran in its own fresh process; "
        f"measurements were interleaved over {results['settings']['rounds']} rounds; warm-up excluded.",
    ]
    for profile, node in (env.get("measured_on") or {}).items():
        where = f"Ray node {node['node_id']}" if node.get("executor") == "ray" else "this machine"
        lines.append(
            f"- `{profile}` was timed on {where} ({node['host']}, node kind `{node['kind']}`, "
            f"{node['cpu']['model']}), alone there."
        )
    executor = results.get("executor")
    if executor and executor.get("kind") == "ray":
        lines.append(
            f"- Builds and evaluations ran on a Ray cluster of {executor['nodes']} node(s), "
            f"{executor['cpus']:g} CPU(s); every variant's files were checked by hash on arrival."
        )
    lines.append("")
    return "\n".join(lines)


def write(results: dict, path: Path) -> Path:
    return write_text_atomic(path, render(results))
