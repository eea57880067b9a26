"""A decoder bundle's part of the manifest: context, KV-cache layout and generation defaults."""

from __future__ import annotations

from ...runtime.generation import context_of

GENERATION_DEFAULTS = {"max_new_tokens": 64, "temperature": 0.0, "top_k": 0, "top_p": 1.0, "repetition_penalty": 1.0}


def bundle_section(variant, folder, model_rel: str, engine: str = "onnx") -> dict:
    """Context, KV-cache layout and generation defaults of a decoder bundle."""
    import json

    from ...bundle.manifest import signature

    config = json.loads((folder / "config.json").read_text())
    gen_path = folder / "generation_config.json"
    gen = json.loads(gen_path.read_text()) if gen_path.exists() else {}
    if engine == "ctranslate2":  # CTranslate2's generator keeps its cache inside
        past = [{"name": "internal"}] * (2 * int(config.get("n_layer") or config.get("num_hidden_layers") or 0))
    else:
        from ...runtime.engines import open_graph

        graph = open_graph(engine, folder / model_rel) if engine != "onnx" else None
        names = graph.input_names if graph else [i["name"] for i in signature(folder / model_rel)["inputs"]]
        past = [{"name": n} for n in names if n.startswith("past_key_values.")]
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
    return {
        "max_length": context_of(config)[0],
        "kv_cache": {
            "layout": "inside CTranslate2's generator"
            if engine == "ctranslate2"
            else "optimum: past_key_values.N.key/value in, present.N.key/value out; one graph for the "
            "prompt (empty cache) and every step",
            "layers": len(past) // 2,
            "inputs": [p["name"] for p in past][:2] + (["..."] if len(past) > 2 else []),
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
