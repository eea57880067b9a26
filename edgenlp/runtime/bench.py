"""`python -m edgenlp.runtime.bench BUNDLE [TEXT ...]`: a bundle's latency on this machine, with the runtime alone.

For the machine an app ships to (an ARM board, a phone's Linux, a Graviton server), where only
`pip install edgenlp-runtime` is wanted: batch-1 latency of a classifier per text (p50/p90 over
repeats, texts from arguments or stdin lines), or a decoder's prompt time and per-token decode
time. One JSON object out, with the machine and library versions it was measured with. The full
harness (`edgenlp bench`: intervals, interleaved rounds, accuracy) needs the whole toolkit.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np

SAMPLE = [
    "The service was quick and the staff were friendly.",
    "I waited forty minutes for a cold meal and nobody apologised, which is the worst experience I have had "
    "in this town in years.",
    "Not bad.",
]
"""Texts of three lengths, for a first look when none are given."""


def percentiles(ms: list[float]) -> dict:
    return {"p50": float(np.percentile(ms, 50)), "p90": float(np.percentile(ms, 90)), "n": len(ms)}


def measure(bundle, texts: list[str], repeat: int = 20, warmup: int = 3, new_tokens: int = 32) -> dict:
    """Latency figures of `bundle` on `texts`, timed here (batch 1, the bundle's threads)."""
    from .check import environment

    found = {"environment": environment(), "task": bundle.task, "texts": len(texts), "repeat": repeat}
    if bundle.task == "text-classification":
        model = bundle.model
        encodings = model.prepare(texts)
        for e in encodings[:1] * warmup:
            model.answer([e], batch_size=1)
        ms = []
        for _ in range(repeat):
            for e in encodings:
                start = time.perf_counter()
                model.answer([e], batch_size=1)
                ms.append(1000 * (time.perf_counter() - start))
        found["latency_ms"] = percentiles(ms)
        found["tokens_per_text"] = float(np.mean([len(e.ids) for e in encodings]))
        return found
    from .generation import generation_step

    model, step = bundle.model, generation_step(bundle.model)
    prompt_ms, decode_ms = [], []
    for round_ in range(warmup + repeat):
        for text in texts:
            ids = model.encode(text)[: max(1, model.context - new_tokens)]
            start = time.perf_counter()
            logits, past = step(np.asarray([ids], dtype=np.int64), None)
            first = time.perf_counter()
            for _ in range(new_tokens):
                token = int(logits[0, -1].argmax())
                logits, past = step(np.asarray([[token]], dtype=np.int64), past)
            done = time.perf_counter()
            if round_ >= warmup:
                prompt_ms.append(1000 * (first - start))
                decode_ms.append(1000 * (done - first) / max(1, new_tokens))
    found.update(prompt_ms=percentiles(prompt_ms), decode_ms_per_token=percentiles(decode_ms), new_tokens=new_tokens)
    return found


def main(argv: list[str] | None = None) -> int:
    from .bundle import load
    from .errors import EdgeNLPError

    parser = argparse.ArgumentParser(prog="python -m edgenlp.runtime.bench", description=__doc__.splitlines()[0])
    parser.add_argument("bundle", help="bundle folder or .zip")
    parser.add_argument("texts", nargs="*", help="texts or prompts (default: stdin lines, else three samples)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--new-tokens", type=int, default=32, help="decode steps timed per prompt (decoders)")
    args = parser.parse_args(argv)
    texts = args.texts or ([] if sys.stdin.isatty() else [ln.rstrip("\n") for ln in sys.stdin if ln.strip()])
    try:
        if min(args.threads, args.repeat) < 1 or args.warmup < 0 or args.new_tokens < 1:
            raise EdgeNLPError("--threads, --repeat and --new-tokens must be at least 1, --warmup at least 0")
        bundle = load(args.bundle, threads=args.threads)
        found = measure(bundle, texts or SAMPLE, args.repeat, args.warmup, args.new_tokens)
    except EdgeNLPError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2
    sys.stdout.write(json.dumps({**found, "threads": args.threads}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
