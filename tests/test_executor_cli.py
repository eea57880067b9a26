"""`--executor ray` on the command line: a Ray instance started on this machine builds and measures.

Its own module, so that it runs where no other Ray cluster of the tests is up (a Ray instance
started here would otherwise find that one).
"""

from __future__ import annotations

import json
import os

import pytest

pytestmark = pytest.mark.ray

pytest.importorskip("ray", reason="the Ray executor tests need edgenlp[ray]")


def test_the_command_line_runs_a_recipe_on_a_ray_instance_it_starts(tiny_recipe, tmp_path):
    """`--executor ray` with no address: a Ray instance on this machine, which builds and measures."""
    import subprocess
    import sys

    import yaml

    recipe_file = tmp_path / "tiny.yaml"
    recipe_file.write_text(
        yaml.safe_dump({**tiny_recipe, "executor": {"build_cpus": 1, "build_memory_gb": 0.5, "eval_memory_gb": 0.25}})
    )
    env = {**os.environ, "RAY_ENABLE_UV_RUN_RUNTIME_ENV": "0"}
    env.pop("RAY_ADDRESS", None)
    # about 40 s alone; a busy 2-core machine ran past 600 s once: the limit only catches a hang, never the load
    try:
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "edgenlp.cli",
                "optimize",
                "--recipe",
                str(recipe_file),
                "--out",
                str(tmp_path / "run"),
                "--executor",
                "ray",
            ],
            capture_output=True,
            text=True,
            env=env,
            timeout=1800,
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"the Ray run hung for 30 minutes; its last output: {(exc.stderr or b'')[-2000:]!r}")
    assert done.returncode == 0, done.stderr[-2000:]
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["executor"]["kind"] == "ray" and results["executor"]["measuring_nodes"] == 1
    assert results["environment"]["measured_on"]["tiny-1t"]["executor"] == "ray"
