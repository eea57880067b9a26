"""The harness side: the classifier's timed encoder workloads, and tagged words turned into entity scores.

The evaluation tags the test sentences one at a time (as deployed); quality is entity-level F1 with a
bootstrap interval, and against the reference a paired interval of the difference, F1 per entity type,
the share of words tagged alike, and the sentences whose entities changed.
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
from .scoring import entity_scores

CHANGED_SHOWN = 20
"""Sentences whose entities changed against the reference, kept for the report."""


def entity_types(label_names: list[str]) -> list[str]:
    return sorted({name[2:] for name in label_names if name[:2] in ("B-", "I-")})


def _entities(words: list[str], tags: list[str]) -> list[str]:
    from ...runtime.entities import spans

    return [f"{' '.join(words[a : b + 1])} ({kind})" for kind, a, b in spans(tags)]


def summarise(candidate, raw: dict, reference_raw: dict, payload: dict, profiles, settings) -> dict:
    """Entity precision, recall and F1 with intervals (paired against the reference); the latency figures."""
    names = payload["label_names"]
    predicted = [[names[t] for t in sentence] for sentence in raw["eval"]["tags"]]
    reference = None
    if raw is not reference_raw:
        reference = [[names[t] for t in sentence] for sentence in reference_raw["eval"]["tags"]]
    metrics = entity_scores(payload["tags"], predicted, entity_types(names), settings.bootstrap, reference)
    metrics["examples"] = len(predicted)
    if reference is not None:
        pairs = [(a, b) for mine, theirs in zip(predicted, reference) for a, b in zip(mine, theirs)]
        metrics["word_agreement_with_reference"] = sum(a == b for a, b in pairs) / max(1, len(pairs))
        ref_scores = entity_scores(payload["tags"], reference, entity_types(names))
        metrics["per_type_f1_delta"] = {
            kind: one["f1"] - ref_scores["per_type"][kind]["f1"] for kind, one in metrics["per_type"].items()
        }
        changed = []
        for words, mine, theirs in zip(payload["words"], predicted, reference):
            if mine != theirs and _entities(words, mine) != _entities(words, theirs):
                changed.append(
                    {"text": " ".join(words), "reference": _entities(words, theirs), "variant": _entities(words, mine)}
                )
        metrics["sentences_with_changed_entities"] = len(changed)
        metrics["changed_vs_reference"] = changed[:CHANGED_SHOWN]
    return {"metrics": metrics, **encoder_timings(candidate, raw, profiles, settings)}


def eval_request(candidate, reference) -> dict:
    return {}


def eval_section(payload: dict, reference_raw: dict, profiles) -> dict:
    return {
        "name": payload["name"],
        "examples": len(payload["words"]),
        "words": sum(len(w) for w in payload["words"]),
        "labels": payload["label_names"],
        "entity_types": entity_types(payload["label_names"]),
        "mean_tokens": reference_raw["profiles"][profiles[0].name]["process"]["mean_tokens"],
    }


def ratios(v: dict, ref: dict, settings) -> dict:
    """Speed-ups against the reference (95% interval paired by round) and the entity-F1 difference."""
    return {
        **speedups(v, ref, settings),
        "entity_f1_delta_points": v["metrics"]["entity_f1"] - ref["metrics"]["entity_f1"],
    }


def metric(results: dict, variant: dict, name: str, profile: str) -> float | None:
    """The task's gate and selection metrics (points), None for another name."""
    ref = next(v for v in results["variants"] if v["name"] == results["reference"])
    m = variant["metrics"]
    if name in ("entity_f1", "entity_precision", "entity_recall"):
        return m[name]
    if name == "entity_f1_drop":
        return ref["metrics"]["entity_f1"] - m["entity_f1"]
    if name == "word_agreement":
        return 100 * m.get("word_agreement_with_reference", 1.0)
    return None
