"""Which engine is fastest on this CPU: onnxruntime, OpenVINO and CTranslate2 variants in one run.

    python benchmarks/engines.py --recipe recipes/engines.yaml \
        --model runs/minilm-tweets/variants/pytorch-fp32 --out runs/minilm-tweets --name engines_tweets
    python benchmarks/engines.py --recipe recipes/sst2-engines.yaml \
        --model runs/minilm-sst2/variants/pytorch-fp32 --out runs/minilm-sst2-pruned --name engines_sst2

Builds (or reuses) the recipe's variants, measures all of them in one harness run (each in its own
fresh process, interleaved rounds, every profile), and lets edgenlp's selection (at most 1.0 accuracy
point below the FP32 reference) pick a variant per profile and input length. For each target it
prints every engine's best unpruned variant within the same budget and checks the issue's targets:
the selected variant at least as fast as the fastest engine's best, at no more than 1.0 point lower
accuracy; with a pruned variant in the run, at least 1.4x faster than it (rounds paired, 95% CI), or
`--pruned-target`, and the smallest bundle among the variants that reach that factor within the
budget (issue 27: at most 8 MB).
The measurements and reports go to `<out>/engines/`; the summary to `benchmarks/results/<name>.json`.
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

from edgenlp import pipeline  # noqa: E402
from edgenlp import recipe as recipe_module
from edgenlp.bench import stats  # noqa: E402
from edgenlp.bench.harness import measure  # noqa: E402
from edgenlp.bench.selection import engine_of  # noqa: E402

ENGINES = ("onnx", "openvino", "ctranslate2")
PRUNED_SPEEDUP_TARGET = 1.4
ACCURACY_SLACK_POINTS = 1.0
BUNDLE_MB_TARGET = 8.0


def shape_of(metric: str) -> str:
    return "real" if metric == "p50_ms" else metric.removeprefix("p50_ms_")


def variant_rows(results: dict) -> dict:
    ref = next(v for v in results["variants"] if v["name"] == results["reference"])
    rows = {}
    for v in results["variants"]:
        rows[v["name"]] = {
            "engine": engine_of(v),
            "precision": v["precision"],
            "pruned": bool(v.get("pruned_by")),
            "accuracy_pct": round(100 * v["metrics"]["accuracy"], 2),
            "accuracy_delta_points": round(100 * (v["metrics"]["accuracy"] - ref["metrics"]["accuracy"]), 2),
            "label_agreement_with_reference_pct": None
            if v["metrics"].get("label_agreement_with_reference") is None
            else round(100 * v["metrics"]["label_agreement_with_reference"], 2),
            "size_mb": round(v["size_bytes"] / 1e6, 2),
            "peak_rss_mib": {p: round(prof["peak_rss_bytes"] / 2**20) for p, prof in v["profiles"].items()},
            "p50_ms": {
                f"{p}/{s}": [round(x["p50"], 3), [round(c, 3) for c in x["p50_ci"]]]
                for p, shapes in v["latency_ms"].items()
                for s, x in shapes.items()
            },
        }
    return rows


def bundle_mb(variant: Path, folder: Path) -> float | None:
    """Megabytes of the variant's bundle (every file, the manifest included)."""
    import shutil

    from edgenlp.bundle import build
    from edgenlp.errors import EdgeNLPError

    shutil.rmtree(folder, ignore_errors=True)
    try:
        built = build(variant, folder)
    except EdgeNLPError as exc:
        print(f"  no bundle of {variant.name}: {exc}")
        return None
    return round(sum(p.stat().st_size for p in Path(built).rglob("*") if p.is_file()) / 1e6, 2)


