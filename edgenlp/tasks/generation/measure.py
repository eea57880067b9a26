"""The harness side: the timed generations of a round, and the raw answers turned into figures.

The timed workload is one generation: a prompt of real text (`profile.prompt_tokens`), then a fixed
number of new tokens (`profile.new_tokens`, end-of-text does not stop it) with the KV cache; one
variant is also timed without the cache. Speed is the per-token decode latency; the figures add time
to first token, tokens per second and decode speed as a share of this machine's memory bandwidth.
"""

from __future__ import annotations

import numpy as np

from ...errors import BenchError
from ...hardware import memory_bandwidth
from ...model_facts import config_of
from ...runtime.generation import CONTEXT_KEYS
from ..protocol import Workload
from .spec import SHOWN_CONTINUATIONS


def check_profiles(candidates, profiles) -> None:
    """Refuse a prompt + new tokens that do not fit a candidate's context, before any process starts."""
    for c in candidates:
        config = config_of(c.path)
        context = next((config[k] for k in CONTEXT_KEYS if config.get(k) is not None), None)
        for p in profiles:
            if isinstance(context, int) and p.prompt_tokens + p.new_tokens > context:
                raise BenchError(
                    f"profile '{p.name}' asks for {p.prompt_tokens} prompt + {p.new_tokens} new tokens "
                    f"but {c.name} has a context of {context}: lower prompt_tokens or new_tokens"
                )


def truncated_input(profile) -> None:
    """None: a decoder's inputs are bounded by its context (`check_profiles`), not by a training window."""
    return None


def speed_targets(profile: dict) -> list[tuple[str, str]]:
    """What selection ranks variants by in a profile: per-token decode p50, and time to first token."""
    return [("decode", "decode_p50_ms"), ("first token", "ttft_ms")]


def eval_request(candidate, reference) -> dict:
    if candidate.name == reference.name:
        return {}
    return {"reference": {"path": str(reference.path), "runner": reference.runner}}


def workloads(profile, settings, round_index: int, candidate: str, reference: str) -> list[Workload]:
    per_round = -(-settings.generations // settings.rounds)
    start = round_index * per_round
    out = [
        Workload(
            "generate",
            {
                "op": "generate",
                "prompt_tokens": profile.prompt_tokens,
                "new_tokens": profile.new_tokens,
                "n": per_round,
                "start": start,
                "warmup": 1 if round_index == 0 else 0,
                "use_cache": True,
            },
        )
    ]
    if candidate == (settings.no_cache_variant or reference) and round_index < settings.no_cache_generations:
        out.append(
            Workload(
                "generate_no_cache",
                {
                    "op": "generate",
                    "prompt_tokens": profile.prompt_tokens,
                    "new_tokens": profile.new_tokens,
                    "n": 1,
                    "start": start,
                    "warmup": 0,
                    "use_cache": False,
                },
            )
        )
    return out


def _generation_figures(rounds: list[dict], bootstrap: int, bytes_a_token: float | None, bandwidth: dict) -> dict:
    from ...bench import stats

    if not rounds:
        return {}
    decode = stats.latency_summary([r["decode_ms"] for r in rounds], bootstrap)
    ttft = stats.latency_summary([r["ttft_ms"] for r in rounds], bootstrap)
    total_ms = sum(sum(r["total_ms"]) for r in rounds)
    generated = sum(r["new_tokens"] * len(r["total_ms"]) for r in rounds)
    decode_ms = sum(sum(r["decode_ms"]) for r in rounds)
    decode_tokens = sum(len(r["decode_ms"]) for r in rounds)
    out = {
        "ttft_ms": ttft,
        "decode_ms": decode,
        "generations": sum(len(r["total_ms"]) for r in rounds),
        "new_tokens": rounds[0]["new_tokens"],
        "tokens_per_s": 1000.0 * generated / total_ms,
        "decode_tokens_per_s": 1000.0 * decode_tokens / decode_ms if decode_ms else None,
    }
    if bytes_a_token and out["decode_tokens_per_s"]:
        limit = bandwidth["bytes_per_s"] / bytes_a_token
        out.update(bandwidth_limit_tokens_per_s=limit, bandwidth_share=out["decode_tokens_per_s"] / limit)
    return out


def _cache_bytes_a_token(per_position: int | None, profile) -> float | None:
    """The cache a decoding step reads, averaged over the profile's steps: step i reads prompt + i positions."""
    if not per_position or not profile.prompt_tokens:
        return None
    return per_position * (profile.prompt_tokens + profile.new_tokens / 2)


def summarise(candidate, raw: dict, reference_raw: dict, payload: dict, profiles, settings) -> dict:
    """Perplexity per held-out text, fidelity to the reference, and prefill / decode figures per profile."""
    streams = raw["eval"]["streams"]
    ref_streams = reference_raw["eval"]["streams"]
    per_stream = {}
    for name, s in streams.items():
        ppl_ci = _perplexity_ci(s, settings.bootstrap)
        entry = {k: v for k, v in s.items() if k not in ("window_nll", "window_tokens")}
        entry["perplexity_ci"] = ppl_ci
        ref_ppl = ref_streams[name]["perplexity"]
        entry["perplexity_ratio"] = s["perplexity"] / ref_ppl
        per_stream[name] = entry
    primary = next(iter(per_stream))
    mine, theirs = raw["eval"]["continuations"], reference_raw["eval"]["continuations"]
    n_cmp = min(len(mine), settings.eval_prompts)
    identical = [a["tokens"] == b["tokens"] for a, b in zip(mine[:n_cmp], theirs[:n_cmp])]
    metrics = {
        "perplexity": per_stream[primary]["perplexity"],
        "perplexity_ci": per_stream[primary]["perplexity_ci"],
        "perplexity_ratio": per_stream[primary]["perplexity_ratio"],
        "primary_stream": primary,
        "streams": per_stream,
        "greedy_identical": sum(identical) / max(1, len(identical)),
        "greedy_compared": len(identical),
        "greedy_tokens": payload["continuation_tokens"],
    }
    for key in ("kl_mean", "kl_p99", "kl_max", "top1_agreement"):
        metrics[key] = per_stream[primary].get(key)
    latency, samples, per_profile = {}, {}, {}
    for p in profiles:
        slot = raw["profiles"][p.name]
        weight_bytes = slot["process"].get("decode_weight_bytes")
        cache_bytes = _cache_bytes_a_token(slot["process"].get("cache_bytes_per_position"), p)
        bytes_a_token = weight_bytes + (cache_bytes or 0) if weight_bytes else None
        bandwidth = memory_bandwidth(p.threads)
        cached = _generation_figures(slot.get("generate", []), settings.bootstrap, bytes_a_token, bandwidth)
        no_cache = _generation_figures(slot.get("generate_no_cache", []), settings.bootstrap, None, bandwidth)
        latency[p.name] = {"ttft": cached["ttft_ms"], "decode": cached["decode_ms"]}
        samples[p.name] = {
            "ttft": [[round(x, 4) for x in r["ttft_ms"]] for r in slot.get("generate", [])],
            "decode": [[round(x, 4) for x in r["decode_ms"]] for r in slot.get("generate", [])],
        }
        per_profile[p.name] = {
            "threads": p.threads,
            "prompt_tokens": p.prompt_tokens,
            "new_tokens": p.new_tokens,
            **{k: v for k, v in cached.items() if k not in ("ttft_ms", "decode_ms")},
            "decode_weight_bytes": weight_bytes,
            "decode_cache_bytes": cache_bytes,
            "decode_bytes_a_token": bytes_a_token,
            "memory_bandwidth": bandwidth,
            "no_cache": no_cache or None,
        }
    return {
        "metrics": metrics,
        "continuations": [{k: c[k] for k in ("prompt", "text")} for c in mine[:SHOWN_CONTINUATIONS]],
        "latency_ms": latency,
        "latency_samples_ms": samples,
        "profiles": per_profile,
    }


def _perplexity_ci(stream: dict, n_boot: int, seed: int = 0) -> list[float]:
    """95% interval of the perplexity, resampling windows (neighbouring tokens are not independent)."""
    nll, tokens = np.asarray(stream["window_nll"]), np.asarray(stream["window_tokens"])
    if nll.size < 2:
        return [stream["perplexity"], stream["perplexity"]]
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, nll.size, size=(n_boot, nll.size))
    ppl = np.exp(nll[idx].sum(axis=1) / tokens[idx].sum(axis=1))
    return [float(np.percentile(ppl, 2.5)), float(np.percentile(ppl, 97.5))]


