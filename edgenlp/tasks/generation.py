"""Text generation: a corpus, perplexity and fidelity to the FP32 parent, prefill + decode timings.

Data are plain-text corpora (`corpus.py`). Quality is perplexity on held-out text with a sliding
window (window = the model's context, stride = half of it), computed online: each window's logits
are reduced to a negative log-likelihood, and, against the reference run in the same process, to
the KL divergence of the next-token distributions and top-1 agreement, so no logits are stored.
Greedy continuations of the same prompts are compared token for token. The timed workload is one
generation: a prompt of real text (`profile.prompt_tokens`), then a fixed number of new tokens
(`profile.new_tokens`, end-of-text does not stop it) with the KV cache; one variant is also timed
without the cache. Speed is the per-token decode latency; the report adds time to first token,
tokens per second and decode speed as a share of this machine's measured memory bandwidth.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np

from .. import architectures
from ..errors import BenchError, DataError, ValidationFailed
from ..model_facts import config_of, decode_weight_bytes
from ..runtime.generation import CONTEXT_KEYS, context_of
from ..trust import pretrained_options
from . import Quality, Workload

NAME = "text-generation"
AUTO_MODEL = "AutoModelForCausalLM"
"""The transformers Auto class that loads a PyTorch model for this task."""
QUALITY = Quality(metric="perplexity", higher_is_better=False, drop_metric="perplexity_increase", drop_unit="%",
                  label="perplexity")
GATE_METRICS = ("perplexity", "perplexity_increase", "kl_mean", "kl_p99", "top1_agreement", "greedy_identical",
                "tokens_per_s", "decode_tokens_per_s", "ttft_ms", "decode_p50_ms", "decode_p90_ms")
MODEL_MUST_BE = "a language model (a GPT-2-family decoder)"
SPEED = ("decode_p50_ms", "lowest per-token decode p50 (KV cache, batch 1)")
PROMPT_WORDS = 24
"""Tokens of each comparison prompt (the start of a held-out document)."""
SHOWN_CONTINUATIONS = 3


@dataclass
class GenerationEvalSet:
    streams: dict[str, str]
    """Held-out texts by name (the corpus test split, WikiText-2 test): each scored as one stream."""
    prompts: list[str]
    name: str = "eval"
    notes: list[str] = field(default_factory=list)
    task: str = NAME


# -- data and validation --------------------------------------------------------------------------

def load_data(spec):
    from .. import corpus

    return corpus.load(spec)


def fingerprint(spec) -> str:
    from .. import corpus

    return corpus.fingerprint(spec)


def validation_texts(corpus, n: int) -> list[str]:
    return corpus.validation[:n]


def eval_set(corpus, model_labels: list[str] | None = None) -> GenerationEvalSet:
    """The corpus test split and, where the kit has it, WikiText-2 test; prompts from the test split."""
    from .. import corpus as corpus_module
    from ..errors import EdgeNLPError

    streams = {f"{corpus.name}/test": "\n\n".join(corpus.test)}
    notes = list(corpus.notes)
    if corpus.name != corpus_module.WIKITEXT:
        try:
            streams["wikitext2/test"] = "\n\n".join(corpus_module.load(corpus_module.WIKITEXT).test)
        except EdgeNLPError as exc:
            notes.append(f"WikiText-2 test not scored: {exc}")
    prompts = [doc for doc in corpus.test if len(doc.split()) >= 8]
    return GenerationEvalSet(streams, prompts, name=f"{corpus.name}/test", notes=notes)


def payload(eval_set: GenerationEvalSet, settings) -> dict:
    return {"task": NAME, "name": eval_set.name, "streams": eval_set.streams, "notes": eval_set.notes,
            "prompts": eval_set.prompts[: max(settings.eval_prompts, SHOWN_CONTINUATIONS)],
            "max_eval_tokens": settings.max_eval_tokens, "continuation_tokens": settings.continuation_tokens}


def check_profiles(candidates, profiles) -> None:
    """Refuse a prompt + new tokens that do not fit a candidate's context, before any process starts."""
    for c in candidates:
        config = config_of(c.path)
        context = next((config[k] for k in CONTEXT_KEYS if config.get(k) is not None), None)
        for p in profiles:
            if isinstance(context, int) and p.prompt_tokens + p.new_tokens > context:
                raise BenchError(f"profile '{p.name}' asks for {p.prompt_tokens} prompt + {p.new_tokens} new tokens "
                                 f"but {c.name} has a context of {context}: lower prompt_tokens or new_tokens")


def truncated_input(profile) -> None:
    """None: a decoder's inputs are bounded by its context (`check_profiles`), not by a training window."""
    return None


# -- the measurements themselves (shared by the worker and the validator) -------------------------