def smallest_fast_bundle(results: dict, rows: dict, key: str, fastest: str, factor: float) -> dict | None:
    """Of the variants within the accuracy budget that reach `factor` x the fastest engine's best
    unpruned variant at `key` (profile/shape), the one with the smallest bundle."""
    by_name = {v["name"]: v for v in results["variants"]}
    profile, shape = key.split("/")
    fast = []
    for name, row in rows.items():
        if row.get("bundle_mb") is None or row["accuracy_delta_points"] < -ACCURACY_SLACK_POINTS:
            continue
        ratio = stats.speedup(
            by_name[fastest]["latency_samples_ms"][profile][shape], by_name[name]["latency_samples_ms"][profile][shape]
        )
        if ratio["ratio"] >= factor:
            fast.append((row["bundle_mb"], name, round(ratio["ratio"], 3), [round(c, 3) for c in ratio["ci"]]))
    if not fast:
        return None
    mb, name, ratio, ci = min(fast)
    return {
        "variant": name,
        "bundle_mb": mb,
        "speedup": [ratio, ci],
        "accuracy_delta_points": rows[name]["accuracy_delta_points"],
        "target_mb": BUNDLE_MB_TARGET,
        "met": mb <= BUNDLE_MB_TARGET,
    }


def target_rows(results: dict, rows: dict, pruned_target: float = PRUNED_SPEEDUP_TARGET) -> list[dict]:
    by_name = {v["name"]: v for v in results["variants"]}
    out = []
    for t in results["selection"]["by_target"]:
        profile, shape = t["profile"], shape_of(t["metric"])
        key = f"{profile}/{shape}"
        within = [n for n, r in rows.items() if r["accuracy_delta_points"] >= -ACCURACY_SLACK_POINTS]
        best = {}
        for engine in ENGINES:
            mine = [n for n in within if rows[n]["engine"] == engine and not rows[n]["pruned"]]
            if mine:
                name = min(mine, key=lambda n: rows[n]["p50_ms"][key][0])
                best[engine] = {
                    "variant": name,
                    "p50_ms": rows[name]["p50_ms"][key][0],
                    "accuracy_pct": rows[name]["accuracy_pct"],
                }
        fastest_engine = min(best, key=lambda e: best[e]["p50_ms"])
        fastest = best[fastest_engine]["variant"]
        selected = t["selected"]
        ratio = stats.speedup(
            by_name[fastest]["latency_samples_ms"][profile][shape],
            by_name[selected]["latency_samples_ms"][profile][shape],
        )
        speedup = [round(ratio["ratio"], 3), [round(c, 3) for c in ratio["ci"]]]
        as_fast = rows[selected]["p50_ms"][key][0] <= best[fastest_engine]["p50_ms"]
        accurate = rows[selected]["accuracy_pct"] >= best[fastest_engine]["accuracy_pct"] - ACCURACY_SLACK_POINTS
        row = {
            "profile": profile,
            "target": t["target"],
            "selected": selected,
            "selected_engine": t["engine"],
            "selected_pruned": rows[selected]["pruned"],
            "selected_p50_ms": rows[selected]["p50_ms"][key][0],
            "selected_accuracy_pct": rows[selected]["accuracy_pct"],
            "selected_bundle_mb": rows[selected].get("bundle_mb"),
            "best_unpruned_by_engine": best,
            "fastest_engine": fastest_engine,
            "speedup_over_fastest_engine": speedup,
            "target_as_fast_within_1_point": as_fast and accurate,
        }
        if any(r["pruned"] for r in rows.values()):
            row["target_pruned_1_4x"] = speedup[0] >= PRUNED_SPEEDUP_TARGET
            row["pruned_target"] = {"factor": pruned_target, "met": speedup[0] >= pruned_target}
            row["smallest_bundle_at_target"] = smallest_fast_bundle(results, rows, key, fastest, pruned_target)
        out.append(row)
    return out


