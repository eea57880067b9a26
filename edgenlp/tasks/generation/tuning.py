"""What the accuracy-budget search asks of a decoder: perplexity on the tuning text and a first decode-latency look."""

from __future__ import annotations

import time

import numpy as np

from .scoring import fidelity
from .spec import TUNING_TOKENS


def tuning_quality(model_dir, tuning: str, threads: int = 1, tokens: int = TUNING_TOKENS) -> float:
    """Perplexity of an ONNX decoder on the last `tokens` tokens of the tuning text."""
    from ...runtime.generation import CausalLM

    model = CausalLM(model_dir, threads=threads)
    window = min(model.context, 256)
    return fidelity(model, model.encode(tuning)[-tokens:], window, window // 2)["perplexity"]


def quality_drop(reference: float, value: float) -> float:
    """Perplexity increase in % against the reference."""
    return 100.0 * (value / reference - 1.0)


def screen_latency(model_dir, tuning: str, threads: int, prompt_tokens: int = 32, new_tokens: int = 32) -> float:
    """Per-token decode p50 (ms) with the KV cache after a prompt of tuning text: a short first look,
    to shortlist candidates for the harness, which measures them properly."""
    from ...runtime.generation import CausalLM, generation_step

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
