"""What `reduce_range` and `per_channel` cost and buy on this CPU: the measurement behind `isa: auto`.

    python benchmarks/quantize_isa.py [--recipe recipes/sst2-minilm.yaml]

Takes the recipe's FP32 ONNX export (built or reused), quantises it four ways (full-range or 7-bit
weights, per tensor or per channel), and measures all of them against the FP32 export in one
harness run (1 thread, batch 1): label agreement with FP32, accuracy, p50 latency at real lengths
and 128 tokens with speed-ups paired by round. Saves `benchmarks/results/quantize_isa.json`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import record  # noqa: E402

from edgenlp import data as data_module  # noqa: E402
from edgenlp import pipeline  # noqa: E402
from edgenlp import recipe as recipe_module
from edgenlp.bench.harness import BenchSettings, measure  # noqa: E402
from edgenlp.hardware import cpu_info  # noqa: E402
from edgenlp.tasks.classification import EvalSet  # noqa: E402

SETTINGS = {
    "int8-full": {},
    "int8-reduce-range": {"reduce_range": True},
    "int8-full-per-channel": {"per_channel": True},
    "int8-reduce-range-per-channel": {"reduce_range": True, "per_channel": True},
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default=str(ROOT / "recipes" / "sst2-minilm.yaml"))
    parser.add_argument("--iterations", type=int, default=240)
    args = parser.parse_args()

    base = recipe_module.load(args.recipe)
    keep = [v.model_dump() for v in base.variants if v.name in ("pytorch-fp32", "onnx-fp32")]
    extra = [
        {"name": name, "stage": "quantize", "parent": "onnx-fp32", "config": {"reduce_range": False, **cfg}}
        for name, cfg in SETTINGS.items()
    ]
    recipe = recipe_module.parse({**base.model_dump(mode="json"), "variants": keep + extra}, args.recipe)
    out = ROOT / "runs" / base.name
    dataset = data_module.load(recipe.data)
    variants, _ = pipeline.build_variants(recipe, out, dataset, *pipeline.source_and_task(recipe))
    candidates = [c for c in pipeline.candidates_of(variants) if c.name != "pytorch-fp32"]
    dataset = dataset.aligned_to(pipeline.model_labels([c.path for c in candidates]))
    settings = BenchSettings(
        profiles=["edge-1t"], iterations=args.iterations, rounds=8, reference="onnx-fp32", throughput_batches=8
    )
    results = measure(
        candidates,
        EvalSet(dataset.test.texts, dataset.test.labels, dataset.labels, name=f"{dataset.name}/test"),
        settings,
        out / "quantize-isa",
    )
    rows = {}
    for v in results["variants"]:
        rows[v["name"]] = {
            "settings": SETTINGS.get(v["name"], "fp32"),
            "accuracy_pct": round(100 * v["metrics"]["accuracy"], 2),
            "label_agreement_with_fp32_pct": round(100 * v["metrics"].get("label_agreement_with_reference", 1.0), 2),
            "p50_ms": {s: round(x["p50"], 3) for s, x in v["latency_ms"]["edge-1t"].items()},
            "speedup_vs_fp32": {
                k: [round(r, 3), [round(c, 3) for c in v["ratios"]["speedup_p50_ci"][k]]]
                for k, r in v["ratios"]["speedup_p50"].items()
            },
        }
    isa = cpu_info().isa
    print(f"CPU {cpu_info().model}, INT8 instruction set {isa}; {results['eval']['examples']} texts")
    for name, row in rows.items():
        print(
            f"  {name:<32} agreement {row['label_agreement_with_fp32_pct']:6.2f}%  accuracy {row['accuracy_pct']:6.2f}%  "
            f"p50 {row['p50_ms']}"
        )
    record.save(
        "quantize_isa",
        {"isa": isa, "eval": results["eval"]["name"], "examples": results["eval"]["examples"], "variants": rows},
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