def eval_section(payload: dict, reference_raw: dict, profiles) -> dict:
    streams = reference_raw["eval"]["streams"]
    return {
        "name": payload["name"],
        "unit": "tokens",
        "examples": sum(s["tokens"] for s in streams.values()),
        "streams": {
            k: {"tokens": s["tokens"], "window": s["window"], "stride": s["stride"]} for k, s in streams.items()
        },
        "prompts": len(payload["prompts"]),
        "continuation_tokens": payload["continuation_tokens"],
        "notes": payload.get("notes", []),
    }


def ratios(v: dict, ref: dict, settings) -> dict:
    from ...bench import stats

    speedup, speedup_ci = {}, {}
    for pname, kinds in v["latency_samples_ms"].items():
        for kind, rounds in kinds.items():
            base = ref["latency_samples_ms"].get(pname, {}).get(kind)
            if base and rounds and len(base) == len(rounds):
                one = stats.speedup(base, rounds, settings.bootstrap)
                speedup[f"{pname}/{kind}"] = one["ratio"]
                speedup_ci[f"{pname}/{kind}"] = one["ci"]
    return {
        "speedup_p50": speedup,
        "speedup_p50_ci": speedup_ci,
        "perplexity": v["metrics"]["perplexity"] / ref["metrics"]["perplexity"],
        "perplexity_increase_pct": 100.0 * (v["metrics"]["perplexity"] / ref["metrics"]["perplexity"] - 1.0),
    }


def metric(results: dict, variant: dict, name: str, profile: str) -> float | None:
    m, prof = variant["metrics"], variant["profiles"].get(profile, {})
    lat = variant["latency_ms"].get(profile, {})
    values = {
        "perplexity": lambda: m["perplexity"],
        "perplexity_increase": lambda: variant["ratios"]["perplexity_increase_pct"],
        "kl_mean": lambda: m.get("kl_mean") or 0.0,
        "kl_p99": lambda: m.get("kl_p99") or 0.0,
        "top1_agreement": lambda: 100.0 * (m.get("top1_agreement") if m.get("top1_agreement") is not None else 1.0),
        "greedy_identical": lambda: 100.0 * m["greedy_identical"],
        "tokens_per_s": lambda: prof["tokens_per_s"],
        "decode_tokens_per_s": lambda: prof["decode_tokens_per_s"],
        "ttft_ms": lambda: lat["ttft"]["p50"],
        "decode_p50_ms": lambda: lat["decode"]["p50"],
        "decode_p90_ms": lambda: lat["decode"]["p90"],
    }
    return float(values[name]()) if name in values else None
