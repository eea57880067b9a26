"""Progress off a terminal (a script, a CI log): a line per stage start and end, heartbeats, no library noise."""

from __future__ import annotations

import io
import time

import yaml
from rich.console import Console
from typer.testing import CliRunner

from edgenlp import progress
from edgenlp.cli import app


def test_plain_lines_and_heartbeats_when_the_console_is_not_a_terminal(monkeypatch):
    out = io.StringIO()
    monkeypatch.setattr(progress, "_console", Console(file=out, force_terminal=False, width=200))
    monkeypatch.setattr(progress, "HEARTBEAT_S", 0.1)
    with progress.stage("onnx-int8", "quantize") as ended:
        with progress.task("training", 4) as advance:
            for _ in range(4):
                advance()
                time.sleep(0.06)
        ended("built")
    lines = out.getvalue().splitlines()
    assert lines[0] == "variant onnx-int8 (quantize): started"
    assert "training: started (4 steps)" in lines and "training: finished 4/4 in 0s" in lines
    assert any(line.startswith("training: ") and "/4 (" in line for line in lines), "a heartbeat with the count"
    assert lines[-1] == "variant onnx-int8 (quantize): built in 0s"


def test_optimize_in_a_script_says_where_it_is_and_keeps_optimums_notice_quiet(tiny_recipe, tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump(tiny_recipe))
    result = CliRunner().invoke(
        app, ["optimize", "--recipe", str(recipe), "--out", str(tmp_path / "run"), "--no-bench"]
    )
    assert result.exit_code == 0, result.output
    for name, stage in (("pytorch-fp32", "finetune"), ("onnx-fp32", "export"), ("onnx-int8-dynamic", "quantize")):
        assert f"variant {name} ({stage}): started" in result.output
        assert f"variant {name} ({stage}): built in " in result.output
    assert "training (text-classification): started" in result.output
    assert "requires accelerate" not in result.output
