"""A reader bundle's part of the manifest: window and stride, input limits; and its cross-machine check."""

from __future__ import annotations

MIN_TARGET_AGREEMENT = 0.99
"""Share of questions a bundle on its target must answer with the same span as here."""


def bundle_section(variant, folder, model_rel: str, engine: str = "onnx") -> dict:
    from ...runtime.answers import MAX_ANSWER_TOKENS, PairWindows

    pairs = PairWindows(folder)
    return {
        "max_length": pairs.max_length,
        "stride": pairs.stride,
        "max_answer_tokens": MAX_ANSWER_TOKENS,
        "windows": f"a context longer than the window is read in windows of {pairs.max_length} tokens (question "
        f"included) overlapping by {pairs.stride}; the answer is the best span across them",
        "transformers_js": {"pipeline": "question-answering", "options": {}},
    }


def bundle_summary(results: dict, variant: dict) -> dict:
    m = variant.get("metrics") or {}
    return {
        "exact_match": m.get("exact_match"),
        "f1": m.get("f1"),
        "f1_delta_points": (variant.get("ratios") or {}).get("f1_delta_points"),
        "latency_ms": {
            profile: {shape: {"p50": s.get("p50"), "p90": s.get("p90")} for shape, s in shapes.items()}
            for profile, shapes in (variant.get("latency_ms") or {}).items()
        },
    }


def target_check_set(eval_set, limit: int | None = None) -> tuple[list, None]:
    """Held-out questions (`{"question", "context"}`) a bundle answers elsewhere; compared with this machine's."""
    questions = eval_set.questions if limit is None else eval_set.questions[:limit]
    return [{"question": q.question, "context": q.context} for q in questions], None


def compare_target_answers(here: dict, there: dict, references: list | None = None) -> dict:
    mine, theirs = here["answers"], there["answers"]
    same = sum((a["start"], a["end"]) == (b["start"], b["end"]) for a, b in zip(mine, theirs))
    agreement = same / max(1, len(mine))
    return {
        "passed": agreement >= MIN_TARGET_AGREEMENT,
        "same_tokenization": True,
        "answer_agreement": agreement,
        "answers_differ": len(mine) - same,
        "min_agreement": MIN_TARGET_AGREEMENT,
        "summary": f"the same answer span to {same} of {len(mine)} questions ({100 * agreement:.2f}%)",
    }
