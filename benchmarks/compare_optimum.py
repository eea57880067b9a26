"""edgenlp against Optimum's best CPU variant, side by side in one run.

    python benchmarks/compare_optimum.py [--recipe recipes/sst2-minilm.yaml] [--out runs/minilm-sst2]

Builds (or reuses) the recipe's variants, then Optimum's own ONNX export of the same fine-tuned
checkpoint quantised by ORTQuantizer with the `avx512_vnni` dynamic preset (per_channel=False, as
in Optimum's documentation). All of them are measured by one harness run (fresh process each,
interleaved rounds): Optimum's INT8 file both in a plain onnxruntime session and through its
ORTModel wrapper, which is how Optimum users run it. Prints accuracy, p50 latency at batch 1
(real lengths and 128 tokens, 1 and 2 threads), size and peak memory, with edgenlp/Optimum ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))

from edgenlp import data as data_module  # noqa: E402
from edgenlp import pipeline, recipe as recipe_module  # noqa: E402
from edgenlp.artifact import copy_support_files  # noqa: E402
from edgenlp.fsio import write_json_atomic  # noqa: E402
from edgenlp.bench.harness import BenchSettings, Candidate, EvalSet, measure  # noqa: E402
from edgenlp.report import markdown  # noqa: E402


def build_optimum_variant(checkpoint: Path, out: Path) -> Path:
    """Optimum's documented CPU recipe: ORTModel export, then ORTQuantizer with the avx512_vnni preset."""
    target = out / "optimum-int8-avx512_vnni"
    if (target / "model_quantized.onnx").exists():
        return target
    from optimum.onnxruntime import ORTModelForSequenceClassification, ORTQuantizer
    from optimum.onnxruntime.configuration import AutoQuantizationConfig

    export_dir = out / "optimum-onnx-fp32"
    shutil.rmtree(export_dir, ignore_errors=True)
    ORTModelForSequenceClassification.from_pretrained(str(checkpoint), export=True).save_pretrained(str(export_dir))
    copy_support_files(checkpoint, export_dir)
    quantizer = ORTQuantizer.from_pretrained(str(export_dir))
    config = AutoQuantizationConfig.avx512_vnni(is_static=False, per_channel=False)
    partial = out / ".optimum-int8.partial"
    shutil.rmtree(partial, ignore_errors=True)
    quantizer.quantize(save_dir=str(partial), quantization_config=config)
    copy_support_files(checkpoint, partial)
    partial.rename(target)
    return target


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default=str(ROOT / "recipes" / "sst2-minilm.yaml"))
    parser.add_argument("--out", default=None)
    parser.add_argument("--iterations", type=int, default=320)
    parser.add_argument("--rounds", type=int, default=8)
    args = parser.parse_args()

    recipe = recipe_module.load(args.recipe)
    out = Path(args.out or ROOT / "runs" / recipe.name)
    dataset = data_module.load(recipe.data)
    variants, _ = pipeline.build_variants(recipe, out, dataset)
    optimum_dir = build_optimum_variant(variants["pytorch-fp32"].path, out / "peers")

    ours = "onnx-int8-dynamic"
    candidates = [c for c in pipeline.candidates_of(variants) if c.name in ("pytorch-fp32", "onnx-fp32", ours)]
    candidates += [Candidate("optimum-int8 (ort session)", optimum_dir, "onnx"),
                   Candidate("optimum-int8 (ORTModel)", optimum_dir, "benchmarks.optimum_runner:OptimumRunner")]
    settings = BenchSettings(profiles=["edge-1t", "laptop-2t"], iterations=args.iterations, rounds=args.rounds,
                             reference="pytorch-fp32")
    results = measure(candidates, EvalSet(dataset.test.texts, dataset.test.labels, dataset.labels,
                                          name=f"{dataset.name}/test"), settings, out / "compare-optimum")
    results["run"] = {"recipe": recipe.name + " vs optimum", "model": recipe.model, "data": dataset.describe()}
    write_json_atomic(out / "compare-optimum" / "results.json", results)
    markdown.write(results, out / "compare-optimum" / "report.md")

    by_name = {v["name"]: v for v in results["variants"]}
    rows = [("accuracy %", lambda v: 100 * v["metrics"]["accuracy"], "{:.2f}")]
    for prof in ("edge-1t", "laptop-2t"):
        for shape in ("real", "len128"):
            rows.append((f"p50 ms {prof} {shape}", lambda v, p=prof, s=shape: v["latency_ms"][p][s]["p50"], "{:.2f}"))
    rows += [("size MB", lambda v: v["size_bytes"] / 1e6, "{:.2f}"),
             ("peak RSS MiB (1 thread)", lambda v: v["peak_rss_bytes"] / 2**20, "{:.0f}")]
    names = [c.name for c in candidates]
    width = max(len(n) for n in names)
    print("\n" + " " * 26 + "  ".join(n.rjust(width) for n in names) + "   edgenlp/optimum(session)  edgenlp/optimum(ORTModel)")
    for label, get, fmt in rows:
        values = [get(by_name[n]) for n in names]
        mine = get(by_name[ours])
        r1, r2 = mine / get(by_name["optimum-int8 (ort session)"]), mine / get(by_name["optimum-int8 (ORTModel)"])
        print(f"{label:<26}" + "  ".join(fmt.format(v).rjust(width) for v in values) + f"   {r1:24.3f}  {r2:25.3f}")
    for prof in ("edge-1t", "laptop-2t"):
        for shape in ("real", "len128"):
            mine, peer = by_name[ours]["latency_ms"][prof][shape], by_name["optimum-int8 (ort session)"]["latency_ms"][prof][shape]
            print(f"p50 95% CI {prof} {shape}: edgenlp {mine['p50_ci']}, optimum {peer['p50_ci']}")
    speed = by_name[ours]["ratios"]["speedup_p50"]
    print(f"\nedgenlp INT8 vs PyTorch FP32 eager (1 thread): {speed['edge-1t/len128']:.2f}x at 128 tokens, "
          f"{speed['edge-1t/real']:.2f}x at real lengths; size {by_name[ours]['size_bytes'] / by_name['onnx-fp32']['size_bytes']:.1%} "
          f"of onnx-fp32; accuracy {by_name[ours]['ratios']['accuracy_delta_points']:+.2f} points")
    print(f"full results: {out / 'compare-optimum' / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
