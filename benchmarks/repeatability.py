"""Do two runs of the harness on the same variant agree on p50 within their confidence intervals?

    python benchmarks/repeatability.py [VARIANT_DIR] [--data tweets]

Runs `edgenlp bench`'s measurement twice, one after the other, on one variant (default: the INT8
MiniLM of `runs/minilm-tweets`) and prints both p50s with their 95% intervals per profile and length,
and whether the intervals overlap.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import record  # noqa: E402

from edgenlp import data  # noqa: E402
from edgenlp.bench.harness import BenchSettings, Candidate, measure  # noqa: E402
from edgenlp.tasks.classification import EvalSet  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("variant", nargs="?", default=str(ROOT / "runs/minilm-tweets/variants/onnx-int8-dynamic"))
    parser.add_argument("--data", default="tweets")
    parser.add_argument("--iterations", type=int, default=300)
    args = parser.parse_args()
    dataset = data.load(data.DataSpec(source=args.data, max_test_examples=1000))
    eval_set = EvalSet(dataset.test.texts, dataset.test.labels, dataset.labels)
    candidate = Candidate(Path(args.variant).name, Path(args.variant), "onnx")
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(2):
            runs.append(measure([candidate], eval_set, BenchSettings(iterations=args.iterations), Path(tmp) / str(i)))
    agree, cells = True, {}
    for profile, shapes in runs[0]["variants"][0]["latency_ms"].items():
        for shape, first in shapes.items():
            second = runs[1]["variants"][0]["latency_ms"][profile][shape]
            overlap = first["p50_ci"][0] <= second["p50_ci"][1] and second["p50_ci"][0] <= first["p50_ci"][1]
            agree &= overlap
            cells[f"{profile}/{shape}"] = {
                "run1": [round(first["p50"], 3), [round(c, 3) for c in first["p50_ci"]]],
                "run2": [round(second["p50"], 3), [round(c, 3) for c in second["p50_ci"]]],
                "overlap": overlap,
            }
            print(
                f"{profile:<10} {shape:<7} run 1 p50 {first['p50']:.3f} {[round(x, 3) for x in first['p50_ci']]}  "
                f"run 2 p50 {second['p50']:.3f} {[round(x, 3) for x in second['p50_ci']]}  "
                f"{'overlap' if overlap else 'DISJOINT'}"
            )
    print("the two runs agree within their confidence intervals" if agree else "the runs disagree")
    record.save(
        "repeatability",
        {"variant": Path(args.variant).name, "iterations": args.iterations, "cells": cells, "all_overlap": agree},
    )
    return 0 if agree else 1


if __name__ == "__main__":
    sys.exit(main())
