"""One sweep, built and evaluated on the local executor and on a local Ray cluster of 1 and 2 nodes.

    python benchmarks/executors.py [--recipe R] [--model FINE-TUNED] [--name executors] [--out runs/sweep-executors]

With `--model`, the recipe's fine-tuning variant is that checkpoint, used as it is (the wide sweep
`recipes/sweep-executors-pruning.yaml` starts from the fine-tuned model of the default recipe).

The sweep is `recipes/sweep-executors.yaml` (MiniLM fine-tuned briefly on the tweets, exported, eight
INT8 settings; ten builds, each on one thread). Each executor starts from an empty run folder:
build every variant (`pipeline.run(..., bench=False)`), then evaluate every variant's accuracy
(`harness.evaluate`). The Ray cluster is started here, on this machine: a head that only schedules
and N worker nodes of one CPU each. Checked: identical artifact ids and identical predictions on
every executor. Reported: wall times, speed-up of 2 nodes over 1 (target >= 0.7 x 2), and, on
paper, the makespan for N = 1..8 equal nodes from the per-task times measured here (greedy list
scheduling of the variant tree, which is what the Ray executor does), for this sweep and for a
user's sweep of eight such trees (eight models or data sets).
Saves `benchmarks/results/executors.json`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import record  # noqa: E402

from edgenlp import executors, models, pipeline, tasks  # noqa: E402
from edgenlp import recipe as recipe_module
from edgenlp.bench import harness  # noqa: E402

MEASURE = {executors.MEASURE_RESOURCE: 1}


def sweep(recipe, out: Path, executor_settings: dict) -> dict:
    r = recipe.model_copy(update={"executor": recipe.executor.model_copy(update=executor_settings)})
    started = time.perf_counter()
    outcome = pipeline.run(r, out, bench=False)
    built = time.perf_counter() - started
    source = models.resolve(r.model)
    task = tasks.resolve(tasks.of_config(source.config()), r.task, r.model)
    dataset = task.load_data(r.data)
    candidates = pipeline.candidates_of(outcome.variants)
    eval_set = task.eval_set(dataset, pipeline.model_labels([c.path for c in candidates]))
    payload = task.payload(eval_set, r.bench)
    executor = executors.open(r.executor)
    eval_seconds = {}
    try:
        with executors.using(executor):

            def timed(c):
                t = time.perf_counter()
                reply = harness.evaluate([c], task.NAME, payload, c.name, 1, out / "bench" / "logs", executor)[c.name]
                eval_seconds[c.name] = time.perf_counter() - t
                return reply

            started = time.perf_counter()
            replies = executors.run_all(executor, timed, candidates, executors.Needs(cpus=1))
            evaluated = time.perf_counter() - started
    finally:
        executor.close()
    labels = payload["labels"]
    return {
        "build_seconds": round(built, 1),
        "eval_seconds": round(evaluated, 1),
        "wall_seconds": round(built + evaluated, 1),
        "ids": {n: a.id for n, a in outcome.variants.items()},
        "accuracy": {
            c.name: sum(p == y for p, y in zip(rep["preds"], labels)) / len(labels)
            for c, rep in zip(candidates, replies)
        },
        "predictions_sha": {c.name: record_hash(rep["preds"]) for c, rep in zip(candidates, replies)},
        "tasks": {
            n: {
                "parent": (a.meta.get("parent") or {}).get("name"),
                "build": a.meta.get("build_seconds"),
                "eval": round(eval_seconds[n], 2),
            }
            for n, a in outcome.variants.items()
        },
    }


def record_hash(values) -> str:
    import hashlib

    return hashlib.sha256(json.dumps(values).encode()).hexdigest()[:16]


def makespan(tasks_: dict, nodes: int, copies: int = 1) -> float:
    """Greedy list scheduling of `copies` independent variant trees on `nodes` equal nodes: a build
    starts once its parent's build is done; each variant's evaluation follows its build."""
    jobs = {}
    for k in range(copies):
        for name, t in tasks_.items():
            parent = f"{t['parent']}#{k}" if t["parent"] in tasks_ else None
            jobs[f"{name}#{k}"] = {"parent": parent, "seconds": (t["build"] or 0.0) + t["eval"]}
    # evaluation runs after the build on the same node here (a simplification that favours neither side)
    done, free, clock = {}, [0.0] * nodes, 0.0
    pending = dict(jobs)
    while pending:
        ready = sorted(
            (n for n, j in pending.items() if j["parent"] is None or j["parent"] in done),
            key=lambda n: -pending[n]["seconds"],
        )
        if not ready:
            raise RuntimeError("cycle")
        name = ready[0]
        node = min(range(nodes), key=lambda i: free[i])
        start = max(free[node], done.get(pending[name]["parent"], 0.0))
        done[name] = start + pending[name]["seconds"]
        free[node] = done[name]
        clock = max(clock, done[name])
        del pending[name]
    return clock


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "runs" / "sweep-executors"))
    parser.add_argument("--recipe", default=str(ROOT / "recipes" / "sweep-executors.yaml"))
    parser.add_argument(
        "--model", default=None, help="A fine-tuned checkpoint to start from (its fine-tuning is reused)."
    )
    parser.add_argument("--name", default="executors", help="Results file name under benchmarks/results/.")
    args = parser.parse_args()
    recipe = recipe_module.load(args.recipe)
    if args.model:
        recipe = recipe_module.parse({**recipe.model_dump(mode="json"), "model": str(Path(args.model).resolve())})
    out = Path(args.out) / time.strftime("%Y%m%d-%H%M%S")
    os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
    from ray.cluster_utils import Cluster

    runs = {}
    print("local executor ...", flush=True)
    runs["local"] = sweep(recipe, out / "local", {"kind": "local"})
    for n in (1, 2):
        print(f"Ray, {n} worker node(s) ...", flush=True)
        cluster = Cluster(
            initialize_head=True,
            head_node_args={"num_cpus": 0, "include_dashboard": False, "object_store_memory": 600 * 2**20},
        )
        for i in range(n):
            cluster.add_node(num_cpus=1, resources=MEASURE if i == 0 else {}, object_store_memory=600 * 2**20)
        cluster.wait_for_nodes()
        try:
            runs[f"ray-{n}"] = sweep(recipe, out / f"ray-{n}", {"kind": "ray", "address": cluster.address})
        finally:
            import ray

            ray.shutdown()
            cluster.shutdown()
    same_ids = all(r["ids"] == runs["local"]["ids"] for r in runs.values())
    same_predictions = all(r["predictions_sha"] == runs["local"]["predictions_sha"] for r in runs.values())
    speedup = runs["ray-1"]["wall_seconds"] / runs["ray-2"]["wall_seconds"]
    per_task = runs["ray-1"]["tasks"]
    paper = {}
    for copies in (1, 8):
        one = makespan(per_task, 1, copies)
        paper[f"{copies}-tree(s)"] = {
            str(n): {
                "makespan_s": round(makespan(per_task, n, copies), 1),
                "throughput_vs_one_node": round(one / makespan(per_task, n, copies), 2),
                "efficiency": round(one / makespan(per_task, n, copies) / n, 2),
            }
            for n in (1, 2, 4, 8)
        }
    summary = {
        "recipe": str(Path(args.recipe).resolve().relative_to(ROOT)),
        "model": args.model,
        "variants": len(runs["local"]["ids"]),
        "runs": runs,
        "identical_artifact_ids": same_ids,
        "identical_predictions": same_predictions,
        "measured_speedup_2_nodes_over_1": round(speedup, 2),
        "measured_efficiency_2_nodes": round(speedup / 2, 2),
        "target_efficiency": 0.7,
        "target_met_measured": speedup / 2 >= 0.7,
        "on_paper": paper,
        "cluster": "ray.cluster_utils.Cluster on this machine: head with 0 CPUs, worker nodes of 1 CPU each",
    }
    for name, r in runs.items():
        print(
            f"{name:>7}: build {r['build_seconds']:7.1f} s  eval {r['eval_seconds']:6.1f} s  "
            f"wall {r['wall_seconds']:7.1f} s"
        )
    print(
        f"identical ids: {same_ids}; identical predictions: {same_predictions}; 2 nodes over 1: {speedup:.2f}x "
        f"(efficiency {speedup / 2:.2f}, target 0.70)"
    )
    for k, v in paper.items():
        print(f"on paper, {k}: " + ", ".join(f"N={n}: {x['efficiency']:.2f}" for n, x in v.items()))
    record.save(args.name, summary)
    return 0 if same_ids and same_predictions else 1


if __name__ == "__main__":
    sys.exit(main())
