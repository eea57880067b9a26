"""The measurements themselves, shared by the worker and the validator.

Perplexity on held-out text with a sliding window (window = the model's context, stride = half of
it), computed online: each window's logits are reduced to a negative log-likelihood, and, against
the reference run in the same process, to the KL divergence of the next-token distributions and
top-1 agreement, so no logits are stored. Greedy continuations are compared token for token.
"""

from __future__ import annotations

import math

import numpy as np

from ...errors import DataError
from .spec import PROMPT_WORDS


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
        mine = log_softmax(model.step(chunk, None)[0][0][rows])
        targets = np.asarray(ids[first:end])
        nll_windows.append(float(-mine[np.arange(targets.size), targets].sum()))
        counts.append(int(targets.size))
        if reference is not None:
            ref_logp = log_softmax(reference.step(chunk, None)[0][0][rows])
            kl.extend((np.exp(ref_logp) * (ref_logp - mine)).sum(axis=-1).tolist())
            agree.extend((ref_logp.argmax(-1) == mine.argmax(-1)).tolist())
    out = {
        "tokens": int(sum(counts)),
        "windows": len(counts),
        "window": window,
        "stride": stride,
        "nll_sum": float(sum(nll_windows)),
        "window_nll": nll_windows,
        "window_tokens": counts,
        "perplexity": math.exp(sum(nll_windows) / sum(counts)),
    }
    if reference is not None:
        kl_arr = np.maximum(np.asarray(kl), 0.0)  # tiny negatives are rounding
        out.update(
            kl_mean=float(kl_arr.mean()),
            kl_p99=float(np.percentile(kl_arr, 99)),
            kl_max=float(kl_arr.max()),
            top1_agreement=float(np.mean(agree)),
        )
    return out


def greedy(model, prompt_ids: list[int], n: int, use_cache: bool = True) -> list[int]:
    from ...runtime.generation import decode, generation_step

    return list(decode(generation_step(model), prompt_ids, n, use_cache=use_cache))


def prompt_ids(model, text: str, limit: int = PROMPT_WORDS) -> list[int]:
    return model.encode(text)[:limit]


def agreement_with_cache(model, prompt: list[int], n: int) -> float:
    """Share of the tokens generated with the KV cache that the uncached model, given the same text,
    also predicts (teacher-forced, so one rounding difference does not derail the rest)."""
    generated = greedy(model, prompt, n)
    full = np.asarray([prompt + generated[:-1]], dtype=np.int64)
    predicted = model.step(full, None)[0][0, len(prompt) - 1 :].argmax(-1).tolist()
    return sum(a == b for a, b in zip(predicted, generated)) / len(generated)


def log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits.astype(np.float64) - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
