"""The Ray executor on a cluster these tests start on this machine (a head and worker nodes, all on this machine).

Every worker is its own Ray node with one CPU; one node measures. The same recipe run locally and on
the cluster must give the same artifact ids and the same accuracy; a worker killed during a build
must cost a retry, never a half-written variant.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import pytest

from edgenlp import executors, pipeline, recipe
from edgenlp.errors import ArtifactError, EdgeNLPError
from edgenlp.executors import transport

ray = pytest.importorskip("ray", reason="the Ray executor tests need edgenlp[ray]")
from ray.cluster_utils import Cluster  # noqa: E402

pytestmark = pytest.mark.ray

MEASURE = {executors.MEASURE_RESOURCE: 1, executors.KIND_RESOURCE + "bench": 1}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """Head (no CPUs: it only schedules) + two one-CPU workers, one of which measures."""
    os.environ["RAY_ENABLE_UV_RUN_RUNTIME_ENV"] = "0"
    os.environ[executors.ray_module().CACHE_ENV] = str(tmp_path_factory.mktemp("ray-cache"))
    started = time.time()
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
    nodes = [c.add_node(num_cpus=1, resources=MEASURE), c.add_node(num_cpus=1)]
    c.wait_for_nodes()
    assert time.time() - started < 120, "the local Ray cluster took over two minutes to start"
    yield c, nodes
    ray.shutdown()
    c.shutdown()


def _on_ray(data: dict, address: str, **settings) -> dict:
    return {
        **data,
        "executor": {
            "kind": "ray",
            "address": address,
            "build_cpus": 1,
            "measure_on": {"tiny-1t": "bench"},
            "build_memory_gb": 0.5,
            "eval_memory_gb": 0.25,
            **settings,
        },
    }


def _local(data: dict) -> dict:
    return {**data, "executor": {"kind": "local", "build_cpus": 1}}


def _ids(run: pipeline.RunOutcome) -> dict:
    return {name: art.id for name, art in run.variants.items()}


def _accuracy(results: dict) -> dict:
    return {v["name"]: (v["metrics"]["accuracy"], v["metrics"]["macro_f1"]) for v in results["variants"]}


def test_a_folder_arrives_checked(tmp_path):
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "a.bin").write_bytes(b"x" * 100)
    (src / "sub" / "b.txt").write_text("hello")
    blob = transport.pack(src)
    assert transport.unpack(blob, tmp_path / "ok", "test") == {
        "a.bin": pytest.approx(transport._sha256(src / "a.bin")),
        "sub/b.txt": transport._sha256(src / "sub" / "b.txt"),
    }
    corrupt = blob.replace(b"hello", b"jello")
    with pytest.raises(ArtifactError, match="sub/b.txt arrived with another sha256"):
        transport.unpack(corrupt, tmp_path / "bad", "test")


def test_executor_spec_is_checked():
    assert executors.parse("ray:127.0.0.1:6379") == {"kind": "ray", "address": "127.0.0.1:6379"}
    with pytest.raises(EdgeNLPError, match="unknown executor 'spark'"):
        executors.parse("spark")


@pytest.fixture(scope="module")
def local_run(tiny_recipe, tmp_path_factory):
    return pipeline.run(recipe.parse(_local(tiny_recipe)), tmp_path_factory.mktemp("local"))


def test_same_recipe_same_ids_and_accuracy_on_local_and_ray(cluster, local_run, tiny_recipe, tmp_path):
    c, _ = cluster
    local = local_run
    remote = pipeline.run(recipe.parse(_on_ray(tiny_recipe, c.address)), tmp_path / "ray")
    assert _ids(local) == _ids(remote)
    assert _accuracy(local.results) == _accuracy(remote.results)
    for name, art in remote.variants.items():
        assert art.verify(), name
        assert art.path.parent == tmp_path / "ray" / "variants"
    measured = remote.results["environment"]["measured_on"]["tiny-1t"]
    assert measured["executor"] == "ray" and measured["kind"] == "bench"
    assert {v["profiles"]["tiny-1t"]["node_kind"] for v in remote.results["variants"]} == {"bench"}
    assert remote.results["executor"]["nodes"] == 3
    # a rerun on the cluster rebuilds nothing
    again = pipeline.run(recipe.parse(_on_ray(tiny_recipe, c.address)), tmp_path / "ray", bench=False)
    assert sorted(again.reused) == sorted(again.variants)


def _kill_first_build(killed: list, stop: threading.Event) -> None:
    """SIGKILL the first Ray worker seen running a task (the run's first build), as a crash would."""
    import signal
    import subprocess

    while not stop.is_set():
        out = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout
        for line in out.splitlines():
            if "ray::_on_node" in line and "ps -eo" not in line:
                pid = int(line.split()[0])
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
                return
        time.sleep(0.05)


def _killing_one_worker(fn):
    killed, stop = [], threading.Event()
    watcher = threading.Thread(target=_kill_first_build, args=(killed, stop), daemon=True)
    watcher.start()
    try:
        return fn(), killed
    finally:
        stop.set()
        watcher.join(timeout=5)


def _no_partials(run_dir: Path) -> None:
    left = [p.name for p in (run_dir / "variants").iterdir() if p.name.startswith(".")]
    assert not left, f"half-written folders left: {left}"


def test_a_worker_killed_during_a_build_is_retried_and_nothing_half_written_is_published(
    cluster, local_run, tiny_recipe, tmp_path
):
    c, _ = cluster
    data = _on_ray(tiny_recipe, c.address, retries=2)
    run, killed = _killing_one_worker(lambda: pipeline.run(recipe.parse(data), tmp_path / "run", bench=False))
    assert killed, "no build was seen running"
    assert all(art.verify() for art in run.variants.values())
    _no_partials(tmp_path / "run")
    assert _ids(run) == _ids(local_run)


def _remove_the_node_of_the_first_build(c, nodes: list, removed: list, stop: threading.Event) -> None:
    """Stop the whole Ray node (its raylet and workers) that runs the first build seen, as a machine dying would."""
    import subprocess

    while not stop.is_set():
        out = subprocess.run(["ps", "-eo", "pid,ppid,args"], capture_output=True, text=True).stdout
        parents = {
            int(line.split()[1]) for line in out.splitlines() if "ray::_on_node" in line and "ps -eo" not in line
        }
        for node in list(nodes):
            raylets = {proc.pid for kind, proc in node.live_processes() if kind == "raylet"}
            if raylets & parents:
                c.remove_node(node, allow_graceful=False)
                removed.append(node)
                return
        time.sleep(0.05)


def test_a_node_that_dies_during_a_build_has_its_task_retried_on_another(cluster, local_run, tiny_recipe, tmp_path):
    c, nodes = cluster
    removed, stop = [], threading.Event()
    watcher = threading.Thread(target=_remove_the_node_of_the_first_build, args=(c, nodes, removed, stop), daemon=True)
    watcher.start()
    try:
        run = pipeline.run(recipe.parse(_on_ray(tiny_recipe, c.address, retries=2)), tmp_path / "run", bench=False)
    finally:
        stop.set()
        watcher.join(timeout=30)
        for node in removed:  # the later tests get the same cluster back (nodes[0] is the measuring one)
            at = nodes.index(node)
            nodes[at] = c.add_node(num_cpus=1, resources=MEASURE if at == 0 else {})
        c.wait_for_nodes()
    assert removed, "no build was seen running on a node"
    assert all(art.verify() for art in run.variants.values())
    _no_partials(tmp_path / "run")
    assert _ids(run) == _ids(local_run)


def test_a_build_that_dies_more_often_than_allowed_stops_the_run_with_one_line_and_a_rerun_resumes(
    cluster, tiny_recipe, tmp_path
):
    c, _ = cluster
    data = _on_ray(tiny_recipe, c.address, retries=0)
    with pytest.raises(EdgeNLPError) as caught:
        _killing_one_worker(lambda: pipeline.run(recipe.parse(data), tmp_path / "run", bench=False))
    message = str(caught.value)
    assert "variant pytorch-fp32 (finetune) failed: its build ran 1 time(s) on Ray and its worker died" in message
    assert "rerun to resume" in message and "\n" not in message
    _no_partials(tmp_path / "run")
    assert not (tmp_path / "run" / "variants" / "pytorch-fp32").exists()
    again = pipeline.run(recipe.parse(data), tmp_path / "run", bench=False)
    assert set(again.variants) == {v["name"] for v in tiny_recipe["variants"]}


def test_no_measuring_node_is_a_clear_error(cluster):
    c, _ = cluster
    executor = executors.open(executors.ExecutorSettings(kind="ray", address=c.address))
    with pytest.raises(executors.ExecutorError, match="no node of the Ray cluster measures of kind 'arm'.*ray start"):
        executor.call(executors.here, needs=executors.Needs(measure=True, kind="arm", what="timing edge-1t"))


def test_tuning_trials_run_in_parallel_on_the_nodes_and_report_through_the_shared_study(cluster, tiny_recipe, tmp_path):
    import sqlite3

    c, _ = cluster
    data = _on_ray(tiny_recipe, c.address, parallel_trials=2)
    data["variants"] = [dict(data["variants"][0])]
    data["variants"][0]["config"] = {
        **data["variants"][0]["config"],
        "max_steps": 12,
        "eval_every": 4,
        "search": {
            "trials": 4,
            "startup_trials": 1,
            "warmup_evaluations": 1,
            "space": {"learning_rate": {"low": 1e-6, "high": 3e-3, "log": True}},
        },
    }
    run = pipeline.run(recipe.parse(data), tmp_path / "run", bench=False)
    art = run.variants["pytorch-fp32"]
    assert art.verify()
    log = json.loads((art.path / "training_log.json").read_text())["search"]
    assert len(log["trial_log"]) == 4 and log["complete"] >= 2
    assert all(t["evals"] for t in log["trial_log"])  # intermediate scores reached the driver's study
    assert log["trial_log"][0]["defaults"]
    assert (art.path / "model.safetensors").exists()
    studies = tmp_path / "run" / "variants" / "pytorch-fp32.tuning"
    best = f"trial-{log['best_trial']}"
    assert [p.name for p in studies.glob("*/trial-*")] == [best] and not list(studies.glob("*/.incoming-*"))
    db = next(studies.glob("*/study.db"))
    with sqlite3.connect(db) as con:
        spans = con.execute("select datetime_start, datetime_complete from trials order by number").fetchall()
    overlapping = any(a[0] < b[1] and b[0] < a[1] for i, a in enumerate(spans) for b in spans[i + 1 :])
    assert overlapping, f"no two trials ran at once: {spans}"


def test_the_accuracy_budget_search_scores_its_settings_on_the_nodes_with_the_same_outcome(
    cluster, tiny_recipe, tmp_path
):
    c, _ = cluster
    search = {
        "modes": ["dynamic"],
        "per_channel": [False, True],
        "embeddings": [True, False],
        "attention_matmuls": [False],
        "sensitivity": "needed",
        "tuning_examples": 24,
        "min_tuning_examples": 8,
        "measure_top": 2,
        "sensitivity_examples": 12,
        "probe_samples": 8,
    }
    base = {**tiny_recipe, "selection": {"max_accuracy_drop": 50.0}, "search": search}
    found = {}
    for name, data in (("local", _local(base)), ("ray", _on_ray(base, c.address))):
        run = pipeline.run(recipe.parse(data), tmp_path / name)
        found[name] = [
            (t["label"], t["tuning_quality"], t["status"] != "failed") for t in run.results["search"]["trials"]
        ]
    assert found["local"] == found["ray"] and len(found["ray"]) == 4


def test_a_bad_executor_on_the_command_line_is_one_line(tmp_path):
    from typer.testing import CliRunner

    from edgenlp.cli import app

    done = CliRunner().invoke(app, ["optimize", "--executor", "spark", "--out", str(tmp_path / "run")])
    assert done.exit_code == 2 and "unknown executor 'spark'" in done.output
    assert "Traceback" not in done.output


def test_ray_not_installed_names_the_extra(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now fails as it would without the extra
    with pytest.raises(executors.ExecutorError, match=r"pip install 'edgenlp\[ray\]'"):
        executors.open(executors.ExecutorSettings(kind="ray"))


def test_the_local_executor_is_the_default_and_needs_no_ray():
    assert recipe.parse({"name": "x", "variants": [{"name": "a", "stage": "export"}]}).executor.kind == "local"
    assert executors.current().name == "local" and not executors.current().remote
