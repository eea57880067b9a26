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

MEASURE = {executors.MEASURE_RESOURCE: 1, executors.KIND_RESOURCE + "bench": 1}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """Head (no CPUs: it only schedules) + two one-CPU workers, one of which measures."""
    os.environ["RAY_ENABLE_UV_RUN_RUNTIME_ENV"] = "0"
    os.environ[executors.ray_module().CACHE_ENV] = str(tmp_path_factory.mktemp("ray-cache"))
    started = time.time()
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
    nodes = [c.add_node(num_cpus=1, resources=MEASURE),
             c.add_node(num_cpus=1)]
    c.wait_for_nodes()
    assert time.time() - started < 120, "the local Ray cluster took over two minutes to start"
    yield c, nodes
    ray.shutdown()
    c.shutdown()


def _on_ray(data: dict, address: str, **settings) -> dict:
    return {**data, "executor": {"kind": "ray", "address": address, "build_cpus": 1,
                                 "measure_on": {"tiny-1t": "bench"}, "build_memory_gb": 0.5,
                                 "eval_memory_gb": 0.25, **settings}}


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
    assert transport.unpack(blob, tmp_path / "ok", "test") == {"a.bin": pytest.approx(transport._sha256(src / "a.bin")),
                                                                "sub/b.txt": transport._sha256(src / "sub" / "b.txt")}
    corrupt = blob.replace(b"hello", b"jello")
    with pytest.raises(ArtifactError, match="sub/b.txt arrived with another sha256"):
        transport.unpack(corrupt, tmp_path / "bad", "test")


def test_executor_spec_is_checked():
    assert executors.parse("ray:127.0.0.1:6379") == {"kind": "ray", "address": "127.0.0.1:6379"}
    with pytest.raises(EdgeNLPError, match="unknown executor 'spark'"):
        executors.parse("spark")


def test_same_recipe_same_ids_and_accuracy_on_local_and_ray(cluster, tiny_recipe, tmp_path):
    c, _ = cluster
    local = pipeline.run(recipe.parse(_local(tiny_recipe)), tmp_path / "local")
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
