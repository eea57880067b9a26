"""A decoder bundle's part of the manifest: context, KV-cache layout and generation defaults."""

from __future__ import annotations

from ...runtime.generation import IN_PLACE_MARK, context_of

GENERATION_DEFAULTS = {"max_new_tokens": 64, "temperature": 0.0, "top_k": 0, "top_p": 1.0, "repetition_penalty": 1.0}


IN_PLACE_LAYOUT = (
    "in place (stage export-fused): past_key_values.N.key/value are buffers of the whole context "
    "(batch 1, heads, max_length, head size) bound to present.N.key/value, the same memory, with onnxruntime's "
    "IO binding; each step also takes seqlens_k (int32 [1]: tokens in the cache after the step, minus 1) and "
    "total_sequence_length (int32 scalar), and GroupQueryAttention writes the new positions; edgenlp's runtime "
    "does this; transformers.js and Optimum do not (bundle the export variant for them)"
)


def bundle_section(variant, folder, model_rel: str, engine: str = "onnx") -> dict:
    """Context, KV-cache layout and generation defaults of a decoder bundle."""
    import json

    from ...bundle.manifest import signature

    config = json.loads((folder / "config.json").read_text())
    gen_path = folder / "generation_config.json"
    gen = json.loads(gen_path.read_text()) if gen_path.exists() else {}
    cache_types: set[str] = set()
    if engine == "ctranslate2":  # CTranslate2's generator keeps its cache inside
        past = [{"name": "internal"}] * (2 * int(config.get("n_layer") or config.get("num_hidden_layers") or 0))
    else:
        from ...runtime.engines import open_graph

        graph = open_graph(engine, folder / model_rel) if engine != "onnx" else None
        inputs = [] if graph else signature(folder / model_rel)["inputs"]
        names = graph.input_names if graph else [i["name"] for i in inputs]
        past = [{"name": n} for n in names if n.startswith("past_key_values.")]
        # float32, or int8 after quantize-kv (onnxruntime's GroupQueryAttention then stores it quantised)
        cache_types = {i["dtype"] for i in inputs if i["name"].startswith("past_key_values.")}
    in_place = engine == "onnx" and IN_PLACE_MARK in names
    if not past:
        from ...errors import ArtifactError

        raise ArtifactError(
            f"{variant.path} has no past_key_values inputs: a generation bundle carries the KV-cache "
            "decoder; bundle a variant exported for text-generation"
        )
    defaults = {
        **GENERATION_DEFAULTS,
        **{k: gen[k] for k in ("max_new_tokens", "temperature", "top_k", "top_p", "repetition_penalty") if k in gen},
    }
    if not gen.get("do_sample", False):
        defaults["temperature"] = 0.0
    if engine == "ctranslate2":
        layout = "inside CTranslate2's generator"
    elif in_place:
        layout = IN_PLACE_LAYOUT
    else:
        layout = (
            "optimum: past_key_values.N.key/value in, present.N.key/value out; one graph for the "
            "prompt (empty cache) and every step"
        )
    return {
        **({"layouts": {"transformers.js": None, "optimum": None}} if in_place else {}),
        "max_length": context_of(config)[0],
        "kv_cache": {
            "layout": layout,
            "layers": len(past) // 2,
            "inputs": [p["name"] for p in past][:2] + (["..."] if len(past) > 2 else []),
            **({"dtype": cache_types.pop()} if len(cache_types) == 1 else {}),
        },
        "generation": {
            **defaults,
            "eos_token_id": gen.get("eos_token_id", config.get("eos_token_id")),
            "bos_token_id": gen.get("bos_token_id", config.get("bos_token_id")),
        },
    }


def bundle_summary(results: dict, variant: dict) -> dict:
    """Perplexity and prefill / decode speed of a measured variant, for its bundle's manifest."""
    metrics = variant.get("metrics") or {}
    latency = {}
    for profile, parts in (variant.get("latency_ms") or {}).items():
        latency[profile] = {
            part: {"p50": s.get("p50"), "p90": s.get("p90")} for part, s in parts.items() if isinstance(s, dict)
        }
    return {
        "perplexity": metrics.get("perplexity"),
        "perplexity_ratio": metrics.get("perplexity_ratio"),
        "stream": metrics.get("primary_stream"),
        "latency_ms": latency,
        "tokens_per_s": {profile: p.get("tokens_per_s") for profile, p in (variant.get("profiles") or {}).items()},
    }


def target_check_set(eval_set, limit: int | None = 32) -> tuple[list[str], None]:
    """The held-out documents a bundle is checked on elsewhere: each one's start is a greedy prompt."""
    return list(eval_set.prompts[:limit]), None


def compare_target_answers(here: dict, there: dict, references: list | None = None) -> dict:
    """Identical greedy tokens per prompt, and top-1 agreement at every position of every text.

    Where a greedy continuation parts, the margin between this machine's two best logits at that
    step says why: a near tie, which other kernels' rounding can flip, or a real difference.
    """
    parted = []
    for i, (a, b) in enumerate(zip(here["greedy"], there["greedy"])):
        if a != b:
            step = next((k for k, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
            margins = here["greedy_margins"][i]
            parted.append({"prompt": i, "step": step, "margin_here": margins[step] if step < len(margins) else None})
    agree = [x == y for a, b in zip(here["top1"], there["top1"]) for x, y in zip(a, b)]
    agreement = sum(agree) / len(agree) if agree else None
    prompts = len(here["greedy"])
    summary = f"greedy tokens identical on {prompts - len(parted)} of {prompts} prompts" + (
        f", top-1 agreement {100 * agreement:.2f}% over {len(agree)} positions" if agree else ""
    )
    if parted:
        ties = [p["margin_here"] for p in parted if p["margin_here"] is not None]
        summary += (
            f"; the others part at step {', '.join(str(p['step']) for p in parted[:5])}, where this machine's two "
            f"best logits were {', '.join(f'{m:.3g}' for m in ties[:5])} apart"
        )
    return {
        "passed": not parted,
        "same_tokenization": True,
        "greedy_identical": prompts - len(parted),
        "prompts": prompts,
        "greedy_parted": parted,
        "top1_agreement": agreement,
        "positions": len(agree),
        "summary": summary,
    }
