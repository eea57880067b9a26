"""Static INT8 with calibration and the accuracy-budget search, measured against their targets.

    python benchmarks/static_int8.py [--minilm runs/minilm-sst2/variants/pytorch-fp32] [--out runs/minilm-sst2-pruned]
                                     [--gpt2 runs/gpt2-bbc/variants/pytorch-fp32] [--gpt2-out runs/gpt2-bbc-static]

1. MiniLM fine-tuned on SST-2 (872 GLUE validation sentences held out): `edgenlp optimize` on
   `recipes/sst2-minilm-search.yaml` with `--max-accuracy-drop 1.0` (the recipe sets it): static INT8
   with MinMax, Entropy and Percentile on 512 training sentences (no node list written by hand),
   the dynamic INT8 variants, the pruned chain, and the search's shortlist, all measured by one
   harness run (1 thread, batch 1, real lengths and 128 tokens). Reports each static variant's
   accuracy drop against the FP32 reference and its calibration time and peak memory, the
   selected variant's held-out drop and its p50 against the fastest dynamic INT8 variant within
   the budget (paired by round, 95% interval), and every trial the search made.
2. The GPT-2 trained by `recipes/gpt2-bbc.yaml`: static INT8 with each calibrator on 512 windows
   of BBC training text, validated against its FP32 parent like every variant, and its perplexity
   on the BBC test split (first 8,192 tokens) next to FP32 and dynamic INT8.

Saves `benchmarks/results/static_int8.json`.
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

import record  # noqa: E402  (benchmarks/record.py)

from edgenlp import pipeline, tasks  # noqa: E402
from edgenlp import recipe as recipe_module
from edgenlp.bench import selection, stats  # noqa: E402
from edgenlp.fsio import FolderLock  # noqa: E402
from edgenlp.search import budget as search  # noqa: E402

BUDGET = 1.0
CALIBRATORS = ("minmax", "entropy", "percentile")


def _variant(results: dict, name: str) -> dict:
    return next(v for v in results["variants"] if v["name"] == name)


def _p50(results: dict, v: dict, shape: str) -> float:
    return v["latency_ms"][results["profiles"][0]["name"]][shape]["p50"]


def _paired(results: dict, base: dict, other: dict, shape: str) -> dict:
    """base p50 / other p50 with a 95% interval, rounds resampled in pairs (> 1: `other` is faster)."""
    profile = results["profiles"][0]["name"]
    one = stats.speedup(
        base["latency_samples_ms"][profile][shape],
        other["latency_samples_ms"][profile][shape],
        results["settings"].get("bootstrap", 2000),
    )
    return {"ratio": one["ratio"], "ci": one["ci"]}


def minilm(model: Path, out: Path) -> dict:
    recipe = recipe_module.load(ROOT / "recipes" / "sst2-minilm-search.yaml")
    recipe = recipe_module.parse({**recipe.model_dump(mode="json"), "model": str(model)}, "recipe")
    assert recipe.selection.max_accuracy_drop == BUDGET
    try:
        results = pipeline.run(recipe, out).results
        verdict = None
    except search.BudgetNotMet as exc:
        import json

        results, verdict = json.loads((out / "results.json").read_text()), str(exc)
    drop = lambda v: selection.metric(results, v, "accuracy_drop")  # noqa: E731
    static = {}
    for cal in CALIBRATORS:
        v = _variant(results, f"onnx-int8-static-{cal}")
        static[cal] = {
            "accuracy": 100 * v["metrics"]["accuracy"],
            "accuracy_drop": drop(v),
            "label_agreement_with_fp32": v["metrics"].get("label_agreement_with_reference"),
            "p50_ms_real": _p50(results, v, "real"),
            "p50_ms_len128": _p50(results, v, "len128"),
            "size_mb": v["size_bytes"] / 1e6,
            "calibration": v["metadata"]["calibration"],
            "mask_nodes_in_float": len(v["metadata"]["mask_nodes_in_float"]),
            "within_budget": drop(v) <= BUDGET,
        }
    dynamic = [
        v for v in results["variants"] if (v.get("metadata") or {}).get("mode") == "dynamic" and drop(v) <= BUDGET
    ]
    fastest_dynamic = min(dynamic, key=lambda v: _p50(results, v, "real")) if dynamic else None
    sel = results["selection"]
    chosen = _variant(results, sel["selected"]) if sel.get("selected") else None
    found = results["search"]
    summary = {
        "reference": {
            "name": results["reference"],
            "accuracy": 100 * _variant(results, results["reference"])["metrics"]["accuracy"],
            "p50_ms_real": _p50(results, _variant(results, results["reference"]), "real"),
            "p50_ms_len128": _p50(results, _variant(results, results["reference"]), "len128"),
        },
        "eval": results["eval"]["name"],
        "examples": results["eval"]["examples"],
        "profile": results["profiles"][0],
        "static": static,
        "search": {
            "budget_points": BUDGET,
            "tuning": found["tuning"],
            "reference_tuning_accuracy": found["reference_quality"],
            "bases": found["bases"],
            "trials": len(found["trials"]),
            "shortlist": found["shortlist"],
            "statuses": {
                s: sum(t["status"] == s for t in found["trials"]) for s in {t["status"] for t in found["trials"]}
            },
            "sensitivity_nodes": {
                b: {m: len(e["rows"]) for m, e in modes.items()} for b, modes in found["sensitivity"].items()
            },
            "top_sensitive": {
                b: {m: [r["node"] for r in e["rows"][:5]] for m, e in modes.items()}
                for b, modes in found["sensitivity"].items()
            },
            "verdict": verdict,
        },
        "selected": None,
    }
    if chosen:
        trial = next(t for t in found["trials"] if t.get("variant") == chosen["name"])
        summary["selected"] = {
            "name": chosen["name"],
            "setting": trial["label"],
            "nodes_in_float": len(trial["float_nodes"]),
            "tuning_drop": trial["tuning_drop"],
            "test_drop": drop(chosen),
            "test_accuracy": 100 * chosen["metrics"]["accuracy"],
            "p50_ms_real": _p50(results, chosen, "real"),
            "p50_ms_len128": _p50(results, chosen, "len128"),
            "size_mb": chosen["size_bytes"] / 1e6,
            "within_budget_on_test": drop(chosen) <= BUDGET,
        }
    if fastest_dynamic and chosen:
        summary["fastest_dynamic_within_budget"] = {
            "name": fastest_dynamic["name"],
            "test_drop": drop(fastest_dynamic),
            "p50_ms_real": _p50(results, fastest_dynamic, "real"),
            "p50_ms_len128": _p50(results, fastest_dynamic, "len128"),
        }
        summary["selected_vs_fastest_dynamic"] = {
            shape: _paired(results, fastest_dynamic, chosen, shape) for shape in ("real", "len128")
        }
    summary["variants"] = [
        {
            "name": v["name"],
            "accuracy": 100 * v["metrics"]["accuracy"],
            "accuracy_drop": drop(v),
            "p50_ms_real": _p50(results, v, "real"),
            "p50_ms_len128": _p50(results, v, "len128"),
            "size_mb": round(v["size_bytes"] / 1e6, 1),
        }
        for v in results["variants"]
    ]
    return summary


def gpt2(model: Path, out: Path) -> dict:
    spec = {
        "name": "gpt2-bbc-static",
        "model": str(model),
        "task": "text-generation",
        "data": {"source": "bbc-news"},
        "sweep": {"calibrator": list(CALIBRATORS)},
        "variants": [
            {"name": "onnx-fp32", "stage": "export"},
            {"name": "onnx-int8-dynamic", "stage": "quantize", "parent": "onnx-fp32"},
            {
                "name": "onnx-int8-static-{calibrator}",
                "stage": "quantize-static",
                "parent": "onnx-fp32",
                "config": {"calibrator": "{calibrator}", "calibration_samples": 512},
            },
        ],
        "validation": {"examples": 8, "atol": 1e-3, "min_label_agreement": 0.9},
    }
    recipe = recipe_module.parse(spec, "gpt2 static recipe")
    task = tasks.get("text-generation")
    dataset = task.load_data(recipe.data)
    with FolderLock(out):
        variants, _ = pipeline.build_variants(recipe, out, dataset, pipeline.source_and_task(recipe)[0], task)
    test = "\n\n".join(dataset.test)
    perplexity = {name: task.tuning_quality(art.path, test, threads=2) for name, art in variants.items()}
    rows = {}
    for name, art in variants.items():
        meta = art.meta.get("metadata", {})
        rows[name] = {
            "perplexity_bbc_test_8192": perplexity[name],
            "increase_pct": 100 * (perplexity[name] / perplexity["onnx-fp32"] - 1),
            "validation": {k: art.meta.get("validation", {}).get(k) for k in ("passed", "summary", "check")},
            "calibration": meta.get("calibration"),
            "size_mb": art.size_bytes / 1e6,
        }
    return {"model": str(model), "variants": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minilm", type=Path, default=ROOT / "runs/minilm-sst2/variants/pytorch-fp32")
    parser.add_argument("--out", type=Path, default=ROOT / "runs/minilm-sst2-pruned")
    parser.add_argument("--gpt2", type=Path, default=ROOT / "runs/gpt2-bbc/variants/pytorch-fp32")
    parser.add_argument("--gpt2-out", type=Path, default=ROOT / "runs/gpt2-bbc-static")
    args = parser.parse_args()
    summary = {"minilm_sst2": minilm(args.minilm, args.out), "gpt2_bbc": gpt2(args.gpt2, args.gpt2_out)}
    m = summary["minilm_sst2"]
    for cal, s in m["static"].items():
        c = s["calibration"]
        print(
            f"static {cal:<10} drop {s['accuracy_drop']:+.2f} points, p50 {s['p50_ms_real']:.2f}/{s['p50_ms_len128']:.2f} ms, "
            f"calibration {c['samples']} samples {c['seconds']} s, peak {c['peak_rss_mib']} MiB"
        )
    if m["selected"]:
        sel = m["selected"]
        print(
            f"selected {sel['name']}: tuning drop {sel['tuning_drop']:+.2f}, test drop {sel['test_drop']:+.2f}, "
            f"p50 {sel['p50_ms_real']:.2f}/{sel['p50_ms_len128']:.2f} ms"
        )
    if "selected_vs_fastest_dynamic" in m:
        for shape, r in m["selected_vs_fastest_dynamic"].items():
            print(
                f"  vs {m['fastest_dynamic_within_budget']['name']} at {shape}: {r['ratio']:.2f}x "
                f"[{r['ci'][0]:.2f}-{r['ci'][1]:.2f}] (> 1: the selected is faster)"
            )
    for name, row in summary["gpt2_bbc"]["variants"].items():
        print(f"gpt2 {name:<28} perplexity {row['perplexity_bbc_test_8192']:.2f} ({row['increase_pct']:+.2f}%)")
    record.save("static_int8", summary)


if __name__ == "__main__":
    main()
