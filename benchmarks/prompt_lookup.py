"""Prompt-lookup decoding against plain greedy decoding, side by side in one process, 1 thread.

    python benchmarks/prompt_lookup.py [--run runs/gpt2-bbc-arm64] [--variants onnx-fp32,onnx-int4-b32,onnx-int8]
                                       [--prompts 16] [--new-tokens 64] [--drafts 4,10] [--rounds 2]

Three workloads on the kit's real text, tokenised by the model's own tokenizer:
- `medical-quote`: a medical abstract (its first 120 tokens), a blank line, then the abstract's first
  6 tokens again: the natural continuation repeats the abstract (quoting, extraction).
- `medical-continue`: the abstract's first 120 tokens, continued (the output repeats the input only
  where the model copies it).
- `wikitext-continue`: 120 tokens of a WikiText-2 test article, continued.

Each prompt is generated greedily with no early stop, plainly and with prompt lookup at each draft
length, in alternating order round by round (the same `TextGenerator.token_stream`, only the lookup
switched). Reported per variant and workload: tokens/s of the whole generation (first token
included) for each, the speed-up of each draft length over plain with a 95% bootstrap interval
paired by prompt and round, drafted and accepted tokens, forward passes per token, and whether
every generation's tokens are identical to plain greedy's. The model is whatever the run trained
(a small GPT-2 on BBC News by default): acceptance depends on how much the model copies, so the
figures are this model's, not a promise for another.
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

import numpy as np
from scipy.stats import bootstrap

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import record  # noqa: E402

from edgenlp.runtime.generation import CausalLM, PromptLookup, decode, decode_prompt_lookup  # noqa: E402

PROMPT_TOKENS = 120
QUOTE_TOKENS = 6


def data_dir() -> Path:
    import os

    return Path(os.environ.get("EDGENLP_DATA_DIR", ROOT.parent / "shared" / "data"))


def workloads(model: CausalLM, count: int) -> dict[str, list[list[int]]]:
    csv.field_size_limit(1 << 24)
    with open(data_dir() / "medical-abstracts" / "test.tsv", newline="") as f:
        abstracts = [row["text"] for row in csv.DictReader(f, delimiter="\t")]
    abstracts = [ids for ids in (model.encode(t) for t in abstracts) if len(ids) >= PROMPT_TOKENS][:count]
    blank = model.encode("\n\n")
    articles = (data_dir() / "wikitext2" / "wiki.test.raw").read_text(encoding="utf-8").split("\n = ")
    wiki = [ids for ids in (model.encode(" = " + a.strip()) for a in articles[1:]) if len(ids) >= PROMPT_TOKENS]
    return {
        "medical-quote": [ids[:PROMPT_TOKENS] + blank + ids[:QUOTE_TOKENS] for ids in abstracts],
        "medical-continue": [ids[:PROMPT_TOKENS] for ids in abstracts],
        "wikitext-continue": [ids[:PROMPT_TOKENS] for ids in wiki[:count]],
    }


def timed(model: CausalLM, prompt: list[int], new_tokens: int, draft: int) -> tuple[float, list[int], dict]:
    counts: dict = {}
    started = time.perf_counter()
    if draft:
        tokens = list(
            decode_prompt_lookup(model.step, model.trim_past, prompt, new_tokens, PromptLookup(draft), stats=counts)
        )
    else:
        tokens = list(decode(model.step, prompt, new_tokens))
        counts = {"steps": len(tokens), "drafted": 0, "accepted": 0}
    return time.perf_counter() - started, tokens, counts


def one_variant(folder: Path, args) -> dict:
    model = CausalLM(folder, threads=1)
    drafts = [0, *args.drafts]
    found = {}
    for workload, prompts in workloads(model, args.prompts).items():
        new_tokens = min(args.new_tokens, model.context - max(len(p) for p in prompts))
        seconds = {d: [] for d in drafts}
        counts = {d: {"steps": 0, "drafted": 0, "accepted": 0} for d in drafts}
        identical = {d: 0 for d in args.drafts}
        timed(model, prompts[0], 8, 0)  # warm the session's buffers
        for round_ in range(args.rounds):
            for i, prompt in enumerate(prompts):
                order = drafts if (round_ + i) % 2 == 0 else drafts[::-1]
                outputs = {}
                for d in order:
                    elapsed, tokens, c = timed(model, prompt, new_tokens, d)
                    seconds[d].append(elapsed)
                    outputs[d] = tokens
                    for k in c:
                        counts[d][k] += c[k]
                for d in args.drafts:
                    identical[d] += outputs[d] == outputs[0]
        runs = args.rounds * len(prompts)
        row = {
            "prompts": len(prompts),
            "prompt_tokens": int(np.median([len(p) for p in prompts])),
            "new_tokens": new_tokens,
            "plain_tokens_per_s": round(new_tokens * runs / sum(seconds[0]), 1),
        }
        for d in args.drafts:
            ratios = np.asarray(seconds[0]) / np.asarray(seconds[d])
            ci = bootstrap((ratios,), np.median, n_resamples=2000, method="percentile", random_state=0)
            low, high = ci.confidence_interval
            row[f"draft{d}"] = {
                "tokens_per_s": round(new_tokens * runs / sum(seconds[d]), 1),
                "speedup_median": round(float(np.median(ratios)), 3),
                "speedup_ci95": [round(float(low), 3), round(float(high), 3)],
                "drafted": counts[d]["drafted"],
                "accepted": counts[d]["accepted"],
                "acceptance_pct": round(100 * counts[d]["accepted"] / max(1, counts[d]["drafted"]), 1),
                "passes_per_token": round(counts[d]["steps"] / (new_tokens * runs), 3),
                "identical_to_greedy": f"{identical[d]} of {runs}",
            }
            print(
                f"{folder.name} {workload} draft {d}: {row[f'draft{d}']['tokens_per_s']} vs "
                f"{row['plain_tokens_per_s']} tokens/s, x{row[f'draft{d}']['speedup_median']} "
                f"[{low:.2f}-{high:.2f}], accepted {row[f'draft{d}']['acceptance_pct']}% of drafts, "
                f"identical {identical[d]}/{runs}"
            )
        found[workload] = row
    return found


def rows(summary: dict) -> dict:
    """One row per (variant, workload, draft length), for the docs' table."""
    found = {}
    for variant, by_workload in summary["variants"].items():
        for workload, row in by_workload.items():
            for d in summary["drafts"]:
                r = row[f"draft{d}"]
                found[f"{variant} {workload} draft {d}"] = {
                    "plain_tokens_per_s": row["plain_tokens_per_s"],
                    "lookup_tokens_per_s": r["tokens_per_s"],
                    "speedup": f"{r['speedup_median']} [{r['speedup_ci95'][0]}-{r['speedup_ci95'][1]}]",
                    "acceptance_pct": r["acceptance_pct"],
                    "passes_per_token": r["passes_per_token"],
                    "identical_to_greedy": r["identical_to_greedy"],
                }
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", default=str(ROOT / "runs" / "gpt2-bbc-arm64"))
    parser.add_argument("--variants", default="onnx-fp32,onnx-int4-b32,onnx-int8")
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--drafts", type=lambda s: [int(x) for x in s.split(",")], default=[4, 10])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--name", default="prompt_lookup")
    args = parser.parse_args()
    run = Path(args.run)
    summary = {
        "run": str(run.relative_to(ROOT)) if run.is_absolute() and ROOT in run.parents else str(run),
        "threads": 1,
        "drafts": args.drafts,
        "rounds": args.rounds,
        "variants": {name: one_variant(run / "variants" / name, args) for name in args.variants.split(",")},
    }
    summary["rows"] = rows(summary)
    record.save(args.name, summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
