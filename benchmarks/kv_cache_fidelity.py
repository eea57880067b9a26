"""What an INT8 KV cache costs in fidelity: every token scored through the cache, against its parent's.

    python benchmarks/kv_cache_fidelity.py --run runs/gpt2-bbc-kv \
        --pairs fused-int8:fused-int8-kv8,fused-int4-b256:fused-int4-b256-kv8 --reference fused-fp32

The harness's perplexity scores whole windows in one pass, whose attention reads the window's own
keys and values, not the cache: it cannot see what `quantize-kv` changed. Here each window of the
model's context is fed one token at a time (teacher forcing), so every prediction after the first
reads all earlier positions back from the cache, as decoding does. Per held-out text (BBC News test,
WikiText-2 test) and variant: perplexity of the tokens so scored, and for each INT8-cache variant,
against its parent (the same weights, a float cache) the mean KL of the next-token distributions,
top-1 agreement, and the perplexity change; the reference (FP32) sets each perplexity's baseline.
Speed is not measured here (recipes/gpt2-small-fused.yaml is the speed run).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import record  # noqa: E402

from edgenlp.corpus import load as load_corpus  # noqa: E402
from edgenlp.runtime.generation import CausalLM  # noqa: E402

STREAMS = {"bbc-news/test": "bbc-news", "wikitext2/test": "wikitext2"}


def windows(model: CausalLM, source: str, count: int) -> list[list[int]]:
    """`count` windows of the model's whole context, cut from the test split's documents in order."""
    ids: list[int] = []
    for doc in load_corpus(source).test:
        ids.extend(model.encode(doc) + ([model.eos_id] if model.eos_id is not None else []))
        if len(ids) >= count * model.context:
            break
    cut = [ids[i : i + model.context] for i in range(0, count * model.context, model.context)]
    return [w for w in cut if len(w) == model.context]  # a short split gives fewer windows, never short ones


def log_probs_through_cache(model: CausalLM, window: list[int]) -> np.ndarray:
    """(len - 1, vocab) log-probabilities of each next token, every step after the first read from the cache."""
    logits, past = model.step(np.asarray([window[:1]], dtype=np.int64), None)
    rows = [logits[0, -1]]
    for token in window[1:-1]:
        logits, past = model.step(np.asarray([[token]], dtype=np.int64), past)
        rows.append(logits[0, -1])
    z = np.asarray(rows, dtype=np.float64)
    z -= z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def target_log_probs(logp: np.ndarray, window: list[int]) -> np.ndarray:
    return logp[np.arange(len(window) - 1), np.asarray(window[1:])]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", type=Path, default=ROOT / "runs" / "gpt2-bbc-kv")
    parser.add_argument("--pairs", default="fused-int8:fused-int8-kv8,fused-int4-b256:fused-int4-b256-kv8")
    parser.add_argument("--reference", default="fused-fp32")
    parser.add_argument("--windows", type=int, default=8, help="windows of the model's context per held-out text")
    parser.add_argument("--name", default="kv_cache_fidelity")
    args = parser.parse_args()

    pairs = [tuple(p.split(":")) for p in args.pairs.split(",")]
    variants = [args.reference] + [v for pair in pairs for v in pair]
    folders = {v: args.run / "variants" / v for v in variants}
    for folder in folders.values():
        if not folder.is_dir():
            raise SystemExit(f"{folder} does not exist: build the run first (see the recipe's header)")
    models = {v: CausalLM(folders[v], threads=2) for v in dict.fromkeys(variants)}
    texts = {name: windows(models[args.reference], source, args.windows) for name, source in STREAMS.items()}
    # a window's (positions x vocabulary) log-probabilities are 100 MB: each is reduced as it comes
    nll = {v: {name: [] for name in STREAMS} for v in models}
    pair_stats = {(p, c): {name: {"kl": [], "same_top1": []} for name in STREAMS} for p, c in pairs}
    for name, ws in texts.items():
        for window in ws:
            scored = {v: log_probs_through_cache(m, window) for v, m in models.items()}
            for v, logp in scored.items():
                nll[v][name].append(-target_log_probs(logp, window))
            for (parent, child), by_text in pair_stats.items():
                p, c = scored[parent], scored[child]
                by_text[name]["kl"].append((np.exp(p) * (p - c)).sum(axis=1))
                by_text[name]["same_top1"].append(p.argmax(axis=1) == c.argmax(axis=1))

    def ppl(v: str, name: str) -> float:
        return float(np.exp(np.concatenate(nll[v][name]).mean()))

    rows = {
        v: {
            name: {
                "perplexity": ppl(v, name),
                "perplexity_increase_pct_vs_reference": 100 * (ppl(v, name) / ppl(args.reference, name) - 1),
            }
            for name in STREAMS
        }
        for v in models
    }
    for (parent, child), by_text in pair_stats.items():
        for name, got in by_text.items():
            kl = np.concatenate(got["kl"])
            rows[child][name] |= {
                "vs_parent": parent,
                "perplexity_increase_pct_vs_parent": 100 * (ppl(child, name) / ppl(parent, name) - 1),
                "kl_mean_vs_parent": float(kl.mean()),
                "kl_p99_vs_parent": float(np.quantile(kl, 0.99)),
                "top1_agreement_vs_parent": float(np.concatenate(got["same_top1"]).mean()),
            }
    summary = {
        "run": str(args.run),
        "context": models[args.reference].context,
        "scored_tokens": {name: sum(len(w) - 1 for w in ws) for name, ws in texts.items()},
        "how": "each window fed one token at a time (teacher forcing): every prediction reads the earlier "
        "positions back from the KV cache",
        "reference": args.reference,
        "rows": rows,
    }
    print(f"{'variant':24s} {'text':16s} {'ppl':>9s} {'vs ref %':>9s} {'vs parent %':>11s} {'KL':>9s} {'top-1':>7s}")
    for v, by_text in rows.items():
        for name, r in by_text.items():
            extra = (
                f"{r['perplexity_increase_pct_vs_parent']:+11.3f} {r['kl_mean_vs_parent']:9.2e} "
                f"{100 * r['top1_agreement_vs_parent']:6.2f}%"
                if "vs_parent" in r
                else ""
            )
            print(
                f"{v:24s} {name:16s} {r['perplexity']:9.2f} {r['perplexity_increase_pct_vs_reference']:+9.3f} {extra}"
            )
    record.save(args.name, summary)


if __name__ == "__main__":
    main()
