"""edgenlp against Optimum's best CPU variant, side by side in one run.

    python benchmarks/compare_optimum.py [--recipe recipes/sst2-minilm.yaml] [--out runs/minilm-sst2]
    python benchmarks/compare_optimum.py --recipe recipes/sst2-minilm-pruned.yaml \
        --model runs/minilm-sst2/variants/pytorch-fp32 --name compare_optimum_pruned

Builds (or reuses) the recipe's variants, then Optimum's own ONNX export of the same fine-tuned
checkpoint quantised by ORTQuantizer with the `avx512_vnni` dynamic preset (per_channel=False, as
in Optimum's documentation). All of them are measured by one harness run (fresh process each,
interleaved rounds): Optimum's INT8 file both in a plain onnxruntime session and through its
ORTModel wrapper, which is how Optimum users run it. Prints accuracy, p50 latency at batch 1
(real lengths and 128 tokens, 1 and 2 threads), size and peak memory, and edgenlp's speed-up over
Optimum with a 95% interval paired by round; saves the summary to
`benchmarks/results/compare_optimum.json`.

With a pruning recipe, every `onnx-int8-pruned-*` variant joins the same run, and the summary
adds, per pruned variant: its p50 against the unpruned INT8 and against Optimum (paired by round),
accuracy against the FP32 reference and Optimum, the non-embedding parameters kept, and the
validation accuracy right after pruning and after recovery. `--model` starts from an already
fine-tuned checkpoint (the recipe's `finetune` variant then uses it as it is).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))

import record  # noqa: E402  (benchmarks/record.py)

from edgenlp import data as data_module  # noqa: E402
from edgenlp import pipeline  # noqa: E402
from edgenlp import recipe as recipe_module
from edgenlp.artifact import copy_support_files  # noqa: E402
from edgenlp.bench import stats  # noqa: E402
from edgenlp.bench.harness import BenchSettings, Candidate, measure  # noqa: E402
from edgenlp.fsio import write_json_atomic  # noqa: E402
from edgenlp.report import markdown  # noqa: E402
from edgenlp.tasks.classification import EvalSet  # noqa: E402


def build_optimum_variant(
    checkpoint: Path, out: Path, model_class: str = "ORTModelForSequenceClassification", isa: str = "avx512_vnni"
) -> Path:
    """Optimum's documented CPU recipe: ORTModel export (`model_class`), then ORTQuantizer's dynamic preset for `isa`."""
    target = out / f"optimum-int8-{isa}"
    if (target / "model_quantized.onnx").exists():
        return target
    import optimum.onnxruntime
    from optimum.onnxruntime import ORTQuantizer
    from optimum.onnxruntime.configuration import AutoQuantizationConfig

    export_dir = out / "optimum-onnx-fp32"
    shutil.rmtree(export_dir, ignore_errors=True)
    exported = getattr(optimum.onnxruntime, model_class).from_pretrained(str(checkpoint), export=True)
    exported.save_pretrained(str(export_dir))
    copy_support_files(checkpoint, export_dir)
    quantizer = ORTQuantizer.from_pretrained(str(export_dir))
    config = getattr(AutoQuantizationConfig, isa)(is_static=False, per_channel=False)
    partial = out / ".optimum-int8.partial"
    shutil.rmtree(partial, ignore_errors=True)
    quantizer.quantize(save_dir=str(partial), quantization_config=config)
    copy_support_files(checkpoint, partial)
    partial.rename(target)
    return target


def summarize(results: dict, ours: str, peer: str) -> dict:
    """The figures the README quotes: per variant, and edgenlp against the peer with paired intervals."""
    by_name = {v["name"]: v for v in results["variants"]}
    variants = {}
    for name, v in by_name.items():
        variants[name] = {
            "accuracy_pct": round(100 * v["metrics"]["accuracy"], 2),
            "size_mb": round(v["size_bytes"] / 1e6, 2),
            "peak_rss_mib": {p: round(prof["peak_rss_bytes"] / 2**20) for p, prof in v["profiles"].items()},
            "p50_ms": {
                f"{p}/{s}": [round(x["p50"], 3), [round(c, 3) for c in x["p50_ci"]]]
                for p, shapes in v["latency_ms"].items()
                for s, x in shapes.items()
            },
            "speedup_vs_reference": {
                k: [round(r, 3), [round(c, 3) for c in v["ratios"]["speedup_p50_ci"][k]]]
                for k, r in v["ratios"]["speedup_p50"].items()
            },
        }
    mine, theirs = by_name[ours], by_name[peer]
    versus = {}
    for key in variants[ours]["p50_ms"]:
        profile, shape = key.split("/")
        one = stats.speedup(theirs["latency_samples_ms"][profile][shape], mine["latency_samples_ms"][profile][shape])
        versus[key] = {"edgenlp_speedup_over_peer": round(one["ratio"], 3), "ci": [round(c, 3) for c in one["ci"]]}
    return {
        "reference": results["reference"],
        "eval": results["eval"]["name"],
        "examples": results["eval"]["examples"],
        "rounds": results["settings"]["rounds"],
        "iterations": results["settings"]["iterations"],
        "variants": variants,
        "edgenlp": ours,
        "peer": peer,
        "edgenlp_vs_peer": versus,
        "accuracy_delta_vs_peer_points": round(100 * (mine["metrics"]["accuracy"] - theirs["metrics"]["accuracy"]), 2),
        "size_ratio_vs_onnx_fp32": round(mine["size_bytes"] / by_name["onnx-fp32"]["size_bytes"], 4),
    }


def lineage(variants: dict, name: str) -> list:
    """The artifacts from `name` back to the recipe's source, by parent name."""
    chain = []
    art = variants.get(name)
    while art is not None:
        chain.append(art)
        art = variants.get((art.meta.get("parent") or {}).get("name"))
    return chain


