"""`edgenlp explain`: attention maps and rollout from PyTorch and ONNX models, pruned ones included."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from test_insight import png_size
from typer.testing import CliRunner

from edgenlp import explain
from edgenlp.artifact import build
from edgenlp.cli import app
from edgenlp.stages import prune

TEXT = "the movie was great fun"


def test_rollout_of_attention_to_self_is_the_identity_and_rows_stay_distributions():
    layers = [np.stack([np.eye(4)] * 2)] * 3
    assert np.allclose(explain.rollout(layers), np.eye(4))
    rng = np.random.default_rng(0)
    random = [rng.dirichlet(np.ones(5), size=(3, 5)) for _ in range(4)]
    assert np.allclose(explain.rollout(random).sum(axis=1), 1.0)


def test_a_run_is_explained_variant_by_variant_and_its_report_shows_it(tiny_run):
    out = tiny_run.out_dir
    result = CliRunner().invoke(app, ["explain", str(out), TEXT])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "explain" / "explain.json").read_text())
    assert summary["reference"] == "pytorch-fp32" and summary["tokens"][summary["query"]] == "[CLS]"
    entries = summary["models"]
    assert entries["onnx-fp32"]["source"].startswith("onnx") and entries["pytorch-fp32"]["source"].startswith("pytorch")
    assert entries["onnx-fp32"]["rollout_spearman"] == pytest.approx(1.0, abs=1e-3)  # same model, other engine
    assert -1 <= entries["onnx-int8-dynamic"]["rollout_spearman"] <= 1
    assert "onnx-fp32-opt" in summary["skipped"] and "fused" in summary["skipped"]["onnx-fp32-opt"]
    assert np.allclose(summary["rollout"]["onnx-fp32"], summary["rollout"]["pytorch-fp32"], atol=1e-4)
    for name in entries:
        for layer in range(2):
            width, height = png_size_file(out / "explain" / name / f"layer-{layer}.png")
            assert width > 400 and height > 200  # two heads side by side
    assert png_size_file(out / "explain" / "rollout.png")[0] >= 640
    results = json.loads((out / "results.json").read_text())
    assert results["attention"]["models"]["onnx-fp32"]["rollout_spearman"] == entries["onnx-fp32"]["rollout_spearman"]
    assert "## Attention" in (out / "report.md").read_text()
    assert "Attention rollout per token" in (out / "report.html").read_text()


def png_size_file(path: Path) -> tuple[int, int]:
    import base64

    return png_size(base64.b64encode(path.read_bytes()).decode())


def test_a_pruned_model_with_fewer_heads_is_compared_with_the_model_it_was_pruned_from(tiny_run, tmp_path):
    source = tiny_run.variants["pytorch-fp32"]
    config = prune.Config(ratio=0.5, head_ratio=0.5)
    pruned, _ = build(
        tmp_path / "pruned",
        source,
        prune.NAME,
        config,
        run=lambda work: prune.run(source, config, work),
        libraries=prune.LIBRARIES,
    )
    assert explain.reference_of(pruned.path) == source.path
    result = CliRunner().invoke(app, ["explain", str(pruned.path), TEXT, "--out", str(tmp_path / "x")])
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "x" / "explain.json").read_text())
    assert summary["models"]["pruned"]["heads"] == [1, 1]
    assert summary["models"][source.path.name]["heads"] == [2, 2]
    assert -1 <= summary["models"]["pruned"]["rollout_spearman"] <= 1
    one_head = png_size_file(tmp_path / "x" / "pruned" / "layer-0.png")
    two_heads = png_size_file(tmp_path / "x" / source.path.name / "layer-0.png")
    assert two_heads[0] > 1.8 * one_head[0] * 0.9  # a panel per head


def test_gpt2_rollout_is_read_at_the_last_token_from_onnx_int8(tiny_gpt2_run, tmp_path):
    int8 = tiny_gpt2_run.variants["onnx-int8"].path
    assert explain.reference_of(int8) == tiny_gpt2_run.variants["pytorch-fp32"].path
    onnx_maps = explain.attention_maps(tiny_gpt2_run.variants["onnx-fp32"].path, "good movie plot")
    torch_maps = explain.attention_maps(tiny_gpt2_run.variants["pytorch-fp32"].path, "good movie plot")
    assert onnx_maps.query == len(onnx_maps.tokens) - 1
    assert all(np.allclose(a, b, atol=1e-4) for a, b in zip(onnx_maps.layers, torch_maps.layers))
    assert np.allclose(np.triu(onnx_maps.layers[0][0], 1), 0)  # causal: no attention to later tokens
    result = CliRunner().invoke(app, ["explain", str(int8), "good movie plot", "--out", str(tmp_path / "g")])
    assert result.exit_code == 0, result.output
    assert "rollout Spearman vs pytorch-fp32" in result.output


@pytest.mark.parametrize("case", ["empty", "fused", "missing"])
def test_bad_input_is_one_line(tiny_run, tmp_path, case):
    target = {
        "empty": tiny_run.variants["pytorch-fp32"].path,
        "fused": tiny_run.variants["onnx-fp32-opt"].path,
        "missing": tmp_path / "nowhere",
    }[case]
    result = CliRunner().invoke(
        app, ["explain", str(target), "   " if case == "empty" else TEXT, "--out", str(tmp_path / "o")]
    )
    assert result.exit_code == 2, result.output
    message = result.output.strip()
    assert "\n" not in message and "Traceback" not in message
    assert {"empty": "empty", "fused": "no attention probabilities", "missing": "nowhere"}[case] in message


def test_a_text_too_short_to_rank_is_one_line(tiny_gpt2_run, tmp_path):
    result = CliRunner().invoke(
        app, ["explain", str(tiny_gpt2_run.variants["onnx-int8"].path), "good", "--out", str(tmp_path / "o")]
    )
    assert result.exit_code == 2 and "token(s) long" in result.output


def test_a_folder_of_other_files_is_never_written_into(tiny_run, tmp_path):
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "explain.html").write_text("my notes")
    result = CliRunner().invoke(
        app, ["explain", str(tiny_run.variants["pytorch-fp32"].path), TEXT, "--out", str(foreign)]
    )
    assert result.exit_code == 2 and "did not write" in result.output
    assert (foreign / "explain.html").read_text() == "my notes"
