"""One encoder task's recipe against Optimum's INT8 in one harness run: what `ner.py` and `qa.py` share.

Builds (or reuses) the recipe's variants, then Optimum's own export of the fine-tuned checkpoint for
the task, quantised by ORTQuantizer with its dynamic preset for this CPU (`avx512_vnni` or `avx2`,
per_channel=False as in Optimum's documentation). One harness run (fresh process each, interleaved
rounds, 1 thread) evaluates every test example one at a time, then times one example at real lengths
(and at any fixed lengths the task names). Optimum's file is timed in a plain onnxruntime session and
through its ORTModel wrapper. Prints and saves (`benchmarks/results/<name>.json`) the issue's checks:
- the fastest unpruned INT8 variant within 1.0 point of FP32 on the task's metric, and whether it is at
  least as fast as Optimum's INT8 (speed-up with a 95% interval paired by round);
- each pruned + distilled INT8 variant against that INT8 variant (>= 1.4x at <= 1.0 point below FP32).
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))

import compare_optimum  # noqa: E402  (benchmarks/compare_optimum.py)
import record  # noqa: E402  (benchmarks/record.py)

from edgenlp import pipeline, progress  # noqa: E402
from edgenlp import recipe as recipe_module
from edgenlp.bench import stats  # noqa: E402
from edgenlp.bench.harness import BenchSettings, Candidate, measure  # noqa: E402
from edgenlp.bench.profiles import Profile  # noqa: E402
from edgenlp.fsio import write_json_atomic  # noqa: E402
from edgenlp.hardware import cpu_info  # noqa: E402
from edgenlp.report import markdown  # noqa: E402

MAX_DROP, PRUNED_SPEEDUP, PRUNED_MAX_DROP = 1.0, 1.4, 1.0
PEERS = ("optimum-int8 (ort session)", "optimum-int8 (ORTModel)")


@dataclass
class TaskBench:
    name: str
    """The results file's name."""
    recipe: str
    metric: str
    """The task's quality metric in the variants' `metrics` (points)."""
    delta: str
    """Its difference to the reference in the variants' `ratios`."""
    optimum_class: str
    optimum_runner: str
    lengths: list = field(default_factory=lambda: ["real"])
    extra: object = None
    """variant -> more columns of its row."""


def row(bench: TaskBench, v: dict) -> dict:
    m = v["metrics"]
    latency = v["latency_ms"]["edge-1t"]
    return {
        "format": v.get("format") or "onnx",  # a peer's folder has no artifact record
        "precision": v.get("precision") or "int8",
        bench.metric: round(m[bench.metric], 2),
        "ci": [round(x, 2) for x in m[f"{bench.metric}_ci"]],
        "delta_points": round(v["ratios"][bench.delta], 2),
        "delta_ci": [round(x, 2) for x in m[f"{bench.metric}_delta_ci"]] if m.get(f"{bench.metric}_delta_ci") else None,
        "size_mb": round(v["size_bytes"] / 1e6, 1),
        "p50_ms": {shape: round(s["p50"], 3) for shape, s in latency.items()},
        "p50_ci": {shape: [round(x, 3) for x in s["p50_ci"]] for shape, s in latency.items()},
        "peak_rss_mib": round(v["profiles"]["edge-1t"]["peak_rss_bytes"] / 2**20),
        **(bench.extra(v) if bench.extra else {}),
    }


def paired(results: dict, base: str, other: str, shape: str) -> dict:
    """How many times faster `other` is than `base` on one example at `shape`, rounds paired."""
    by = {v["name"]: v for v in results["variants"]}
    one = stats.speedup(
        by[base]["latency_samples_ms"]["edge-1t"][shape], by[other]["latency_samples_ms"]["edge-1t"][shape]
    )
    return {"ratio": round(one["ratio"], 3), "ci": [round(c, 3) for c in one["ci"]]}


def summarize(bench: TaskBench, results: dict, pruned: list[str], unpruned: list[str]) -> dict:
    rows = {v["name"]: row(bench, v) for v in results["variants"]}
    ref = results["reference"]
    shapes = list(rows[ref]["p50_ms"])
    ours = [n for n in rows if n not in PEERS and n != ref and rows[n]["precision"] != "fp32"]
    within = {n: -rows[n]["delta_points"] <= MAX_DROP for n in ours}
    eligible = [n for n in unpruned if n in rows and within.get(n)]
    # the one to ship: the fastest (on the first shape) of those within the budget
    best = min(eligible, key=lambda n: rows[n]["p50_ms"][shapes[0]]) if eligible else None
    verdicts = {}
    for shape in shapes:
        fastest_peer = min(PEERS, key=lambda n: rows[n]["p50_ms"][shape])
        verdict: dict = {"fastest_peer": fastest_peer, f"peer_{bench.metric}": rows[fastest_peer][bench.metric]}
        if best:
            against = paired(results, fastest_peer, best, shape)
            verdict.update(
                best_int8=best,
                speedup_over_fastest_peer=against,
                vs_every_peer={p: paired(results, p, best, shape) for p in PEERS},
                met=against["ci"][1] >= 1.0,
            )
        else:
            verdict.update(met=False, why=f"no unpruned INT8 variant is within {MAX_DROP} point of FP32")
        verdicts[shape] = verdict
    pruning = {}
    base = best or next((n for n in unpruned if n in rows), None)
    for name in (n for n in pruned if n in rows and base):
        drop = rows[ref][bench.metric] - rows[name][bench.metric]
        speedups = {shape: paired(results, base, name, shape) for shape in shapes}
        one = {"against": base, "speedup": speedups, "below_fp32_points": round(drop, 2)}
        one["met"] = drop <= PRUNED_MAX_DROP and all(s["ratio"] >= PRUNED_SPEEDUP for s in speedups.values())
        pruning[name] = one
    return {
        "metric": bench.metric,
        "targets": {"max_drop": MAX_DROP, "pruned_speedup": PRUNED_SPEEDUP, "pruned_max_drop": PRUNED_MAX_DROP},
        "eval": results["eval"],
        "fp32": rows[ref][bench.metric],
        "variants": rows,
        "int8_within_1_point": within,
        "vs_optimum": verdicts,
        "pruning": pruning,
    }