def summarize_pruning(results: dict, variants: dict, unpruned: str, peer: str, training: dict) -> dict:
    """Each pruned INT8 variant against the unpruned INT8 and the peer, with its shapes and recovery."""
    by_name = {v["name"]: v for v in results["variants"]}
    reference = by_name[results["reference"]]
    out = {}
    for name, v in by_name.items():
        chain = lineage(variants, name)
        pruned = next((a for a in chain if a.meta.get("stage") == "prune"), None)
        if pruned is None or v["precision"] != "int8":
            continue
        recovered = next((a for a in chain if a.meta.get("stage") == "distill"), None)
        log = training.get(recovered.name) if recovered else None
        meta = pruned.meta["metadata"]
        row = {
            "ratio": meta["ratio"],
            "mode": meta["mode"],
            "importance": meta["importance"],
            "layer_heads": meta["layer_heads"],
            "layer_intermediate_sizes": meta.get("layer_intermediate_sizes"),
            "non_embedding_parameters": meta["parameters"]["after"]["non_embedding_parameters"],
            "non_embedding_cut_pct": round(100 * (1 - meta["parameters"]["non_embedding_kept"]), 1),
            "accuracy_pct": round(100 * v["metrics"]["accuracy"], 2),
            "accuracy_delta_vs_reference_points": round(
                100 * (v["metrics"]["accuracy"] - reference["metrics"]["accuracy"]), 2
            ),
            "accuracy_delta_vs_peer_points": round(
                100 * (v["metrics"]["accuracy"] - by_name[peer]["metrics"]["accuracy"]), 2
            ),
            "size_mb": round(v["size_bytes"] / 1e6, 2),
            "validation_accuracy": {
                "after_pruning": log["evals"][0]["accuracy"],
                "after_recovery": log["best_score"],
                "recovery_steps": log["total_steps"],
                "recovery_seconds": log["seconds"],
            }
            if log
            else None,
            "p50_vs_unpruned_int8": {},
            "speedup_vs_peer": {},
        }
        for profile, shapes in v["latency_samples_ms"].items():
            for shape, samples in shapes.items():
                mine = stats.speedup(by_name[unpruned]["latency_samples_ms"][profile][shape], samples)
                row["p50_vs_unpruned_int8"][f"{profile}/{shape}"] = [
                    round(1 / mine["ratio"], 3),
                    [round(1 / c, 3) for c in reversed(mine["ci"])],
                ]
                theirs = stats.speedup(by_name[peer]["latency_samples_ms"][profile][shape], samples)
                row["speedup_vs_peer"][f"{profile}/{shape}"] = [
                    round(theirs["ratio"], 3),
                    [round(c, 3) for c in theirs["ci"]],
                ]
        out[name] = row
    return out


def print_pruning(pruning: dict) -> None:
    print(
        "\npruned + recovered + INT8 (targets: p50 <= 0.7x unpruned INT8, accuracy within 1.0 point of FP32, "
        ">= 1.4x Optimum at <= 1.0 point below it, non-embedding parameters cut >= 35%)"
    )
    for name, r in pruning.items():
        val = r["validation_accuracy"] or {}
        print(
            f"  {name}: heads {r['layer_heads']}, non-embedding parameters -{r['non_embedding_cut_pct']}%, "
            f"accuracy {r['accuracy_pct']:.2f}% ({r['accuracy_delta_vs_reference_points']:+.2f} vs FP32, "
            f"{r['accuracy_delta_vs_peer_points']:+.2f} vs Optimum), {r['size_mb']:.1f} MB; validation accuracy "
            f"{100 * val.get('after_pruning', float('nan')):.1f}% after pruning -> {100 * val.get('after_recovery', float('nan')):.1f}% after recovery"
        )
        for key, (ratio, ci) in r["p50_vs_unpruned_int8"].items():
            peer, peer_ci = r["speedup_vs_peer"][key]
            print(
                f"    {key:<18} p50 {ratio:.3f}x unpruned INT8 [{ci[0]:.3f}-{ci[1]:.3f}], "
                f"{peer:.2f}x faster than Optimum [{peer_ci[0]:.2f}-{peer_ci[1]:.2f}]"
            )