def _log_softmax(logits: np.ndarray) -> np.ndarray:
    x = logits.astype(np.float64)
    x -= x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


def sliding_windows(n_tokens: int, window: int, stride: int):
    """(begin, end, first scored index) per window: every token from index 1 on is scored exactly once."""
    if n_tokens < 2:
        raise DataError(f"the held-out text has {n_tokens} token(s): perplexity needs at least 2; give more text")
    scored_until = 1
    begin = 0
    while True:
        end = min(begin + window, n_tokens)
        yield begin, end, scored_until
        scored_until = end
        if end == n_tokens:
            return
        begin += stride


def fidelity(model, ids: list[int], window: int, stride: int, reference=None) -> dict:
    """Perplexity of `model` over `ids` (sliding window), and its divergence from `reference` if given.

    Per window only the tokens not scored by an earlier window count, each with at least
    `window - stride` tokens of context (the first window excepted). Nothing but per-token scalars
    is kept: NLL sums per window, and KL / agreement per scored token.
    """
    nll_windows, counts, kl, agree = [], [], [], []
    for begin, end, first in sliding_windows(len(ids), window, stride):
        chunk = np.asarray([ids[begin:end]], dtype=np.int64)
        rows = slice(first - begin - 1, end - begin - 1)  # logits at row j predict token j + 1
        mine = _log_softmax(model.step(chunk, None)[0][0][rows])
        targets = np.asarray(ids[first:end])
        nll_windows.append(float(-mine[np.arange(targets.size), targets].sum()))
        counts.append(int(targets.size))
        if reference is not None:
            ref_logp = _log_softmax(reference.step(chunk, None)[0][0][rows])
            kl.extend((np.exp(ref_logp) * (ref_logp - mine)).sum(axis=-1).tolist())
            agree.extend((ref_logp.argmax(-1) == mine.argmax(-1)).tolist())
    out = {"tokens": int(sum(counts)), "windows": len(counts), "window": window, "stride": stride,
           "nll_sum": float(sum(nll_windows)), "window_nll": nll_windows, "window_tokens": counts,
           "perplexity": math.exp(sum(nll_windows) / sum(counts))}
    if reference is not None:
        kl_arr = np.maximum(np.asarray(kl), 0.0)  # tiny negatives are rounding
        out.update(kl_mean=float(kl_arr.mean()), kl_p99=float(np.percentile(kl_arr, 99)),
                   kl_max=float(kl_arr.max()), top1_agreement=float(np.mean(agree)))
    return out


def greedy(model, prompt_ids: list[int], n: int, use_cache: bool = True) -> list[int]:
    from ..runtime.generation import decode, generation_step

    return list(decode(generation_step(model), prompt_ids, n, use_cache=use_cache))


def _prompt_ids(model, text: str, limit: int = PROMPT_WORDS) -> list[int]:
    return model.encode(text)[:limit]


def _cache_agreement(model, prompt: list[int], n: int) -> float:
    """Share of the tokens generated with the KV cache that the uncached model, given the same text,
    also predicts (teacher-forced, so one rounding difference does not derail the rest)."""
    generated = greedy(model, prompt, n)
    full = np.asarray([prompt + generated[:-1]], dtype=np.int64)
    predicted = model.step(full, None)[0][0, len(prompt) - 1:].argmax(-1).tolist()
    return sum(a == b for a, b in zip(predicted, generated)) / len(generated)


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits.astype(np.float64) - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def speed_targets(profile: dict) -> list[tuple[str, str]]:
    """What selection ranks variants by in a profile: per-token decode p50, and time to first token."""
    return [("decode", "decode_p50_ms"), ("first token", "ttft_ms")]


