"""A classifier bundle's part of the manifest: labels, input limits, padding and batching."""

from __future__ import annotations


def bundle_section(variant, folder, model_rel: str, engine: str = "onnx") -> dict:
    """Labels, input limits and padding of a classifier bundle; the config gains label2id if it lacks it."""
    import json

    from ... import fsio
    from ...bundle.manifest import signature
    from ...bundle.padding import lower_mask_value
    from ...runtime.text import TextTokenizer, configured_max_length

    config_path = folder / "config.json"
    config = json.loads(config_path.read_text())
    id2label = config.get("id2label") or {}
    labels = [id2label[k] for k in sorted(id2label, key=int)]
    if labels and not config.get("label2id"):
        config["label2id"] = {name: i for i, name in enumerate(labels)}
        fsio.write_json_atomic(config_path, config)
    max_length = min(configured_max_length(folder), int(config.get("max_position_embeddings") or 512))
    tokenizer = TextTokenizer(folder, max_length)
    if engine != "onnx":  # the mask-value rewrite and the operator scan read an ONNX graph
        batching = {
            "batch_invariant": None,
            "batch_note": f"not checked for the {engine} engine: compare "
            "classify(..., batch_size=1) with batched answers before relying on batching",
        }
        dynamic = False
    else:
        dynamic = any(op == "DynamicQuantizeLinear" for _, op in signature(folder / model_rel)["op_types"])
        batching = lower_mask_value(
            folder / model_rel, max_length, int(config.get("vocab_size") or 30000), tokenizer.pad_id
        )
        batching["batch_invariant"] = not dynamic
    if dynamic:
        batching["batch_note"] = (
            "dynamic INT8 quantises each batch's activations with one scale, so a text's "
            "probabilities depend a little on its batch mates: classify(..., batch_size=1) gives "
            "the answers the benchmark measured; batched answers can differ on close calls "
            "(benchmarks/runtime.py measures how often)"
        )
    return {
        "labels": labels,
        "max_length": max_length,
        "truncation": f"texts longer than {max_length} tokens are cut there by default (answers say truncated: true); "
        "truncate=False (or --no-truncate) refuses them",
        "batching": batching,
    }


def bundle_summary(results: dict, variant: dict) -> dict:
    """Accuracy and latency of a measured variant, for its bundle's manifest."""
    metrics = variant.get("metrics") or {}
    return {
        "accuracy": metrics.get("accuracy"),
        "macro_f1": metrics.get("macro_f1"),
        "examples": metrics.get("examples"),
        "accuracy_delta_points": (variant.get("ratios") or {}).get("accuracy_delta_points"),
        "latency_ms": {
            profile: {shape: {"p50": s.get("p50"), "p90": s.get("p90")} for shape, s in shapes.items()}
            for profile, shapes in (variant.get("latency_ms") or {}).items()
        },
        "throughput_seq_per_s": {
            profile: p.get("throughput_seq_per_s") for profile, p in (variant.get("profiles") or {}).items()
        },
    }


MIN_TARGET_AGREEMENT = 0.99
"""Share of texts on which a bundle on its target must give the label it gives here."""

TIE_MARGIN = 0.02
"""Two labels whose probabilities are this close, here and on the target, are a tie: which one wins is rounding.

Another CPU's INT8 kernels round otherwise (signed or unsigned activations, other accumulation order), so a model
undecided between two labels may tip either way there; that is not a bundle answering otherwise."""


def target_check_set(eval_set, limit: int | None = None) -> tuple[list[str], list[str]]:
    """The held-out texts a bundle is checked on elsewhere, with their gold labels (by name)."""
    n = len(eval_set.texts) if limit is None else min(limit, len(eval_set.texts))
    return list(eval_set.texts[:n]), [eval_set.label_names[y] for y in eval_set.labels[:n]]


def _tipped_tie(mine: list[float], theirs: list[float]) -> bool:
    """Whether the labels differ only because both sides are undecided between the two."""
    a, b = max(range(len(mine)), key=mine.__getitem__), max(range(len(theirs)), key=theirs.__getitem__)
    return a != b and abs(mine[a] - mine[b]) <= TIE_MARGIN and abs(theirs[a] - theirs[b]) <= TIE_MARGIN


def compare_target_answers(here: dict, there: dict, references: list | None = None) -> dict:
    """Label agreement between this machine's answers and the target's (and both accuracies, given gold labels).

    Agreement is counted on the texts the model decides: a label that tips on a tie (`TIE_MARGIN`) is reported, not
    held against the bundle."""
    mine, theirs = here["labels"], there["labels"]
    same = sum(a == b for a, b in zip(mine, theirs))
    ties = sum(
        a != b and _tipped_tie(p, q) for a, b, p, q in zip(mine, theirs, here["probabilities"], there["probabilities"])
    )
    decided = len(mine) - ties
    agreement = same / decided if decided else 1.0
    worst = max(
        (abs(p - q) for a, b in zip(here["probabilities"], there["probabilities"]) for p, q in zip(a, b)), default=0.0
    )
    found = {
        "passed": agreement >= MIN_TARGET_AGREEMENT,
        "same_tokenization": True,
        "label_agreement": agreement,
        "labels_differ": len(mine) - same - ties,
        "ties_tipped": ties,
        "tie_margin": TIE_MARGIN,
        "min_label_agreement": MIN_TARGET_AGREEMENT,
        "max_probability_difference": worst,
    }
    summary = (
        f"labels agree on {same} of {decided} decided texts ({100 * agreement:.2f}%), probabilities within {worst:.2g}"
    )
    if ties:
        summary += (
            f"; {ties} of {len(mine)} texts are ties (two labels within {TIE_MARGIN:g}) that tipped the other way"
        )
    if references:
        found["accuracy_here"] = sum(a == r for a, r in zip(mine, references)) / len(references)
        found["accuracy_on_target"] = sum(b == r for b, r in zip(theirs, references)) / len(references)
        summary += f"; accuracy {100 * found['accuracy_here']:.2f}% here, {100 * found['accuracy_on_target']:.2f}% on the target"
    return {**found, "summary": summary}
