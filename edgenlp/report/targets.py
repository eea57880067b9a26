"""The emulated checks of a run's bundles (`target.check_on`): what agreed on the target, and no latency."""

from __future__ import annotations

SPEED_NOTE = (
    "Emulated time says nothing about the target's speed, so no ARM latency is shown: run "
    "`python -m edgenlp.runtime` or `edgenlp bench` on a real ARM machine for that (docs/targets.md)."
)


def rows(results: dict) -> list[dict]:
    """One row per checked variant and machine."""
    return [
        {"variant": variant, "bundle": checked["bundle"], "machine": machine, **verdict}
        for variant, checked in (results.get("target_checks") or {}).items()
        for machine, verdict in checked["checked_on"].items()
    ]


def markdown_section(results: dict) -> list[str]:
    found = rows(results)
    if not found:
        return []
    lines = [
        "",
        "## Checked on the target machines (emulated)",
        "",
        "Each bundle ran under the edgenlp-runtime wheel with the target's onnxruntime, tokenizers and numpy "
        "wheels on an emulated CPU, and its answers were compared with this machine's on the same texts. " + SPEED_NOTE,
        "",
        "| variant | machine | INT8 kernels | verdict | what was compared |",
        "|---|---|---|---|---|",
    ]
    for r in found:
        lines.append(
            f"| `{r['variant']}` | {r['machine']} ({r['emulated_cpu']}) | {r['int8_kernels']} | "
            f"{'passed' if r['passed'] else '**FAILED**'} | {r['summary']} |"
        )
    return lines + [""]
