"""What AVX2's saturating INT8 kernel does to an x86 run of an ARM-built bundle, on the check's own texts.

    python benchmarks/x86_exact_int8.py runs/minilm-tweets-arm64/bundles/onnx-int8-dynamic [--texts 500]

Without VNNI, onnxruntime's x86 u8 x s8 kernels add pairs of products in 16 bits (vpmaddubsw), which
full-range weights can saturate; ARM's kernels (and VNNI's) accumulate in 32 bits and never do. The
session option `session.x64quantprecision` makes onnxruntime run such MatMuls as u8 x u8, which does
not saturate. This runs the bundle's ONNX graph over the first `--texts` held-out texts of its run's
data (the texts `--check-on` compares) with and without the option, and against the FP32 parent the
bundle's variant was made from: label flips, and each run's agreement with FP32. Then what the option
costs: batch-1 latency of the bundle's graph with and without it, 1 thread, interleaved, at 24 tokens
(a tweet) and 128 (the bundle's maximum). Saves `benchmarks/results/x86_exact_int8.json`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import record  # noqa: E402

from edgenlp import data as data_module  # noqa: E402
from edgenlp.hardware import cpu_info  # noqa: E402
from edgenlp.runtime.session import exact_int8, session_options  # noqa: E402
from edgenlp.tasks.classification.bundle import target_check_set  # noqa: E402
from edgenlp.tasks.classification.data import eval_set  # noqa: E402


def open_session(model: Path, exact: bool):
    import onnxruntime as ort

    with exact_int8(exact):  # the runtime's own options, as the check's x86 run opens them
        options = session_options(threads=1)
    return ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])


def labels(model: Path, tokenizer, texts: list[str], exact: bool, max_length: int) -> np.ndarray:
    session = open_session(model, exact)
    names = {i.name for i in session.get_inputs()}
    found = []
    for text in texts:  # one text a run, as the check runs them
        encoded = tokenizer(text, truncation=True, max_length=max_length, return_tensors="np")
        feed = {k: v.astype(np.int64) for k, v in encoded.items() if k in names}
        found.append(int(session.run(None, feed)[0].argmax(-1)[0]))
    return np.array(found)


def latency(model: Path, lengths=(24, 128), runs: int = 100) -> dict:
    """p50 ms of one batch-1 run, default and exact sessions interleaved run by run (1 thread)."""
    import time

    sessions = {exact: open_session(model, exact) for exact in (False, True)}
    names = {i.name for i in sessions[False].get_inputs()}
    rng = np.random.default_rng(0)
    found = {}
    for length in lengths:
        ids = rng.integers(1000, 20000, (1, length)).astype(np.int64)
        feed = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
        feed = {k: v for k, v in feed.items() if k in names}
        times: dict[bool, list[float]] = {False: [], True: []}
        for i in range(runs + 10):
            for exact in (False, True) if i % 2 else (True, False):
                start = time.perf_counter()
                sessions[exact].run(None, feed)
                if i >= 10:  # warm-up first
                    times[exact].append(1000 * (time.perf_counter() - start))
        default, exact = (float(np.median(times[e])) for e in (False, True))
        found[f"{length}_tokens"] = {
            "default_ms_p50": round(default, 3),
            "exact_ms_p50": round(exact, 3),
            "exact_vs_default": round(exact / default, 3),
        }
    return found


def main() -> int:
    from transformers import AutoTokenizer

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundle", type=Path)
    parser.add_argument("--fp32", type=Path, help="the FP32 ONNX model (default: the run's onnx-fp32)")
    parser.add_argument("--data", default="tweets")
    parser.add_argument(
        "--max-test-examples", type=int, default=2000, help="the run's test sample (recipes/arm64.yaml)"
    )
    parser.add_argument("--texts", type=int, default=500)
    parser.add_argument("--name", default="x86_exact_int8")
    args = parser.parse_args()
    manifest = json.loads((args.bundle / "manifest.json").read_text())
    fp32 = args.fp32 or args.bundle.parent.parent / "variants" / "onnx-fp32" / "model.onnx"
    int8 = next((args.bundle / "onnx").glob("*.onnx"))
    tokenizer = AutoTokenizer.from_pretrained(str(args.bundle))
    dataset = data_module.load(data_module.DataSpec(source=args.data, max_test_examples=args.max_test_examples))
    texts, _ = target_check_set(eval_set(dataset, manifest["labels"]), args.texts)
    length = manifest.get("max_length") or 128
    reference = labels(fp32, tokenizer, texts, exact=False, max_length=length)
    saturating = labels(int8, tokenizer, texts, exact=False, max_length=length)
    exact = labels(int8, tokenizer, texts, exact=True, max_length=length)
    cpu = cpu_info()
    timed = latency(int8)
    summary = {
        "bundle": str(args.bundle),
        "built_for": manifest.get("isa", {}).get("tuned_for"),
        "host_isa": cpu.isa,
        "texts": len(texts),
        "labels_flipped_by_saturation": int((saturating != exact).sum()),
        "agreement_with_fp32_pct": {
            "default (saturating on AVX2)": round(100 * float((saturating == reference).mean()), 2),
            "session.x64quantprecision=1": round(100 * float((exact == reference).mean()), 2),
        },
        "latency_1_thread": timed,
    }
    print(json.dumps(summary, indent=1))
    record.save(args.name, summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