def print_summary(summary: dict) -> None:
    names = list(summary["variants"])
    width = max(len(n) for n in names)
    print("\n" + " " * 26 + "  ".join(n.rjust(width) for n in names))
    rows = [("accuracy %", lambda v: f"{v['accuracy_pct']:.2f}"), ("size MB", lambda v: f"{v['size_mb']:.2f}")]
    rows += [
        (f"p50 ms {k}", lambda v, k=k: f"{v['p50_ms'][k][0]:.2f}") for k in summary["variants"][names[0]]["p50_ms"]
    ]
    rows += [
        (f"peak RSS MiB {p}", lambda v, p=p: f"{v['peak_rss_mib'][p]}")
        for p in summary["variants"][names[0]]["peak_rss_mib"]
    ]
    for label, get in rows:
        print(f"{label:<26}" + "  ".join(get(summary["variants"][n]).rjust(width) for n in names))
    print(f"\n{summary['edgenlp']} against {summary['peer']} (reference p50 / variant p50, rounds paired):")
    for key, one in summary["edgenlp_vs_peer"].items():
        lo, hi = one["ci"]
        verdict = "edgenlp faster" if lo > 1 else ("edgenlp slower" if hi < 1 else "no significant difference")
        print(f"  {key:<18} {one['edgenlp_speedup_over_peer']:.3f}x [95% CI {lo:.3f}-{hi:.3f}]: {verdict}")
    ours = summary["variants"][summary["edgenlp"]]["speedup_vs_reference"]
    print(
        f"{summary['edgenlp']} against {summary['reference']}: "
        + ", ".join(f"{k} {v[0]:.2f}x [{v[1][0]:.2f}-{v[1][1]:.2f}]" for k, v in ours.items())
    )
    print(
        f"accuracy {summary['accuracy_delta_vs_peer_points']:+.2f} points against the peer; size "
        f"{100 * summary['size_ratio_vs_onnx_fp32']:.1f}% of onnx-fp32"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default=str(ROOT / "recipes" / "sst2-minilm.yaml"))
    parser.add_argument("--out", default=None)
    parser.add_argument("--iterations", type=int, default=320)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument(
        "--model", default=None, help="start from this fine-tuned checkpoint instead of the recipe's model"
    )
    parser.add_argument("--name", default="compare_optimum", help="results file name under benchmarks/results/")
    args = parser.parse_args()

    recipe = recipe_module.load(args.recipe)
    if args.model:
        recipe = recipe.model_copy(update={"model": str(Path(args.model).resolve())})
    out = Path(args.out or ROOT / "runs" / recipe.name)
    dataset = data_module.load(recipe.data)
    variants, _ = pipeline.build_variants(recipe, out, dataset, *pipeline.source_and_task(recipe))
    optimum_dir = build_optimum_variant(variants["pytorch-fp32"].path, out / "peers")
    dataset = dataset.aligned_to(pipeline.model_labels([variants["pytorch-fp32"].path]))

    ours = "onnx-int8-dynamic"
    pruned = [n for n in variants if n.startswith("onnx-int8-pruned-")]
    candidates = [c for c in pipeline.candidates_of(variants) if c.name in ("pytorch-fp32", "onnx-fp32", ours, *pruned)]
    candidates += [
        Candidate("optimum-int8 (ort session)", optimum_dir, "onnx"),
        Candidate("optimum-int8 (ORTModel)", optimum_dir, "benchmarks.optimum_runner:OptimumRunner"),
    ]
    settings = BenchSettings(
        profiles=["edge-1t", "laptop-2t"], iterations=args.iterations, rounds=args.rounds, reference="pytorch-fp32"
    )
    results = measure(
        candidates,
        EvalSet(dataset.test.texts, dataset.test.labels, dataset.labels, name=f"{dataset.name}/test"),
        settings,
        out / "compare-optimum",
    )
    results["run"] = {"recipe": recipe.name + " vs optimum", "model": recipe.model, "data": dataset.describe()}
    write_json_atomic(out / "compare-optimum" / "results.json", results)
    markdown.write(results, out / "compare-optimum" / "report.md")

    summary = summarize(results, ours, peer="optimum-int8 (ort session)")
    print_summary(summary)
    if pruned:
        summary["pruning"] = summarize_pruning(
            results, variants, ours, "optimum-int8 (ort session)", pipeline.training_logs(variants)
        )
        print_pruning(summary["pruning"])
    record.save(args.name, summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