def print_summary(summary: dict) -> None:
    rows = summary["variants"]
    keys = list(next(iter(rows.values()))["p50_ms"])
    print(f"\n{'variant':<28}{'engine':<12}{'acc %':>7}{'agree %':>9}{'MB':>7}" + "".join(f"{k:>22}" for k in keys))
    for name, r in rows.items():
        agree = (
            "-" if r["label_agreement_with_reference_pct"] is None else f"{r['label_agreement_with_reference_pct']:.1f}"
        )
        print(
            f"{name:<28}{r['engine']:<12}{r['accuracy_pct']:>7.2f}{agree:>9}{r['size_mb']:>7.1f}"
            + "".join(f"{r['p50_ms'][k][0]:>22.2f}" for k in keys)
        )
    print("\nper target (selection: fastest within 1.0 accuracy point of the FP32 reference):")
    for t in summary["targets"]:
        best = ", ".join(f"{e} {b['variant']} {b['p50_ms']:.2f} ms" for e, b in t["best_unpruned_by_engine"].items())
        s, (lo, hi) = t["speedup_over_fastest_engine"][0], t["speedup_over_fastest_engine"][1]
        verdict = "met" if t["target_as_fast_within_1_point"] else "MISSED"
        pruned = ""
        if "pruned_target" in t:
            goal = t["pruned_target"]
            pruned = f"; pruned {goal['factor']:g}x target {'met' if goal['met'] else 'MISSED'}"
        if t.get("selected_bundle_mb") is not None:
            pruned += f"; bundle {t['selected_bundle_mb']:.1f} MB"
        small = t.get("smallest_bundle_at_target")
        if small:
            pruned += (
                f"; smallest bundle at the target within the budget: {small['variant']} {small['bundle_mb']:.1f} MB "
                f"({small['speedup'][0]:.2f}x, {small['accuracy_delta_points']:+.2f} points; {small['target_mb']:g} MB "
                f"target {'met' if small['met'] else 'MISSED'})"
            )
        print(
            f"  {t['profile']}/{t['target']}: ship {t['selected']} ({t['selected_engine']}) {t['selected_p50_ms']:.2f} ms, "
            f"{s:.2f}x [{lo:.2f}-{hi:.2f}] the fastest engine's best ({t['fastest_engine']}); best unpruned: {best}; "
            f"as-fast target {verdict}{pruned}"
        )
    for name, why in summary["skipped"].items():
        print(f"  not built: {name}: {why}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default=str(ROOT / "recipes" / "engines.yaml"))
    parser.add_argument("--model", default=None, help="start from this fine-tuned checkpoint")
    parser.add_argument("--out", default=None)
    parser.add_argument("--name", default="engines")
    parser.add_argument("--iterations", type=int, default=None)
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument(
        "--pruned-target", type=float, default=PRUNED_SPEEDUP_TARGET, help="speed-up a pruned selection must reach"
    )
    args = parser.parse_args()

    recipe = recipe_module.load(args.recipe)
    if args.model:
        recipe = recipe.model_copy(update={"model": str(Path(args.model).resolve())})
    bench = recipe.bench.model_copy(
        update={k: v for k, v in (("iterations", args.iterations), ("rounds", args.rounds)) if v is not None}
    )
    out = Path(args.out or ROOT / "runs" / recipe.name)
    source, task = pipeline.source_and_task(recipe)
    dataset = task.load_data(recipe.data)
    skipped: dict[str, str] = {}
    variants, _ = pipeline.build_variants(recipe, out, dataset, source, task, skipped=skipped)
    # the training intermediates of pruning (pruned, recovered: PyTorch) are measured as their exports
    candidates = [
        c for c in pipeline.candidates_of(variants) if c.info["format"] != "pytorch" or c.name == bench.reference
    ]
    eval_set = task.eval_set(dataset, pipeline.model_labels([c.path for c in candidates]))
    work = out / "engines"
    results = measure(candidates, eval_set, bench, work)
    results["run"] = {"recipe": recipe.name, "model": recipe.model, "task": task.NAME, "data": dataset.describe()}
    results["skipped"] = skipped
    pipeline.publish(results, work, recipe.selection)

    rows = variant_rows(results)
    for candidate in candidates:  # what an app would ship: the bundle's bytes on disk
        if candidate.info["format"] in ("onnx", "openvino"):
            rows[candidate.name]["bundle_mb"] = bundle_mb(candidate.path, work / "bundles" / candidate.name)
    summary = {
        "reference": results["reference"],
        "eval": results["eval"]["name"],
        "examples": results["eval"]["examples"],
        "rounds": results["settings"]["rounds"],
        "iterations": results["settings"]["iterations"],
        "variants": rows,
        "targets": target_rows(results, rows, args.pruned_target),
        "skipped": skipped,
        "engine_versions": {
            k: v
            for k, v in results["environment"]["versions"].items()
            if k in ("onnxruntime", "openvino", "nncf", "ctranslate2")
        },
    }
    print_summary(summary)
    record.save(args.name, summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