def check_against_parent(parent, child, texts: list[str], settings) -> dict:
    """FP32: greedy tokens identical, logits within `atol`, cached and uncached paths agree.
    Quantised: top-1 agreement at least `min_label_agreement`, greedy share stated."""
    from ..bench.runners import open_causal_runner

    ref = open_causal_runner(parent.path, parent.format, threads=2)
    new = open_causal_runner(child.path, child.format, threads=2)
    prompts = [_prompt_ids(new, t) for t in texts[:4] if t.strip()]
    if not prompts:
        raise ValidationFailed(f"{child.name}: no validation text to generate from: give the corpus a validation split")
    steps = 64 if child.precision == "fp32" else 16
    steps = max(1, min(steps, new.context - max(map(len, prompts)) - 1))
    same = [greedy(ref, p, steps) == greedy(new, p, steps) for p in prompts]
    ids = [t for text in texts for t in new.encode(text)][: min(new.context, 256)]
    window = min(new.context, len(ids))
    stats = fidelity(new, ids, window, max(1, window // 2), reference=ref)
    chunk = np.asarray([ids[:window]], dtype=np.int64)
    # compared as log-probabilities: an engine may return those instead of logits (CTranslate2), and the
    # per-position shift between the two carries no information
    max_diff = float(np.abs(_log_softmax(ref.step(chunk, None)[0]) - _log_softmax(new.step(chunk, None)[0])).max())
    cache_agreement = _cache_agreement(new, prompts[0], min(16, steps))
    # FP32 must match exactly. Dynamic INT8 scales activations per call, so one token at a time (cached)
    # and the whole sequence (uncached) round differently; a mis-wired cache still shows as near-chance agreement.
    needed = 1.0 if child.precision == "fp32" else settings.min_label_agreement
    result = {"examples": len(prompts), "parent": parent.name, "greedy_tokens": steps,
              "greedy_identical": sum(same) / len(same), "max_abs_logit_diff": max_diff,
              "top1_agreement": stats["top1_agreement"], "kl_mean": stats["kl_mean"],
              "cache_agreement": cache_agreement, "cache_agrees": cache_agreement >= needed}
    if not result["cache_agrees"]:
        raise ValidationFailed(f"{child.name}: generation with the KV cache agrees with generation without it on only "
                               f"{cache_agreement:.0%} of tokens (< {needed:.0%}): the export's past_key_values are "
                               "wired wrongly; re-export, or report it")
    if child.precision == "fp32":
        result.update(check="greedy+logits", atol=settings.atol,
                      summary=f"greedy {steps} tokens identical for {sum(same)}/{len(same)} prompts, max |Δlogit| "
                              f"{max_diff:.1e} (tolerance {settings.atol}), cached = uncached")
        if not all(same) or max_diff > settings.atol:
            raise ValidationFailed(
                f"{child.name}: FP32 differs from {parent.name} (greedy identical for {sum(same)}/{len(same)} prompts, "
                f"max |Δlogit| {max_diff:.2e} > atol {settings.atol}): the conversion is wrong; report it, or raise "
                "validation.atol if the difference is expected")
    else:
        result.update(check="top1_agreement", min_top1_agreement=settings.min_label_agreement,
                      summary=f"top-1 agreement {100 * stats['top1_agreement']:.1f}% (minimum "
                              f"{100 * settings.min_label_agreement:.0f}%), mean KL {stats['kl_mean']:.4f}, greedy "
                              f"{steps} tokens identical for {sum(same)}/{len(same)} prompts, cached = uncached on "
                              f"{100 * cache_agreement:.0f}% of tokens")
        if stats["top1_agreement"] < settings.min_label_agreement:
            raise ValidationFailed(f"{child.name}: agrees with {parent.name} on only {stats['top1_agreement']:.1%} of "
                                   f"next tokens (< {settings.min_label_agreement:.0%}): keep sensitive nodes in float "
                                   "(nodes_to_exclude), use a smaller block size, or lower validation.min_label_agreement")
    return result


# -- the worker side (torch-free for ONNX runners) ------------------------------------------------

class Session:
    """One decoder answering the harness: `eval` (fidelity), `generate` (timed), `stats`."""

    def __init__(self, path: str, runner: str, threads: int, payload_file: str):
        import json

        from ..bench.runners import open_causal_runner

        self.path, self.threads = path, threads
        self.model = open_causal_runner(path, runner, threads)
        with open(payload_file, encoding="utf-8") as f:
            self.payload = json.load(f)
        stream = next(iter(self.payload["streams"].values()))
        self.prompt_pool = self.model.encode(stream[:100_000])

    def _prompt(self, length: int, index: int) -> list[int]:
        """`length` tokens of real held-out text, a different slice for each request."""
        pool = self.prompt_pool
        if len(pool) < length + 1:
            raise ValueError(f"the held-out text has {len(pool)} tokens, fewer than a {length}-token prompt")
        start = (index * 997) % (len(pool) - length)
        return pool[start:start + length]

    def _generate(self, prompt: list[int], new_tokens: int, use_cache: bool) -> dict:
        """Time to first token (prefill + pick) and each later token's step, greedy, no early stop.

        A runner with its own decoding loop (`timed_generation`, e.g. CTranslate2) reports the same
        two figures from inside that loop.
        """
        if use_cache and hasattr(self.model, "timed_generation"):
            ttft, per_token = self.model.timed_generation(prompt, new_tokens)
            return {"ttft_ms": ttft, "decode_ms": per_token}
        from ..runtime.generation import generation_step

        step, clock = generation_step(self.model), time.perf_counter_ns
        ids = list(prompt)
        t0 = clock()
        logits, past = step(np.asarray([ids], dtype=np.int64), None)
        token = int(logits[0, -1].argmax())
        ttft = (clock() - t0) / 1e6
        per_token = []
        for _ in range(new_tokens - 1):
            ids.append(token)
            t0 = clock()
            if use_cache:
                logits, past = step(np.asarray([[token]], dtype=np.int64), past)
            else:
                logits, _ = step(np.asarray([ids], dtype=np.int64), None)
            token = int(logits[0, -1].argmax())
            per_token.append((clock() - t0) / 1e6)
        return {"ttft_ms": ttft, "decode_ms": per_token}

    def stats(self) -> dict:
        return {"decode_weight_bytes": decode_weight_bytes(self.path), "context": self.model.context}

    def handle(self, req: dict) -> dict:
        op = req["op"]
        if op == "generate":
            for i in range(req.get("warmup", 0)):
                self._generate(self._prompt(req["prompt_tokens"], req["start"] + 1000 + i), 8, req["use_cache"])
            runs = [self._generate(self._prompt(req["prompt_tokens"], req["start"] + i), req["new_tokens"],
                                   req["use_cache"]) for i in range(req["n"])]
            return {"ttft_ms": [r["ttft_ms"] for r in runs], "decode_ms": [x for r in runs for x in r["decode_ms"]],
                    "total_ms": [r["ttft_ms"] + sum(r["decode_ms"]) for r in runs], "new_tokens": req["new_tokens"],
                    "use_cache": req["use_cache"]}
        if op == "eval":
            return self._evaluate(req.get("reference"))
        raise ValueError(f"unknown op {op}")

    def _evaluate(self, reference: dict | None) -> dict:
        from ..bench.runners import open_causal_runner

        ref = open_causal_runner(reference["path"], reference["runner"], self.threads) if reference else None
        window = self.model.context
        limit = self.payload["max_eval_tokens"]
        streams = {}
        for name, text in self.payload["streams"].items():
            ids = self.model.encode(text[: limit * 16] if limit else text)  # 16 characters a token is far above English's ~4
            ids = ids[:limit] if limit else ids
            if len(ids) < 2:
                raise ValueError(f"{name} is too small to score (fewer than 2 tokens): give more held-out text")
            streams[name] = fidelity(self.model, ids, min(window, len(ids)), max(1, min(window, len(ids)) // 2), ref)
        n = self.payload["continuation_tokens"]
        continuations = []
        for text in self.payload["prompts"]:
            prompt = _prompt_ids(self.model, text)
            tokens = greedy(self.model, prompt, min(n, window - len(prompt)))
            continuations.append({"prompt": self.model.decode_ids(prompt), "tokens": tokens,
                                  "text": self.model.decode_ids(tokens)})
        return {"streams": streams, "continuations": continuations}


# -- the harness side -----------------------------------------------------------------------------

def eval_request(candidate, reference) -> dict:
    if candidate.name == reference.name:
        return {}
    return {"reference": {"path": str(reference.path), "runner": reference.runner}}


def workloads(profile, settings, round_index: int, candidate: str, reference: str) -> list[Workload]:
    per_round = -(-settings.generations // settings.rounds)
    start = round_index * per_round
    out = [Workload("generate", {"op": "generate", "prompt_tokens": profile.prompt_tokens,
                                 "new_tokens": profile.new_tokens, "n": per_round, "start": start,
                                 "warmup": 1 if round_index == 0 else 0, "use_cache": True})]
    if candidate == (settings.no_cache_variant or reference) and round_index < settings.no_cache_generations:
        out.append(Workload("generate_no_cache", {"op": "generate", "prompt_tokens": profile.prompt_tokens,
                                                  "new_tokens": profile.new_tokens, "n": 1, "start": start,
                                                  "warmup": 0, "use_cache": False}))
    return out


_BANDWIDTH: dict = {}


def memory_bandwidth(threads: int = 1) -> dict:
    """This machine's memory read bandwidth with `threads` readers: the best of 5 sums over 512 MiB.

    Each thread sums its own slice (numpy releases the GIL), so two threads measure what a
    two-thread decode can read; the limit a profile is held to uses its own thread count.
    """
    if threads not in _BANDWIDTH:
        from concurrent.futures import ThreadPoolExecutor

        data = np.ones(64 * 2**20, dtype=np.float64)  # 512 MiB, far beyond any cache
        parts = np.array_split(data, threads)
        best = float("inf")
        with ThreadPoolExecutor(threads) as pool:
            for _ in range(5):
                t0 = time.perf_counter()
                list(pool.map(np.sum, parts))
                best = min(best, time.perf_counter() - t0)
        _BANDWIDTH[threads] = {"bytes_per_s": data.nbytes / best, "threads": threads,
                               "how": f"numpy sums over 512 MiB of float64 by {threads} thread(s), best of 5 (read only)"}
    return dict(_BANDWIDTH[threads])


def _generation_figures(rounds: list[dict], bootstrap: int, weight_bytes: int | None, bandwidth: dict) -> dict:
    from ..bench import stats

    if not rounds:
        return {}
    decode = stats.latency_summary([r["decode_ms"] for r in rounds], bootstrap)
    ttft = stats.latency_summary([r["ttft_ms"] for r in rounds], bootstrap)
    total_ms = sum(sum(r["total_ms"]) for r in rounds)
    generated = sum(r["new_tokens"] * len(r["total_ms"]) for r in rounds)
    decode_ms = sum(sum(r["decode_ms"]) for r in rounds)
    decode_tokens = sum(len(r["decode_ms"]) for r in rounds)
    out = {"ttft_ms": ttft, "decode_ms": decode, "generations": sum(len(r["total_ms"]) for r in rounds),
           "new_tokens": rounds[0]["new_tokens"], "tokens_per_s": 1000.0 * generated / total_ms,
           "decode_tokens_per_s": 1000.0 * decode_tokens / decode_ms if decode_ms else None}
    if weight_bytes and out["decode_tokens_per_s"]:
        limit = bandwidth["bytes_per_s"] / weight_bytes
        out.update(bandwidth_limit_tokens_per_s=limit, bandwidth_share=out["decode_tokens_per_s"] / limit)
    return out


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
    metrics = {"perplexity": per_stream[primary]["perplexity"], "perplexity_ci": per_stream[primary]["perplexity_ci"],
               "perplexity_ratio": per_stream[primary]["perplexity_ratio"], "primary_stream": primary,
               "streams": per_stream, "greedy_identical": sum(identical) / max(1, len(identical)),
               "greedy_compared": len(identical), "greedy_tokens": payload["continuation_tokens"]}
    for key in ("kl_mean", "kl_p99", "kl_max", "top1_agreement"):
        metrics[key] = per_stream[primary].get(key)
    latency, samples, per_profile = {}, {}, {}
    for p in profiles:
        slot = raw["profiles"][p.name]
        weight_bytes = slot["process"].get("decode_weight_bytes")
        bandwidth = memory_bandwidth(p.threads)
        cached = _generation_figures(slot.get("generate", []), settings.bootstrap, weight_bytes, bandwidth)
        no_cache = _generation_figures(slot.get("generate_no_cache", []), settings.bootstrap, None, bandwidth)
        latency[p.name] = {"ttft": cached["ttft_ms"], "decode": cached["decode_ms"]}
        samples[p.name] = {"ttft": [[round(x, 4) for x in r["ttft_ms"]] for r in slot.get("generate", [])],
                           "decode": [[round(x, 4) for x in r["decode_ms"]] for r in slot.get("generate", [])]}
        per_profile[p.name] = {"threads": p.threads, "prompt_tokens": p.prompt_tokens, "new_tokens": p.new_tokens,
                               **{k: v for k, v in cached.items() if k not in ("ttft_ms", "decode_ms")},
                               "decode_weight_bytes": weight_bytes, "memory_bandwidth": bandwidth,
                               "no_cache": no_cache or None}
    return {"metrics": metrics, "continuations": [{k: c[k] for k in ("prompt", "text")} for c in mine[:SHOWN_CONTINUATIONS]],
            "latency_ms": latency, "latency_samples_ms": samples, "profiles": per_profile}


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
    return {"name": payload["name"], "unit": "tokens", "examples": sum(s["tokens"] for s in streams.values()),
            "streams": {k: {"tokens": s["tokens"], "window": s["window"], "stride": s["stride"]} for k, s in streams.items()},
            "prompts": len(payload["prompts"]), "continuation_tokens": payload["continuation_tokens"],
            "notes": payload.get("notes", [])}


def ratios(v: dict, ref: dict, settings) -> dict:
    from ..bench import stats

    speedup, speedup_ci = {}, {}
    for pname, kinds in v["latency_samples_ms"].items():
        for kind, rounds in kinds.items():
            base = ref["latency_samples_ms"].get(pname, {}).get(kind)
            if base and rounds and len(base) == len(rounds):
                one = stats.speedup(base, rounds, settings.bootstrap)
                speedup[f"{pname}/{kind}"] = one["ratio"]
                speedup_ci[f"{pname}/{kind}"] = one["ci"]
    return {"speedup_p50": speedup, "speedup_p50_ci": speedup_ci,
            "perplexity": v["metrics"]["perplexity"] / ref["metrics"]["perplexity"],
            "perplexity_increase_pct": 100.0 * (v["metrics"]["perplexity"] / ref["metrics"]["perplexity"] - 1.0)}


# -- selection and gates --------------------------------------------------------------------------

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


# -- report ---------------------------------------------------------------------------------------

def report_sections(results: dict) -> list[str]:
    from ..report.markdown import MB, MIB, _ms, _x

    sel = results.get("selection") or {}
    lines = ["## Quality: perplexity and fidelity to the reference", "",
             "Sliding-window perplexity (window = context, stride = half) on "
             + ", ".join(f"{k} ({s['tokens']:,} tokens)" for k, s in results["eval"]["streams"].items())
             + "; KL divergence and top-1 agreement of next-token distributions against the reference, per scored "
               f"token; greedy: share of {results['eval']['prompts']} prompts whose {results['eval']['continuation_tokens']} "
               "greedy tokens are identical to the reference's.", "",
             "| variant | format | size MB | size vs ref | perplexity [95% CI] | vs ref | mean KL | p99 KL | top-1 agreement | greedy identical |",
             "|---|---|---:|---:|---|---:|---:|---:|---:|---:|"]
    for v in results["variants"]:
        m, r = v["metrics"], v["ratios"]
        lo, hi = m["perplexity_ci"]
        mark = " (selected)" if v["name"] == sel.get("selected") else ""
        agree = m.get("top1_agreement")
        lines.append(f"| {v['name']}{mark} | {v.get('format', '?')} {v.get('precision', '')} | {v['size_bytes'] / MB:.1f} | "
                     f"{_x(r['size'])} | {m['perplexity']:.2f} [{lo:.2f}-{hi:.2f}] | {r['perplexity_increase_pct']:+.2f}% | "
                     f"{_num(m.get('kl_mean'), '{:.4f}')} | {_num(m.get('kl_p99'), '{:.4f}')} | "
                     f"{_num(None if agree is None else 100 * agree, '{:.1f}%')} | {100 * m['greedy_identical']:.0f}% |")
    more = [k for k in results["eval"]["streams"] if k != results["variants"][0]["metrics"]["primary_stream"]]
    for stream in more:
        lines += ["", f"Perplexity on {stream}: " + "; ".join(
            f"`{v['name']}` {v['metrics']['streams'][stream]['perplexity']:.2f} "
            f"({100 * (v['metrics']['streams'][stream]['perplexity_ratio'] - 1):+.2f}%)" for v in results["variants"]) + "."]
    for p in results["profiles"]:
        name = p["name"]
        bw = (results["variants"][0]["profiles"].get(name) or {}).get("memory_bandwidth") \
            or results["variants"][0].get("memory_bandwidth", {})  # results written before bandwidth per profile
        lines += ["", f"## Generation speed: profile `{name}` ({p['threads']} thread{'s' if p['threads'] > 1 else ''}, "
                      f"batch 1, {p['prompt_tokens']}-token prompt, {p['new_tokens']} new tokens, greedy)", "",
                  "Time to first token (prefill + first pick) and per-token decode latency, p50 [95% CI] and p90 ms; "
                  "speed-up = reference p50 / variant p50 [95% CI, paired by round]; tokens/s = new tokens / whole "
                  "generation; bandwidth share = decode tokens/s against the limit set by reading every weight once per "
                  f"token at the measured {bw.get('bytes_per_s', 0) / 1e9:.1f} GB/s ({bw.get('how', '')}).", "",
                  "| variant | TTFT p50 | TTFT speed-up | decode p50 | decode p90 | decode speed-up | tokens/s | decode tokens/s | bandwidth share | no-cache tokens/s | peak RSS MiB |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for v in results["variants"]:
            lat, prof, r = v["latency_ms"].get(name, {}), v["profiles"].get(name, {}), v["ratios"]
            share = prof.get("bandwidth_share")
            nc = prof.get("no_cache") or {}
            lines.append(
                f"| {v['name']} | {_ms(lat.get('ttft'))} | {_x(r['speedup_p50'].get(f'{name}/ttft'), r['speedup_p50_ci'].get(f'{name}/ttft'))} | "
                f"{_ms(lat.get('decode'))} | {_ms(lat.get('decode'), 'p90').split(' ')[0]} | "
                f"{_x(r['speedup_p50'].get(f'{name}/decode'), r['speedup_p50_ci'].get(f'{name}/decode'))} | "
                f"{prof.get('tokens_per_s', 0):.1f} | {prof.get('decode_tokens_per_s') or 0:.1f} | "
                f"{_num(share, '{:.0%}')}{_num(prof.get('bandwidth_limit_tokens_per_s'), ' of {:.0f}', '')} | "
                f"{_num(nc.get('tokens_per_s'), '{:.1f}')} | {prof.get('peak_rss_bytes', 0) / MIB:.0f} |")
    lines += ["", "## Continuations of the same prompts (greedy)", ""]
    first = results["variants"][0].get("continuations") or []
    for i, c in enumerate(first):
        lines += [f"**Prompt {i + 1}:** {c['prompt'].strip()!r}", ""]
        lines += [f"- `{v['name']}`: {(v.get('continuations') or [{}] * (i + 1))[i].get('text', '').strip()!r}"
                  for v in results["variants"]]
        lines.append("")
    return lines


def _num(value, fmt: str, missing: str = "-") -> str:
    return missing if value is None else fmt.format(value)


def figures(results: dict) -> list[tuple[str, str | None]]:
    from ..report import plots

    return [("Perplexity against decode latency, with the Pareto front", plots.quality_vs_speed(results))]


# -- static quantisation and the accuracy-budget search (torch-free) ------------------------------

CALIBRATION_BATCH = 4
"""128-token windows per calibration batch (the logits dominate memory)."""

CALIBRATION_WINDOW = 128
TUNING_TOKENS = 8192


def calibration_batches(corpus, model_dir, samples: int, batch_size: int, seed: int = 0):
    """`samples` windows of training text as prompt feeds (empty KV cache), streamed batch by batch."""
    from ..quantization.calibration import check_sample_count
    from ..runtime.generation import CausalLM

    model = CausalLM(model_dir)
    window = min(CALIBRATION_WINDOW, model.context)
    ids: list[int] = []
    for doc in corpus.train:
        ids.extend(model.encode(doc) + ([model.eos_id] if model.eos_id is not None else []))
        if len(ids) >= samples * window:
            break
    windows = [ids[i:i + window] for i in range(0, len(ids) - window + 1, window)][:samples]
    check_sample_count(len(windows), samples, f"the training text of {corpus.name} ({window}-token windows)")

    def stream():
        for start in range(0, len(windows), batch_size):
            yield model.feed(np.asarray(windows[start:start + batch_size], dtype=np.int64))

    return stream()


def tuning_set(corpus, model_labels=None, limit: int | None = None, seed: int = 0, seen: list[dict] = (),
               minimum: int = 0) -> str:
    """The validation text carved from the training corpus (the search never reads the test split).
    Training stages pick checkpoints on its first windows, so `tuning_quality` scores its end."""
    return "\n\n".join(corpus.validation)


def tuning_quality(model_dir, tuning: str, threads: int = 1, tokens: int = TUNING_TOKENS) -> float:
    """Perplexity of an ONNX decoder on the last `tokens` tokens of the tuning text."""
    from ..runtime.generation import CausalLM

    model = CausalLM(model_dir, threads=threads)
    window = min(model.context, 256)
    return fidelity(model, model.encode(tuning)[-tokens:], window, window // 2)["perplexity"]


def quality_drop(reference: float, value: float) -> float:
    """Perplexity increase in % against the reference."""
    return 100.0 * (value / reference - 1.0)


def screen_latency(model_dir, tuning: str, threads: int, prompt_tokens: int = 32, new_tokens: int = 32) -> float:
    """Per-token decode p50 (ms) with the KV cache after a prompt of tuning text: a short first look,
    to shortlist candidates for the harness, which measures them properly."""
    from ..runtime.generation import CausalLM, generation_step

    model = CausalLM(model_dir, threads=threads)
    step = generation_step(model)
    prompt = model.encode(tuning)[:prompt_tokens]
    new_tokens = min(new_tokens, model.context - len(prompt))
    times = []
    for _ in range(3):
        logits, past = step(np.asarray([prompt], dtype=np.int64), None)
        for _ in range(new_tokens):
            token = np.asarray([[int(logits[0, -1].argmax())]], dtype=np.int64)
            t0 = time.perf_counter_ns()
            logits, past = step(token, past)
            times.append((time.perf_counter_ns() - t0) / 1e6)
    return float(np.median(times))


# -- training -------------------------------------------------------------------------------------

class Trainer:
    """The language model's half of the training loop: next-token loss on windows of the corpus."""

    METRIC = "perplexity"
    METRICS = {"perplexity": False, "loss": False}

    def __init__(self, parent_path, corpus, config):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        architectures.register()  # a pruned checkpoint's classes
        self.tokenizer = AutoTokenizer.from_pretrained(str(parent_path), **pretrained_options(parent_path))
        self.model = AutoModelForCausalLM.from_pretrained(str(parent_path), **pretrained_options(parent_path))
        context, _ = context_of(self.model.config.to_dict(), f"{parent_path}/config.json")
        self.block = min(config.max_length, context)
        eos = self.tokenizer.eos_token_id
        self.train_blocks = self._blocks(corpus.train, eos)
        if not self.train_blocks:
            raise DataError(f"corpus '{corpus.name}' is too small for one training window of {self.block} tokens: "
                            "give more text or lower max_length")
        self.val_blocks = self._blocks(corpus.validation, eos)[: config.max_eval_examples]
        if not self.val_blocks:
            raise DataError(f"corpus '{corpus.name}' has too little validation text for one window of {self.block} "
                            "tokens: give more text, raise validation_fraction or lower max_length")
        self.train_size = len(self.train_blocks)
        self.data_description = corpus.describe()

    def _blocks(self, docs: list[str], eos: int) -> list[list[int]]:
        ids: list[int] = []
        for enc in self.tokenizer(docs, add_special_tokens=False)["input_ids"]:
            ids.extend(enc + [eos])
        return [ids[i:i + self.block] for i in range(0, len(ids) - self.block + 1, self.block)]

    def describe(self) -> dict:
        return {"window": self.block, "train_windows": len(self.train_blocks),
                "train_tokens": len(self.train_blocks) * self.block, "validation_windows": len(self.val_blocks)}

    def batches(self, rng, batch_size: int):
        import torch

        order = list(range(len(self.train_blocks)))
        rng.shuffle(order)
        for start in range(0, len(order), batch_size):
            ids = torch.tensor([self.train_blocks[i] for i in order[start:start + batch_size]])
            yield {"input_ids": ids, "labels": ids}

    def evaluate(self, batch_size: int = 16) -> dict:
        import torch

        total, count = 0.0, 0
        for start in range(0, len(self.val_blocks), batch_size):
            ids = torch.tensor(self.val_blocks[start:start + batch_size])
            loss = float(self.model(input_ids=ids, labels=ids).loss)
            n = ids.shape[0] * (ids.shape[1] - 1)
            total, count = total + loss * n, count + n
        loss = total / count
        return {"loss": loss, "perplexity": math.exp(loss)}

    def save(self, workdir) -> None:
        self.model.save_pretrained(str(workdir), safe_serialization=True)
        self.tokenizer.model_max_length = int(getattr(self.model.config, "n_positions", self.block))
        self.tokenizer.save_pretrained(str(workdir))


# -- bundles --------------------------------------------------------------------------------------

GENERATION_DEFAULTS = {"max_new_tokens": 64, "temperature": 0.0, "top_k": 0, "top_p": 1.0, "repetition_penalty": 1.0}


def bundle_section(variant, folder, model_rel: str, engine: str = "onnx") -> dict:
    """Context, KV-cache layout and generation defaults of a decoder bundle."""
    import json

    from ..bundle.manifest import signature

    config = json.loads((folder / "config.json").read_text())
    gen_path = folder / "generation_config.json"
    gen = json.loads(gen_path.read_text()) if gen_path.exists() else {}
    if engine == "ctranslate2":  # CTranslate2's generator keeps its cache inside
        past = [{"name": "internal"}] * (2 * int(config.get("n_layer") or config.get("num_hidden_layers") or 0))
    else:
        from ..runtime.engines import open_graph

        graph = open_graph(engine, folder / model_rel) if engine != "onnx" else None
        names = graph.input_names if graph else [i["name"] for i in signature(folder / model_rel)["inputs"]]
        past = [{"name": n} for n in names if n.startswith("past_key_values.")]
    if not past:
        from ..errors import ArtifactError

        raise ArtifactError(f"{variant.path} has no past_key_values inputs: a generation bundle carries the KV-cache "
                            "decoder; bundle a variant exported for text-generation")
    defaults = {**GENERATION_DEFAULTS, **{k: gen[k] for k in ("max_new_tokens", "temperature", "top_k", "top_p",
                                                               "repetition_penalty") if k in gen}}
    if not gen.get("do_sample", False):
        defaults["temperature"] = 0.0
    return {
        "max_length": context_of(config)[0],
        "kv_cache": {"layout": "inside CTranslate2's generator" if engine == "ctranslate2" else
                     "optimum: past_key_values.N.key/value in, present.N.key/value out; one graph for the "
                     "prompt (empty cache) and every step", "layers": len(past) // 2,
                     "inputs": [p["name"] for p in past][:2] + (["..."] if len(past) > 2 else [])},
        "generation": {**defaults, "eos_token_id": gen.get("eos_token_id", config.get("eos_token_id")),
                       "bos_token_id": gen.get("bos_token_id", config.get("bos_token_id"))},
    }


def bundle_summary(results: dict, variant: dict) -> dict:
    """Perplexity and prefill / decode speed of a measured variant, for its bundle's manifest."""
    metrics = variant.get("metrics") or {}
    latency = {}
    for profile, parts in (variant.get("latency_ms") or {}).items():
        latency[profile] = {part: {"p50": s.get("p50"), "p90": s.get("p90")} for part, s in parts.items()
                            if isinstance(s, dict)}
    return {
        "perplexity": metrics.get("perplexity"), "perplexity_ratio": metrics.get("perplexity_ratio"),
        "stream": metrics.get("primary_stream"), "latency_ms": latency,
        "tokens_per_s": {profile: p.get("tokens_per_s") for profile, p in (variant.get("profiles") or {}).items()},
    }
