"""Where the time of 4-bit embedding tables goes: onnxruntime's profiler on two variants, per operator.

    python benchmarks/table_gather_profile.py runs/frontier-tweets/variants/onnx-int8-l3 \
        runs/frontier-tweets/variants/onnx-int8-l3-e4 --lengths 24 128

Each variant's ONNX model runs `--runs` times at each length (1 thread, batch 1, random in-vocabulary
ids) with onnxruntime's profiling on; the kernel time of every operator type is summed and divided
by the runs. Saves `benchmarks/results/table_gather_profile.json`: microseconds a run per operator,
and the total.
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import record  # noqa: E402

from edgenlp.artifact import onnx_file  # noqa: E402


def profile(model: Path, length: int, runs: int) -> dict:
    import numpy as np
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    options.enable_profiling = True
    options.profile_file_prefix = str(Path(tempfile.mkdtemp(prefix="edgenlp-profile-")) / "run")
    session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    feed = {
        "input_ids": rng.integers(1000, 5000, (1, length), dtype=np.int64),
        "attention_mask": np.ones((1, length), np.int64),
        "token_type_ids": np.zeros((1, length), np.int64),
    }
    feed = {name: value for name, value in feed.items() if name in {i.name for i in session.get_inputs()}}
    for _ in range(runs):
        session.run(None, feed)
    events = json.loads(Path(session.end_profiling()).read_text())
    per_op: collections.Counter = collections.Counter()
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            per_op[event["args"]["op_name"]] += event["dur"]
    by_op = {op: round(us / runs, 1) for op, us in per_op.most_common()}
    return {"total_us": round(sum(per_op.values()) / runs, 1), "per_op_us": by_op}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("variants", nargs="+", type=Path)
    parser.add_argument("--lengths", type=int, nargs="+", default=[24, 128])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--name", default="table_gather_profile")
    args = parser.parse_args()
    summary: dict = {"runs": args.runs, "threads": 1, "variants": {}}
    for variant in args.variants:
        summary["variants"][variant.name] = {str(n): profile(onnx_file(variant), n, args.runs) for n in args.lengths}
        for n, found in summary["variants"][variant.name].items():
            top = ", ".join(f"{op} {us:.0f}" for op, us in list(found["per_op_us"].items())[:4])
            print(f"{variant.name:<24} {n:>4} tokens: {found['total_us']:.0f} us a run ({top})")
    record.save(args.name, summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
