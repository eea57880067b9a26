"""The same variants timed by the local executor and by a Ray measuring node of the same kind.

    python benchmarks/executors_latency.py --local RUN_DIR --ray RUN_DIR [--variants a b ...]

RUN_DIRs are two run folders of one recipe built by `benchmarks/executors.py` (on `local` and on
`ray`: their variants have the same ids, checked here). Each is measured with the harness under the
`edge-1t` profile (1 thread, real lengths and 128 tokens): the first on this machine with the local
executor, the second on a Ray cluster started here whose only measuring node is this machine's
kind. Target (issue 14): latencies within their intervals on the same node kind. Reported: every p50
with its 95% interval on both, whether each lies in the other's interval, and the speed-ups against
the reference with their intervals. Saves `benchmarks/results/executors_latency.json`.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import record  # noqa: E402

from edgenlp import executors, models, pipeline, tasks  # noqa: E402
from edgenlp import recipe as recipe_module
from edgenlp.artifact import Artifact  # noqa: E402
from edgenlp.bench.harness import BenchSettings, measure  # noqa: E402


def _measure(run_dir: Path, names: list[str], recipe, executor) -> dict:
    variants = {n: Artifact.load(run_dir / "variants" / n) for n in names}
    source = models.resolve(recipe.model)
    task = tasks.resolve(tasks.of_config(source.config()), recipe.task, recipe.model)
    dataset = task.load_data(recipe.data)
    candidates = pipeline.candidates_of(variants)
    eval_set = task.eval_set(dataset, pipeline.model_labels([c.path for c in candidates]))
    settings = BenchSettings(profiles=["edge-1t"], iterations=200, rounds=8, reference=names[0])
    with executors.using(executor):
        results = measure(candidates, eval_set, settings, run_dir / "bench-latency")
    return {
        "ids": {n: a.id for n, a in variants.items()},
        "measured_on": results["environment"]["measured_on"],
        "variants": {
            v["name"]: {
                "accuracy": v["metrics"]["accuracy"],
                "latency": v["latency_ms"]["edge-1t"],
                "speedup": v["ratios"]["speedup_p50"],
                "speedup_ci": v["ratios"]["speedup_p50_ci"],
            }
            for v in results["variants"]
        },
    }


def _within(x: float, ci: list[float]) -> bool:
    return ci[0] <= x <= ci[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--local", required=True, help="Run folder built with the local executor.")
    parser.add_argument("--ray", required=True, help="Run folder of the same recipe built on Ray.")
    parser.add_argument("--recipe", default=str(ROOT / "recipes" / "sweep-executors.yaml"))
    parser.add_argument(
        "--variants", nargs="+", default=["pytorch-fp32", "onnx-fp32", "int8-dynamic", "int8-static-minmax"]
    )
    args = parser.parse_args()
    recipe = recipe_module.load(args.recipe)
    local = _measure(Path(args.local), args.variants, recipe, executors.LocalExecutor())
    os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
    import ray
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
    cluster.add_node(num_cpus=2, resources={executors.MEASURE_RESOURCE: 1})
    cluster.wait_for_nodes()
    try:
        on_ray = _measure(
            Path(args.ray),
            args.variants,
            recipe,
            executors.open(executors.ExecutorSettings(kind="ray", address=cluster.address)),
        )
    finally:
        ray.shutdown()
        cluster.shutdown()
    if local["ids"] != on_ray["ids"]:
        print("the two run folders hold different variants: build them from one recipe", file=sys.stderr)
        return 2
    rows, agree = [], True
    for name in args.variants:
        a, b = local["variants"][name], on_ray["variants"][name]
        for shape in a["latency"]:
            la, lb = a["latency"][shape], b["latency"][shape]
            inside = _within(la["p50"], lb["p50_ci"]) or _within(lb["p50"], la["p50_ci"])
            key = f"edge-1t/{shape}"
            speed_inside = (
                name == args.variants[0]
                or not a["speedup_ci"].get(key)
                or _within(a["speedup"][key], b["speedup_ci"][key])
                or _within(b["speedup"][key], a["speedup_ci"][key])
            )
            agree &= inside
            rows.append(
                {
                    "variant": name,
                    "shape": shape,
                    "local_p50": round(la["p50"], 3),
                    "local_ci": [round(x, 3) for x in la["p50_ci"]],
                    "ray_p50": round(lb["p50"], 3),
                    "ray_ci": [round(x, 3) for x in lb["p50_ci"]],
                    "p50_within_an_interval": inside,
                    "local_speedup": a["speedup"].get(key),
                    "ray_speedup": b["speedup"].get(key),
                    "speedup_within_an_interval": speed_inside,
                    "same_accuracy": a["accuracy"] == b["accuracy"],
                }
            )
            print(
                f"{name:>20} {shape:>6}: local {la['p50']:7.2f} [{la['p50_ci'][0]:.2f}-{la['p50_ci'][1]:.2f}]  "
                f"ray {lb['p50']:7.2f} [{lb['p50_ci'][0]:.2f}-{lb['p50_ci'][1]:.2f}]  "
                f"{'within' if inside else 'OUTSIDE'}"
            )
    record.save(
        "executors_latency",
        {
            "rows": rows,
            "all_p50_within_an_interval": agree,
            "measured_on": {"local": local["measured_on"], "ray": on_ray["measured_on"]},
            "profile": "edge-1t",
            "iterations": 200,
            "rounds": 8,
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
