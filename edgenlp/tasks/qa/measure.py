"""The harness side: the classifier's timed encoder workloads, and answers turned into SQuAD's EM and F1.

The evaluation answers the test questions one at a time (each question's windows in one batch, the best
span across them); quality is F1 with a bootstrap interval, and against the reference a paired interval
of the difference, the share of answers that stayed the same and the questions whose answer changed.
"""

from __future__ import annotations

from ..classification.measure import (  # noqa: F401  (the encoder's workloads, shared)
    check_profiles,
    encoder_timings,
    speed_targets,
    speedups,
    truncated_input,
    workloads,
)
from .data import NOT_OFFICIAL
from .scoring import normalize, squad_scores

CHANGED_SHOWN = 20
"""Questions whose answer changed against the reference, kept for the report."""


def summarise(candidate, raw: dict, reference_raw: dict, payload: dict, profiles, settings) -> dict:
    """EM and F1 with intervals (F1 paired against the reference); the latency figures."""
    predicted = raw["eval"]["answers"]
    reference = None if raw is reference_raw else reference_raw["eval"]["answers"]
    metrics = squad_scores(predicted, payload["answers"], settings.bootstrap, reference)
    metrics["examples"] = len(predicted)
    metrics["windows_per_question"] = sum(raw["eval"]["windows"]) / max(1, len(predicted))
    if reference is not None:
        same = [normalize(a) == normalize(b) for a, b in zip(predicted, reference)]
        metrics["answer_agreement_with_reference"] = sum(same) / max(1, len(same))
        changed = [
            {
                "question": q["question"],
                "reference": b,
                "variant": a,
                "gold": gold[0],
            }
            for q, a, b, gold, kept in zip(payload["questions"], predicted, reference, payload["answers"], same)
            if not kept
        ]
        metrics["questions_with_changed_answers"] = len(changed)
        metrics["changed_vs_reference"] = changed[:CHANGED_SHOWN]
    return {"metrics": metrics, **encoder_timings(candidate, raw, profiles, settings)}


def eval_request(candidate, reference) -> dict:
    return {}


def eval_section(payload: dict, reference_raw: dict, profiles) -> dict:
    return {
        "name": payload["name"],
        "examples": len(payload["questions"]),
        "windows_per_question": sum(reference_raw["eval"]["windows"]) / max(1, len(payload["questions"])),
        "mean_tokens": reference_raw["profiles"][profiles[0].name]["process"]["mean_tokens"],
        "note": NOT_OFFICIAL if payload["name"].startswith("squad11") else None,
    }


def ratios(v: dict, ref: dict, settings) -> dict:
    """Speed-ups against the reference (95% interval paired by round) and the EM and F1 differences."""
    return {
        **speedups(v, ref, settings),
        "f1_delta_points": v["metrics"]["f1"] - ref["metrics"]["f1"],
        "exact_match_delta_points": v["metrics"]["exact_match"] - ref["metrics"]["exact_match"],
    }


def metric(results: dict, variant: dict, name: str, profile: str) -> float | None:
    """The task's gate and selection metrics (points), None for another name."""
    ref = next(v for v in results["variants"] if v["name"] == results["reference"])
    m = variant["metrics"]
    if name in ("f1", "exact_match"):
        return m[name]
    if name == "f1_drop":
        return ref["metrics"]["f1"] - m["f1"]
    if name == "answer_agreement":
        return 100 * m.get("answer_agreement_with_reference", 1.0)
    return None
