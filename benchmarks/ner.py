"""Named entities: MiniLM fine-tuned on WNUT-17, edgenlp's INT8 and pruned variants against Optimum's INT8, one run.

    python benchmarks/ner.py [--recipe recipes/minilm-wnut17.yaml] [--out runs/minilm-wnut17]

Builds (or reuses) the recipe's variants, then Optimum's own `token-classification` export of the
fine-tuned checkpoint quantised by ORTQuantizer with its dynamic preset for this CPU (`avx512_vnni` or
`avx2`, per_channel=False as in Optimum's documentation). One harness run (fresh process each,
interleaved rounds, 1 thread) tags every WNUT-17 test sentence one at a time for the entity scores, then
times one sentence at real lengths. Optimum's file is timed in a plain onnxruntime session and through
its ORTModel wrapper. Prints and saves (`benchmarks/results/<name>.json`) the issue's checks:
- the best INT8 variant within 1.0 entity-F1 point of FP32, and at least as fast as Optimum's INT8
  (speed-up with a 95% interval paired by round);
- the pruned + distilled INT8 variant against the unpruned INT8 (>= 1.4x at <= 1.0 point below FP32).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))

import compare_optimum  # noqa: E402  (benchmarks/compare_optimum.py)
import record  # noqa: E402  (benchmarks/record.py)

from edgenlp import pipeline  # noqa: E402
from edgenlp import recipe as recipe_module
from edgenlp.bench import stats  # noqa: E402
from edgenlp.bench.harness import BenchSettings, Candidate, measure  # noqa: E402
from edgenlp.bench.profiles import Profile  # noqa: E402
from edgenlp.fsio import write_json_atomic  # noqa: E402
from edgenlp.hardware import cpu_info  # noqa: E402
from edgenlp.report import markdown  # noqa: E402

MAX_F1_DROP, PRUNED_SPEEDUP, PRUNED_MAX_DROP = 1.0, 1.4, 1.0
PEERS = ("optimum-int8 (ort session)", "optimum-int8 (ORTModel)")
KEY = "edge-1t/real"


def row(v: dict) -> dict:
    m = v["metrics"]
    return {
        "format": v.get("format") or "onnx",  # a peer's folder has no artifact record
        "precision": v.get("precision") or "int8",
        "entity_f1": round(m["entity_f1"], 2),
        "entity_f1_ci": [round(x, 2) for x in m["entity_f1_ci"]],
        "entity_f1_delta_points": round(v["ratios"]["entity_f1_delta_points"], 2),
        "entity_f1_delta_ci": [round(x, 2) for x in m["entity_f1_delta_ci"]] if m.get("entity_f1_delta_ci") else None,
        "precision_pct": round(m["entity_precision"], 2),
        "recall_pct": round(m["entity_recall"], 2),
        "per_type_f1": {k: round(x["f1"], 1) for k, x in m["per_type"].items()},
        "word_agreement_pct": round(100 * m.get("word_agreement_with_reference", 1.0), 2),
        "size_mb": round(v["size_bytes"] / 1e6, 1),
        "p50_ms": round(v["latency_ms"]["edge-1t"]["real"]["p50"], 3),
        "p50_ci": [round(x, 3) for x in v["latency_ms"]["edge-1t"]["real"]["p50_ci"]],
        "peak_rss_mib": round(v["profiles"]["edge-1t"]["peak_rss_bytes"] / 2**20),
    }


def paired(results: dict, base: str, other: str) -> dict:
    """How many times faster `other` is than `base` on one sentence, rounds paired."""
    by = {v["name"]: v for v in results["variants"]}
    profile, shape = KEY.split("/")
    one = stats.speedup(by[base]["latency_samples_ms"][profile][shape], by[other]["latency_samples_ms"][profile][shape])
    return {"ratio": round(one["ratio"], 3), "ci": [round(c, 3) for c in one["ci"]]}


def summarize(results: dict, pruned: list[str], unpruned: list[str]) -> dict:
    rows = {v["name"]: row(v) for v in results["variants"]}
    ref = results["reference"]
    ours = [n for n in rows if n not in PEERS and n != ref and rows[n]["precision"] != "fp32"]
    within = {n: -rows[n]["entity_f1_delta_points"] <= MAX_F1_DROP for n in ours}
    unpruned_int8 = [n for n in unpruned if n in rows and within.get(n)]
    best = max(unpruned_int8, key=lambda n: rows[n]["entity_f1"]) if unpruned_int8 else None
    fastest_peer = min(PEERS, key=lambda n: rows[n]["p50_ms"])
    verdict: dict = {"fastest_peer": fastest_peer, "peer_entity_f1": rows[fastest_peer]["entity_f1"]}
    if best:
        against = paired(results, fastest_peer, best)
        verdict.update(
            best_int8=best,
            speedup_over_fastest_peer=against,
            vs_every_peer={p: paired(results, p, best) for p in PEERS},
            met=against["ci"][1] >= 1.0,
        )
    else:
        verdict.update(met=False, why=f"no unpruned INT8 variant is within {MAX_F1_DROP} F1 point of FP32")
    pruning = {}
    base = best or (unpruned[0] if unpruned else None)
    for name in (n for n in pruned if n in rows and base):
        drop = rows[ref]["entity_f1"] - rows[name]["entity_f1"]
        one = {"against": base, "speedup": paired(results, base, name), "f1_below_fp32_points": round(drop, 2)}
        one["met"] = drop <= PRUNED_MAX_DROP and one["speedup"]["ratio"] >= PRUNED_SPEEDUP
        pruning[name] = one
    return {
        "targets": {"max_f1_drop": MAX_F1_DROP, "pruned_speedup": PRUNED_SPEEDUP, "pruned_max_drop": PRUNED_MAX_DROP},
        "eval": results["eval"],
        "fp32_entity_f1": rows[ref]["entity_f1"],
        "variants": rows,
        "int8_within_1_point": within,
        "vs_optimum": verdict,
        "pruning": pruning,
    }


def print_summary(s: dict) -> None:
    print(f"\nFP32 entity F1 on WNUT-17 test: {s['fp32_entity_f1']:.2f}")
    print(f"{'variant':<30} {'F1':>6} {'delta':>6} {'P':>6} {'R':>6} {'words same':>10} {'p50 ms':>7} {'MB':>6}")
    for name, r in s["variants"].items():
        print(
            f"{name:<30} {r['entity_f1']:>6.2f} {r['entity_f1_delta_points']:>+6.2f} {r['precision_pct']:>6.2f} "
            f"{r['recall_pct']:>6.2f} {r['word_agreement_pct']:>9.2f}% {r['p50_ms']:>7.3f} {r['size_mb']:>6.1f}"
        )
    v = s["vs_optimum"]
    if "best_int8" in v:
        sp = v["speedup_over_fastest_peer"]
        print(
            f"best INT8 {v['best_int8']} vs {v['fastest_peer']}: {sp['ratio']:.3f}x [{sp['ci'][0]:.3f}-{sp['ci'][1]:.3f}]"
            f" -> {'met' if v['met'] else 'NOT MET'}"
        )
    else:
        print(f"INT8 vs Optimum: NOT MET ({v['why']})")
    for name, p in s["pruning"].items():
        sp = p["speedup"]
        print(
            f"pruned: {name} vs {p['against']}: {sp['ratio']:.2f}x [{sp['ci'][0]:.2f}-{sp['ci'][1]:.2f}], "
            f"{p['f1_below_fp32_points']:.2f} points below FP32 -> {'met' if p['met'] else 'NOT MET'}"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default=str(ROOT / "recipes" / "minilm-wnut17.yaml"))
    parser.add_argument("--out", default=None)
    parser.add_argument("--iterations", type=int, default=400)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--name", default="ner_minilm_wnut17")
    args = parser.parse_args()

    recipe = recipe_module.load(args.recipe)
    out = Path(args.out or ROOT / "runs" / recipe.name)
    source, task = pipeline.source_and_task(recipe)
    dataset = task.load_data(recipe.data)
    variants, _ = pipeline.build_variants(recipe, out, dataset, source, task)
    isa = "avx512_vnni" if cpu_info().isa == "avx512_vnni" else "avx2"
    optimum_dir = compare_optimum.build_optimum_variant(
        variants["pytorch-fp32"].path, out / "peers", "ORTModelForTokenClassification", isa
    )
    candidates = pipeline.candidates_of(variants)
    candidates += [
        Candidate("optimum-int8 (ort session)", optimum_dir, "onnx"),
        Candidate("optimum-int8 (ORTModel)", optimum_dir, "benchmarks.optimum_runner:OptimumTokenClassification"),
    ]
    profiles = [Profile(name="edge-1t", threads=1, seq_lengths=["real"], throughput_batch=None)]
    settings = BenchSettings(
        profiles=profiles, iterations=args.iterations, rounds=args.rounds, reference="pytorch-fp32"
    )
    model_labels = variants["pytorch-fp32"].labels()
    results = measure(candidates, task.eval_set(dataset, model_labels), settings, out / "ner")
    results["run"] = {"recipe": recipe.name + " vs peers", "model": recipe.model, "data": dataset.describe()}
    write_json_atomic(out / "ner" / "results.json", results)
    markdown.write(results, out / "ner" / "report.md")

    pruned = [c.name for c in candidates if c.name.startswith("onnx-int8-pruned")]
    unpruned = [c.name for c in candidates if c.name.startswith("onnx-int8") and c.name not in pruned]
    summary = summarize(results, pruned, unpruned)
    print_summary(summary)
    record.save(args.name, summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
