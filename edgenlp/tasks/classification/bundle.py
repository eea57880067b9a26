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
