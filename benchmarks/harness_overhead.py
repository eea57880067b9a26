"""How much of a measured inference is the harness's own time (target: under 5% at batch 1, 128 tokens).

    python benchmarks/harness_overhead.py [VARIANT_DIR]   (default runs/minilm-tweets/variants/onnx-int8-dynamic)

Times the same inputs in one process, in alternating blocks: a bare `session.run` loop, and the
worker's timed path (`Worker._timed`: the runner, its feed building and the clock calls). The
overhead is the ratio of their medians minus one.
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import record  # noqa: E402

from edgenlp import data  # noqa: E402
from edgenlp.bench.worker import Worker  # noqa: E402


def main() -> int:
    variant = Path(sys.argv[1] if len(sys.argv) > 1 else ROOT / "runs/minilm-tweets/variants/onnx-int8-dynamic")
    with tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False) as f:
        for t in data.load("tweets").test.texts[:200]:
            f.write(json.dumps({"text": t}) + "\n")
    worker = Worker(str(variant), "onnx", 1, f.name)
    inputs = worker._single(128)
    session, names = worker.runner.model.session, worker.runner.model.input_names
    feeds = [{k: x[k] for k in names} for x in inputs]
    outputs = worker.runner.model.output_names[:1]

    def bare(n: int, start: int) -> list[float]:
        out = []
        for i in range(n):
            feed = feeds[(start + i) % len(feeds)]
            t0 = time.perf_counter_ns()
            session.run(outputs, feed)
            out.append((time.perf_counter_ns() - t0) / 1e6)
        return out

    bare(20, 0)
    harness_ms, bare_ms = [], []
    for block in range(10):
        start = block * 30
        bare_ms += bare(30, start)
        harness_ms += worker._timed(inputs, start, 30, warmup=0)
    b, h = statistics.median(bare_ms), statistics.median(harness_ms)
    print(f"{variant.name}, batch 1, 128 tokens, 1 thread, {len(bare_ms)} inferences each")
    print(f"bare session.run p50: {b:.3f} ms; harness timed path p50: {h:.3f} ms; overhead {100 * (h / b - 1):+.2f}%")
    record.save(
        "harness_overhead",
        {
            "variant": variant.name,
            "shape": "len128",
            "threads": 1,
            "inferences_each": len(bare_ms),
            "bare_p50_ms": round(b, 3),
            "harness_p50_ms": round(h, 3),
            "overhead_pct": round(100 * (h / b - 1), 2),
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
