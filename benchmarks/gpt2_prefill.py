"""Where a prompt's time goes in a GPT-2 decoder: the LM head over every position or the last only, and
which operators the rest is spent in, per variant.

    python benchmarks/gpt2_prefill.py [--run runs/gpt2-small-speed] [--variants onnx-fp32,onnx-int8,onnx-int4-b128]

For each variant's `model.onnx`, on one thread: a 128-token prompt (empty cache) timed with
`logits_to_keep` 0 (every position, what evaluation asks) and 1 (the last, what generation asks),
interleaved, p50 of 12 each; then an onnxruntime profile of 4 prompts with `logits_to_keep=1` (each
node's fastest of the 4, so first-run set-up is left out), summed by operator type, and the slowest
feed-forward input projection of the transformer blocks. Saves
`benchmarks/results/gpt2_prefill.json`. Build the variants first (benchmarks/gpt2_generation.py).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import record  # noqa: E402  (benchmarks/record.py)

from edgenlp.runtime.generation import LOGITS_TO_KEEP, CausalLM  # noqa: E402

PROMPT, REPEATS = 128, 12


def profiling_session(path: Path, profile_dir: str):
    import onnxruntime as ort

    from edgenlp.runtime.session import session_options

    options = session_options(1)
    options.enable_profiling = True
    options.profile_file_prefix = str(Path(profile_dir) / path.parent.name)
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", default=str(ROOT / "runs" / "gpt2-small-speed"))
    parser.add_argument("--variants", default="onnx-fp32,onnx-int8,onnx-int4-b128")
    args = parser.parse_args()
    summary = {"prompt_tokens": PROMPT, "threads": 1, "repeats": REPEATS, "variants": {}}
    for name in args.variants.split(","):
        path = Path(args.run) / "variants" / name / "model.onnx"
        model = CausalLM(path.parent)  # its feed (empty cache, positions, logits_to_keep) and its session
        if LOGITS_TO_KEEP not in model.model.optional_input_names:
            sys.exit(f"{path} has no {LOGITS_TO_KEEP} input: rebuild it (the export stage adds it)")
        sess = model.model.session
        ids = np.random.default_rng(0).integers(0, 50_000, (1, PROMPT))
        feeds = {keep: model.feed(ids, None, last_only=bool(keep)) for keep in (0, 1)}
        times = {0: [], 1: []}
        for keep in (0, 1, 0, 1):  # warm-up
            sess.run(["logits"], feeds[keep])
        for _ in range(REPEATS):
            for keep in (0, 1):
                t0 = time.perf_counter()
                sess.run(["logits"], feeds[keep])
                times[keep].append((time.perf_counter() - t0) * 1e3)
        with tempfile.TemporaryDirectory() as tmp:
            prof = profiling_session(path, tmp)
            for _ in range(4):
                prof.run(["logits"], feeds[1])
            events = json.loads(Path(prof.end_profiling()).read_text())
        by_op, nodes = {}, {}
        for e in events:
            if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
                key = e["name"][: -len("_kernel_time")]
                ms = e["dur"] / 1e3
                nodes[key] = (e["args"].get("op_name"), min(ms, nodes.get(key, (None, ms))[1]))
        for op, ms in nodes.values():
            by_op[op] = by_op.get(op, 0) + ms
        blocks = {k: v for k, v in nodes.items() if "/mlp/c_fc/" in k}
        slowest = max(blocks.items(), key=lambda kv: kv[1][1]) if blocks else None
        cell = {
            "every_position_ms_p50": float(np.median(times[0])),
            "last_position_ms_p50": float(np.median(times[1])),
            "by_operator_ms": dict(sorted(by_op.items(), key=lambda kv: -kv[1])),
            "mlp_c_fc": {
                "node": slowest[0],
                "op": slowest[1][0],
                "ms": slowest[1][1],
                "multiply_accumulates": PROMPT * 768 * 3072,
            }
            if slowest
            else None,
        }
        summary["variants"][name] = cell
        top = ", ".join(f"{op} {ms:.1f}" for op, ms in list(cell["by_operator_ms"].items())[:3])
        print(
            f"{name:<20} prompt {cell['every_position_ms_p50']:7.1f} ms every position, "
            f"{cell['last_position_ms_p50']:7.1f} ms last only; profile: {top}; "
            + (f"c_fc {slowest[1][0]} {slowest[1][1]:.2f} ms" if slowest else "")
        )
    record.save("gpt2_prefill", summary)


if __name__ == "__main__":
    main()
