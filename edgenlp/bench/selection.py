"""Choosing among measured variants: the Pareto front, constraint-based selection and CI gates.

Everything here reads an `edgenlp.results` document and adds `selection` and `gates` to it; it
measures nothing. The task of the results (classification when older results name none) gives the
quality axis (accuracy, perplexity) and the speed the selection minimises; latency means batch-1 p50
on the evaluation data's real lengths under the first profile (the primary one) unless a gate names
another. Text generation adds perplexity, perplexity_increase (%), kl_mean, top1_agreement (%),
greedy_identical (%), tokens_per_s, ttft_ms, decode_p50_ms and decode_p90_ms.

Gate syntax (`--fail-if`): terms `METRIC[@PROFILE] OP NUMBER` joined by `or` / `and` (`and` binds
tighter), e.g. `accuracy_drop>1.0 or p90_ms>20 or size_mb>30`. Metrics: accuracy (%), accuracy_drop
(points below the reference), macro_f1 (%), p50_ms / p90_ms / p99_ms (real lengths), p50_ms_lenN etc.
(N tokens), e2e_p50_ms (real lengths only), size_mb, peak_rss_mb, speedup (reference p50 / variant
p50). When no variant meets the selection limits, the gate fails: there is nothing fit to ship.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..errors import BenchError
from .results import (
    LATENCY_METRIC,
    MB,
    engine_of,
    known_metrics,
    metric,  # noqa: F401
    primary_profile,
    task_of,
)

OPERATORS = {
    "<": float.__lt__,
    "<=": float.__le__,
    ">": float.__gt__,
    ">=": float.__ge__,
    "==": float.__eq__,
    "!=": float.__ne__,
}
_TERM = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)(?:@([\w.\-]+))?\s*(<=|>=|==|!=|<|>)\s*(-?\d+(?:\.\d+)?)\s*$")


@dataclass(frozen=True)
class Term:
    metric: str
    profile: str | None
    op: str
    threshold: float

    def __str__(self) -> str:
        return f"{self.metric}{'@' + self.profile if self.profile else ''}{self.op}{self.threshold:g}"


def parse_gates(expression: str, task: str | None = None) -> list[list[Term]]:
    """`a>1 or b>2 and c<3` -> [[a>1], [b>2, c<3]] (any group whose terms all hold fails the gate)."""
    groups = []
    for group in re.split(r"\s+or\s+", expression.strip()):
        terms = []
        for text in re.split(r"\s+and\s+", group):
            match = _TERM.match(text)
            if not match:
                raise BenchError(f"gate term '{text.strip()}' is not METRIC OP NUMBER (e.g. p90_ms>20): fix --fail-if")
            name, profile, op, number = match.groups()
            latency = LATENCY_METRIC.match(name)
            names = _all_gate_metrics() if task is None else known_metrics(task_of({"task": task}))
            if name not in names and not latency:
                raise BenchError(
                    f"unknown metric '{name}' in --fail-if: use one of {', '.join(names)}, "
                    "p50_ms, p90_ms, p99_ms, p90_ms_len128, e2e_p50_ms"
                )
            if latency and latency.group(1) and latency.group(3):
                raise BenchError(
                    f"'{name}' in --fail-if: end-to-end latency is measured at real lengths only: "
                    f"use e2e_p{latency.group(2)}_ms"
                )
            terms.append(Term(name, profile, op, float(number)))
        groups.append(terms)
    if not groups or not groups[0]:
        raise BenchError("--fail-if is empty: give a condition such as 'accuracy_drop>1.0 or p90_ms>20'")
    return groups


def _all_gate_metrics() -> tuple[str, ...]:
    from ..tasks import TASK_NAMES, get

    return tuple(dict.fromkeys(m for t in TASK_NAMES for m in known_metrics(get(t))))


def check_gates(expression: str, profiles: list, task: str | None = None) -> None:
    """Refuse, before anything is measured, a gate that names a profile or length that will not be."""
    by_name = {p.name: p for p in profiles}
    for terms in parse_gates(expression, task):
        for t in terms:
            profile = by_name.get(t.profile) if t.profile else profiles[0]
            if profile is None:
                raise BenchError(
                    f"--fail-if term '{t}' names profile '{t.profile}', which is not measured "
                    f"(profiles: {', '.join(by_name)}): fix the term or add the profile"
                )
            latency = LATENCY_METRIC.match(t.metric)
            if latency and latency.group(3) and int(latency.group(3)) not in profile.seq_lengths:
                raise BenchError(
                    f"--fail-if term '{t}' needs length {latency.group(3)}, which profile "
                    f"'{profile.name}' does not measure (lengths: {profile.seq_lengths}): "
                    "fix the term or the profile's seq_lengths"
                )


def evaluate_gates(results: dict, expression: str, variant_name: str | None = None) -> dict:
    groups = parse_gates(expression)
    selection = results.get("selection") or {}
    name = variant_name or selection.get("selected")
    if name is None and selection:
        limits = ", ".join(f"{k} {v}" for k, v in (selection.get("constraints") or {}).items() if v is not None)
        return {
            "expression": expression,
            "variant": None,
            "failed": True,
            "terms": [],
            "reason": f"no variant meets the selection limits ({limits or 'none'}): nothing fit to ship",
        }
    name = name or results["reference"]
    variant = next((v for v in results["variants"] if v["name"] == name), None)
    if variant is None:
        raise BenchError(f"gate variant '{name}' is not among the measured variants")
    checked, failed = [], False
    for terms in groups:
        group_hits = []
        for t in terms:
            value = metric(results, variant, t.metric, t.profile)
            hit = OPERATORS[t.op](float(value), t.threshold)
            checked.append({"term": str(t), "value": value, "triggered": hit})
            group_hits.append(hit)
        failed = failed or all(group_hits)
    return {"expression": expression, "variant": name, "failed": failed, "terms": checked}


def verdict_line(gates: dict) -> str:
    if gates.get("variant") is None:
        return f"gate FAILED: {gates['reason']}"
    parts = [f"{t['term']} ({t['value']:.3g}{' TRIGGERED' if t['triggered'] else ''})" for t in gates["terms"]]
    state = "FAILED" if gates["failed"] else "passed"
    return f"gate {state} for {gates['variant']}: " + "; ".join(parts)


def pareto_front(results: dict, profile: str | None = None) -> list[str]:
    """Variants no other beats on quality, speed and size at once (the task names quality and speed)."""
    task = task_of(results)
    sign = 1.0 if task.QUALITY.higher_is_better else -1.0
    points = {
        v["name"]: (
            sign * metric(results, v, task.QUALITY.metric, profile),
            metric(results, v, task.SPEED[0], profile),
            v["size_bytes"],
        )
        for v in results["variants"]
    }

    def dominates(a, b):
        return a[0] >= b[0] and a[1] <= b[1] and a[2] <= b[2] and a != b

    return [n for n, p in points.items() if not any(dominates(q, p) for m, q in points.items() if m != n)]


def by_target(
    results: dict,
    max_accuracy_drop: float | None = None,
    max_latency_ms: float | None = None,
    max_size_mb: float | None = None,
) -> list[dict]:
    """For every profile and every speed the task measures in it (each input length, say): the variant
    to ship, its engine, and each engine's own best within the same limits, so the choice of engine is
    explained by the figures it was made on. The fastest engine may differ between targets."""
    task = task_of(results)
    targets = getattr(task, "speed_targets", None)
    out = []
    for prof in results["profiles"]:
        for label, speed in targets(prof) if targets else [("default", task.SPEED[0])]:
            chosen = select(results, max_accuracy_drop, max_latency_ms, max_size_mb, prof["name"], speed=speed)
            fastest: dict[str, dict] = {}
            for name in chosen["feasible"]:
                v = next(x for x in results["variants"] if x["name"] == name)
                fastest.setdefault(engine_of(v), {"variant": name, "value": metric(results, v, speed, prof["name"])})
            picked = next((x for x in results["variants"] if x["name"] == chosen["selected"]), None)
            row = {
                "profile": prof["name"],
                "target": label,
                "metric": speed,
                "selected": chosen["selected"],
                "engine": engine_of(picked) if picked else None,
                "value": metric(results, picked, speed, prof["name"]) if picked else None,
                "by_engine": fastest,
            }
            row["why"] = _why(row, task)
            out.append(row)
    return out


def _why(row: dict, task) -> str:
    if not row["selected"]:
        return "no variant meets the limits"
    others = [f"{e}'s best {b['variant']} {b['value']:.3g}" for e, b in row["by_engine"].items() if e != row["engine"]]
    return (
        f"{row['selected']} ({row['engine']}) has the lowest {row['metric']}, {row['value']:.3g}, within the limits"
        + (f"; against {', '.join(others)}" if others else "; no other engine has a variant within the limits")
    )


def select(
    results: dict,
    max_accuracy_drop: float | None = None,
    max_latency_ms: float | None = None,
    max_size_mb: float | None = None,
    profile: str | None = None,
    speed: str | None = None,
) -> dict:
    """The fastest variant within the limits (ties: the smaller); None if nothing qualifies.

    `max_accuracy_drop` limits the task's quality loss: accuracy points for a classifier, the
    perplexity increase in % for a language model. `max_latency_ms` limits the task's speed metric.
    """
    profile = profile or primary_profile(results)
    task = task_of(results)
    drop, speed = task.QUALITY.drop_metric, speed or task.SPEED[0]
    feasible, rejected = [], {}
    searched = results.get("search")
    tuning_drops = (
        {t["variant"]: t["tuning_drop"] for t in searched["trials"] if t.get("status") == "shortlisted"}
        if searched
        else None
    )
    for v in results["variants"]:
        why = []
        if tuning_drops is not None:
            # the search judged its candidates on the tuning split; the test split only reports
            if v["name"] not in tuning_drops:
                rejected[v["name"]] = "not a candidate of the accuracy-budget search"
                continue
            if tuning_drops[v["name"]] > (max_accuracy_drop if max_accuracy_drop is not None else float("inf")):
                why.append(f"tuning drop {tuning_drops[v['name']]:.2f} {task.QUALITY.drop_unit} > {max_accuracy_drop}")
        elif max_accuracy_drop is not None and metric(results, v, drop, profile) > max_accuracy_drop:
            why.append(
                f"{drop.replace('_', ' ')} {metric(results, v, drop, profile):.2f} {task.QUALITY.drop_unit} "
                f"> {max_accuracy_drop}"
            )
        if max_latency_ms is not None and metric(results, v, speed, profile) > max_latency_ms:
            why.append(f"{speed} {metric(results, v, speed, profile):.2f} > {max_latency_ms}")
        if max_size_mb is not None and v["size_bytes"] / MB > max_size_mb:
            why.append(f"size {v['size_bytes'] / MB:.1f} MB > {max_size_mb}")
        if why:
            rejected[v["name"]] = "; ".join(why)
        else:
            feasible.append(v)
    feasible.sort(key=lambda v: (metric(results, v, speed, profile), v["size_bytes"]))
    return {
        "profile": profile,
        "objective": f"{task.SPEED[1] if speed == task.SPEED[0] else 'lowest ' + speed}, then smallest size",
        "quality_judged_on": (
            "the tuning split (accuracy-budget search); test-split figures are reported, not used"
            if tuning_drops is not None
            else "the evaluation (test) split"
        ),
        "constraints": {
            "max_accuracy_drop": max_accuracy_drop,
            "max_latency_ms": max_latency_ms,
            "max_size_mb": max_size_mb,
        },
        "pareto_front": pareto_front(results, profile),
        "feasible": [v["name"] for v in feasible],
        "rejected": rejected,
        "selected": feasible[0]["name"] if feasible else None,
    }
