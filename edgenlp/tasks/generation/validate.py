"""Is a new decoder faithful to its parent? FP32: identical greedy tokens and logits; quantised: top-1
agreement; both: generation with the KV cache agrees with generation without it.
"""

from __future__ import annotations

import numpy as np

from ...errors import ValidationFailed
from .scoring import agreement_with_cache, fidelity, greedy, log_softmax, prompt_ids


def check_against_parent(parent, child, texts: list[str], settings) -> dict:
    """FP32: greedy tokens identical, logits within `atol`, cached and uncached paths agree.
    Quantised: top-1 agreement at least `min_label_agreement`, greedy share stated."""
    from ...bench.runners import open_causal_runner

    ref = open_causal_runner(parent.path, parent.format, threads=2)
    new = open_causal_runner(child.path, child.format, threads=2)
    prompts = [prompt_ids(new, t) for t in texts[:4] if t.strip()]
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
    max_diff = float(np.abs(log_softmax(ref.step(chunk, None)[0]) - log_softmax(new.step(chunk, None)[0])).max())
    cache_agreement = agreement_with_cache(new, prompts[0], min(16, steps))
    # FP32 must match exactly. Dynamic INT8 scales activations per call, so one token at a time (cached)
    # and the whole sequence (uncached) round differently; a mis-wired cache still shows as near-chance agreement.
    needed = 1.0 if child.precision == "fp32" else settings.min_label_agreement
    result = {
        "examples": len(prompts),
        "parent": parent.name,
        "greedy_tokens": steps,
        "greedy_identical": sum(same) / len(same),
        "max_abs_logit_diff": max_diff,
        "top1_agreement": stats["top1_agreement"],
        "kl_mean": stats["kl_mean"],
        "cache_agreement": cache_agreement,
        "cache_agrees": cache_agreement >= needed,
    }
    if not result["cache_agrees"]:
        raise ValidationFailed(
            f"{child.name}: generation with the KV cache agrees with generation without it on only "
            f"{cache_agreement:.0%} of tokens (< {needed:.0%}): the export's past_key_values are "
            "wired wrongly; re-export, or report it"
        )
    if child.precision == "fp32":
        result.update(
            check="greedy+logits",
            atol=settings.atol,
            summary=f"greedy {steps} tokens identical for {sum(same)}/{len(same)} prompts, max |Δlogit| "
            f"{max_diff:.1e} (tolerance {settings.atol}), cached = uncached",
        )
        if not all(same) or max_diff > settings.atol:
            raise ValidationFailed(
                f"{child.name}: FP32 differs from {parent.name} (greedy identical for {sum(same)}/{len(same)} prompts, "
                f"max |Δlogit| {max_diff:.2e} > atol {settings.atol}): the conversion is wrong; report it, or raise "
                "validation.atol if the difference is expected"
            )
    else:
        result.update(
            check="top1_agreement",
            min_top1_agreement=settings.min_label_agreement,
            summary=f"top-1 agreement {100 * stats['top1_agreement']:.1f}% (minimum "
            f"{100 * settings.min_label_agreement:.0f}%), mean KL {stats['kl_mean']:.4f}, greedy "
            f"{steps} tokens identical for {sum(same)}/{len(same)} prompts, cached = uncached on "
            f"{100 * cache_agreement:.0f}% of tokens",
        )
        if stats["top1_agreement"] < settings.min_label_agreement:
            raise ValidationFailed(
                f"{child.name}: agrees with {parent.name} on only {stats['top1_agreement']:.1%} of "
                f"next tokens (< {settings.min_label_agreement:.0%}): keep sensitive nodes in float "
                "(nodes_to_exclude), use a smaller block size, or lower validation.min_label_agreement"
            )
    return result
