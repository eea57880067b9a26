"""A tagger bundle's part of the manifest: tags, entity types, input limits; and its cross-machine check."""

from __future__ import annotations

MIN_TARGET_AGREEMENT = 0.99
"""Share of texts whose entities (type and character span) a bundle on its target must find as it does here."""


def bundle_section(variant, folder, model_rel: str, engine: str = "onnx") -> dict:
    """Tags, entity types and input limits; the config gains label2id if it lacks it (transformers.js reads it)."""
    import json

    from ... import fsio
    from ...runtime.text import configured_max_length

    config_path = folder / "config.json"
    config = json.loads(config_path.read_text())
    id2label = config.get("id2label") or {}
    labels = [id2label[k] for k in sorted(id2label, key=int)]
    if labels and not config.get("label2id"):
        config["label2id"] = {name: i for i, name in enumerate(labels)}
        fsio.write_json_atomic(config_path, config)
    max_length = min(configured_max_length(folder), int(config.get("max_position_embeddings") or 512))
    return {
        "labels": labels,
        "entity_types": sorted({t[2:] for t in labels if t[:2] in ("B-", "I-")}),
        "max_length": max_length,
        "truncation": f"texts longer than {max_length} tokens are tagged up to there by default; truncate=False "
        "refuses them",
        "aggregation": "each word tagged by its first subword; B-/I- words joined into spans with character offsets",
        "transformers_js": {"pipeline": "token-classification", "options": {"ignore_labels": ["O"]}},
    }


def bundle_summary(results: dict, variant: dict) -> dict:
    """Entity F1 and latency of a measured variant, for its bundle's manifest."""
    m = variant.get("metrics") or {}
    return {
        "entity_f1": m.get("entity_f1"),
        "entity_precision": m.get("entity_precision"),
        "entity_recall": m.get("entity_recall"),
        "entity_f1_delta_points": (variant.get("ratios") or {}).get("entity_f1_delta_points"),
        "latency_ms": {
            profile: {shape: {"p50": s.get("p50"), "p90": s.get("p90")} for shape, s in shapes.items()}
            for profile, shapes in (variant.get("latency_ms") or {}).items()
        },
    }


def target_check_set(eval_set, limit: int | None = None) -> tuple[list[str], None]:
    """The held-out sentences a bundle tags elsewhere (the comparison is with this machine's entities)."""
    texts = eval_set.texts
    return list(texts if limit is None else texts[:limit]), None


def _spans(entities: list[dict]) -> list[tuple]:
    return [(e["entity_group"], e["start"], e["end"]) for e in entities]


def compare_target_answers(here: dict, there: dict, references: list | None = None) -> dict:
    """Texts whose entities (type, start, end) are the same here and on the target, and the largest score difference."""
    mine, theirs = here["entities"], there["entities"]
    same = sum(_spans(a) == _spans(b) for a, b in zip(mine, theirs))
    agreement = same / max(1, len(mine))
    worst = max(
        (abs(x["score"] - y["score"]) for a, b in zip(mine, theirs) if _spans(a) == _spans(b) for x, y in zip(a, b)),
        default=0.0,
    )
    return {
        "passed": agreement >= MIN_TARGET_AGREEMENT,
        "same_tokenization": True,
        "entity_agreement": agreement,
        "texts_differ": len(mine) - same,
        "min_agreement": MIN_TARGET_AGREEMENT,
        "max_score_difference": worst,
        "summary": f"entities the same in {same} of {len(mine)} texts ({100 * agreement:.2f}%), scores within {worst:.2g}",
    }