def print_summary(s: dict) -> None:
    metric = s["metric"]
    print(f"\nFP32 {metric}: {s['fp32']:.2f}")
    for name, r in s["variants"].items():
        times = " ".join(f"{shape} {ms:.3f} ms" for shape, ms in r["p50_ms"].items())
        print(f"{name:<30} {r[metric]:>6.2f} {r['delta_points']:>+6.2f}  {times}  {r['size_mb']:.1f} MB")
    for shape, v in s["vs_optimum"].items():
        if "best_int8" in v:
            sp = v["speedup_over_fastest_peer"]
            print(
                f"{shape}: best INT8 {v['best_int8']} vs {v['fastest_peer']}: {sp['ratio']:.3f}x "
                f"[{sp['ci'][0]:.3f}-{sp['ci'][1]:.3f}] -> {'met' if v['met'] else 'NOT MET'}"
            )
        else:
            print(f"{shape}: INT8 vs Optimum: NOT MET ({v['why']})")
    for name, p in s["pruning"].items():
        times = ", ".join(f"{k} {x['ratio']:.2f}x [{x['ci'][0]:.2f}-{x['ci'][1]:.2f}]" for k, x in p["speedup"].items())
        print(
            f"pruned: {name} vs {p['against']}: {times}; {-p['below_fp32_points']:+.2f} points against FP32 -> "
            f"{'met' if p['met'] else 'NOT MET'}"
        )


SKIP_HELP = (
    "comma-separated variants of the recipe to leave out of the run, with everything built from them: they are "
    "neither built nor measured (a pruned model's distillation takes most of an hour on two AVX2 cores)"
)


def without(recipe, skip: str):
    """The recipe less the variants named in `skip` (comma-separated) and everything built from them."""
    names = set(filter(None, skip.split(",")))
    unknown = names - {v.name for v in recipe.variants}
    if unknown:
        raise SystemExit(f"--skip names {sorted(unknown)[0]!r}, which is not a variant of recipe {recipe.name}")
    kept = []
    for v in recipe.variants:  # a parent comes before its children in a recipe
        if v.name in names or v.parent in names:
            names.add(v.name)
        else:
            kept.append(v)
    return recipe.model_copy(update={"variants": kept})


def main(bench: TaskBench) -> int:
    parser = argparse.ArgumentParser(description=(sys.modules["__main__"].__doc__ or "").splitlines()[0])
    parser.add_argument("--recipe", default=str(ROOT / "recipes" / bench.recipe))
    parser.add_argument("--out", default=None)
    parser.add_argument("--iterations", type=int, default=400)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--max-eval-examples", type=int, default=None, help="a seeded sample of the test set")
    parser.add_argument("--name", default=bench.name)
    parser.add_argument(
        "--lengths",
        default=",".join(map(str, bench.lengths)),
        help="comma-separated shapes to time: real, or a token count (a reader trained on shorter windows keeps them)",
    )
    parser.add_argument("--skip", default="", help=SKIP_HELP)
    args = parser.parse_args()
    lengths = [x if x == "real" else int(x) for x in args.lengths.split(",")]

    from rich.console import Console

    progress.enable(Console(stderr=True))  # an hour of training and timing shows where it is
    recipe = without(recipe_module.load(args.recipe), args.skip)
    out = Path(args.out or ROOT / "runs" / recipe.name)
    source, task = pipeline.source_and_task(recipe)
    dataset = task.load_data(recipe.data)
    variants, _ = pipeline.build_variants(recipe, out, dataset, source, task)
    isa = "avx512_vnni" if cpu_info().isa == "avx512_vnni" else "avx2"
    optimum_dir = compare_optimum.build_optimum_variant(
        variants["pytorch-fp32"].path, out / "peers", bench.optimum_class, isa
    )
    candidates = pipeline.candidates_of(variants)
    candidates += [
        Candidate(PEERS[0], optimum_dir, "onnx"),
        Candidate(PEERS[1], optimum_dir, f"benchmarks.optimum_runner:{bench.optimum_runner}"),
    ]
    profiles = [Profile(name="edge-1t", threads=1, seq_lengths=lengths, throughput_batch=None)]
    settings = BenchSettings(
        profiles=profiles,
        iterations=args.iterations,
        rounds=args.rounds,
        reference="pytorch-fp32",
        max_eval_examples=args.max_eval_examples,
    )
    results = measure(
        candidates, task.eval_set(dataset, variants["pytorch-fp32"].labels()), settings, out / "bench-peers"
    )
    results["run"] = {"recipe": recipe.name + " vs peers", "model": recipe.model, "data": dataset.describe()}
    write_json_atomic(out / "bench-peers" / "results.json", results)
    markdown.write(results, out / "bench-peers" / "report.md")

    pruned = [c.name for c in candidates if c.name.startswith("onnx-int8-pruned")]
    unpruned = [c.name for c in candidates if c.name.startswith("onnx-int8") and c.name not in pruned]
    summary = summarize(bench, results, pruned, unpruned)
    print_summary(summary)
    record.save(args.name, summary)
    return 0
