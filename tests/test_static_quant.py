"""Static INT8 (QDQ): every calibrator on both task families, the mask path, bounded batches, bad input."""

from __future__ import annotations

import math

import numpy as np
import onnx
import pytest

from edgenlp import stages
from edgenlp.data import DataSpec
from edgenlp.errors import ArtifactError, DataError, RecipeError
from edgenlp.quantization import calibration, preflight
from edgenlp.runtime import CausalLM, TextClassifier


@pytest.fixture()
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGENLP_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _static(parent, workdir, data, **settings):
    stage = stages.get("quantize-static")
    return stage.run(parent, stage.Config(data=DataSpec(**data), **settings), workdir)


def _ops(path) -> dict[str, int]:
    counts: dict[str, int] = {}
    for node in onnx.load(str(path)).graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return counts


@pytest.mark.parametrize("method", calibration.CALIBRATORS)
def test_every_calibrator_quantises_bert_statically(method, tiny_run, tiny_recipe, tmp_path, private_cache):
    parent = tiny_run.variants["onnx-fp32"]
    out = _static(
        parent, tmp_path, tiny_recipe["data"], calibrator=method, calibration_samples=40, calibration_batch_size=8
    )
    meta = out.metadata
    ops = _ops(tmp_path / "model.onnx")
    assert ops["QuantizeLinear"] >= 12 and ops["DequantizeLinear"] >= 12  # 6 weight MatMuls a layer, 2 layers
    assert meta["calibration"]["samples"] == 40 and meta["calibration"]["batches"] == 5  # one batch per call
    assert meta["calibration"]["seconds"] > 0 and meta["calibration"]["peak_rss_mib"] > 0
    assert meta["calibrator"] == method and meta["per_channel"] is True and meta["preflight"]["suits"]
    fp32, int8 = TextClassifier(parent.path), TextClassifier(tmp_path)
    texts = ["great film", "awful boring mess", "a fine and lovely story", "terrible"]
    a, b = fp32.logits(fp32.tokenizer.encode(texts)), int8.logits(int8.tokenizer.encode(texts))
    assert np.abs(a - b).max() < 0.25 * max(1.0, np.abs(a).max())  # close, not equal: it is quantised


@pytest.mark.parametrize("method", calibration.CALIBRATORS)
def test_every_calibrator_quantises_gpt2_statically(method, tiny_gpt2_run, tiny_gpt2_recipe, tmp_path, private_cache):
    parent = tiny_gpt2_run.variants["onnx-fp32"]
    out = _static(
        parent, tmp_path, tiny_gpt2_recipe["data"], calibrator=method, calibration_samples=16, calibration_batch_size=4
    )
    assert out.metadata["calibration"]["samples"] == 16 and _ops(tmp_path / "model.onnx")["QuantizeLinear"] >= 8
    fp32, int8 = CausalLM(parent.path), CausalLM(tmp_path)
    ids = np.asarray([fp32.encode("the film was fine and the story lovely")], dtype=np.int64)
    a, b = fp32.step(ids, None)[0], int8.step(ids, None)[0]
    assert math.isfinite(float(b.sum())) and np.mean(a.argmax(-1) == b.argmax(-1)) >= 0.5


def test_the_mask_path_is_found_and_never_calibrated_or_quantised(tiny_run, tiny_recipe, tmp_path, private_cache):
    """With Add quantised too, the attention-mask Adds (holding -3.4e38) stay in float; Percentile runs."""
    parent = tiny_run.variants["onnx-fp32"]
    graph = onnx.load(str(parent.onnx_path))
    mask = calibration.mask_path(graph)
    score_adds = [n.name for n in graph.graph.node if n.op_type == "Add" and n.name.endswith("attention/self/Add")]
    assert score_adds and set(score_adds) <= set(mask.nodes)
    assert not any("output/dense" in n or "intermediate" in n for n in mask.nodes), "the mask must not spread"
    out = _static(
        parent,
        tmp_path,
        tiny_recipe["data"],
        calibrator="percentile",
        calibration_samples=32,
        op_types=["MatMul", "Gather", "Add"],
    )
    assert set(score_adds) <= set(out.metadata["mask_nodes_in_float"])
    quantised = onnx.load(str(tmp_path / "model.onnx")).graph
    for node in quantised.node:
        if node.name in score_adds:  # the mask operand reaches the Add untouched (no Q/DQ pair around it)
            assert any(i in mask.tensors for i in node.input), node.name
    assert not any(n.op_type == "QuantizeLinear" and n.input[0] in mask.tensors for n in quantised.node)
    fp32, int8 = TextClassifier(parent.path), TextClassifier(tmp_path)
    texts = ["great film"] * 2 + ["awful boring mess and a waste of time"] * 2  # padding: the mask is live
    assert (
        fp32.logits(fp32.tokenizer.encode(texts)).argmax(-1) == int8.logits(int8.tokenizer.encode(texts)).argmax(-1)
    ).all()


def test_ranges_are_reused_for_equal_settings(tiny_run, tiny_recipe, tmp_path, private_cache):
    parent = tiny_run.variants["onnx-fp32"]
    (tmp_path / "a").mkdir()
    first = _static(parent, tmp_path / "a", tiny_recipe["data"], calibration_samples=16)
    (tmp_path / "b").mkdir()
    second = _static(
        parent,
        tmp_path / "b",
        tiny_recipe["data"],
        calibration_samples=16,
        nodes_to_exclude=calibration.quantisable_nodes(parent.onnx_path, ["MatMul"])[:1],
    )
    assert first.metadata["calibration"]["reused"] is False and second.metadata["calibration"]["reused"] is True
    assert _ops(tmp_path / "b" / "model.onnx")["QuantizeLinear"] < _ops(tmp_path / "a" / "model.onnx")["QuantizeLinear"]


def test_bad_calibration_input_is_a_one_line_error(tiny_run, tiny_recipe, tmp_path, private_cache):
    parent = tiny_run.variants["onnx-fp32"]
    stage = stages.get("quantize-static")
    with pytest.raises(DataError, match="fewer than 8"):
        _static(parent, tmp_path, {**tiny_recipe["data"], "max_train_examples": 3}, calibration_samples=16)
    with pytest.raises(ArtifactError, match="not quantisable"):
        _static(parent, tmp_path, tiny_recipe["data"], calibration_samples=16, nodes_to_exclude=["no-such-node"])
    with pytest.raises(Exception, match="minmax"):
        stage.Config(calibrator="kl")
    from edgenlp import recipe

    bad = {
        **tiny_recipe,
        "variants": [
            *tiny_recipe["variants"],
            {"name": "s", "stage": "quantize-static", "parent": "onnx-fp32", "config": {"calibrator": "histogram"}},
        ],
    }
    with pytest.raises(RecipeError, match=r"calibrator.*'minmax', 'entropy' or 'percentile'"):
        recipe.parse(bad)
    with pytest.raises(RecipeError, match="calibration_samples"):
        recipe.parse(
            {
                **bad,
                "variants": [
                    *tiny_recipe["variants"],
                    {
                        "name": "s",
                        "stage": "quantize-static",
                        "parent": "onnx-fp32",
                        "config": {"calibration_samples": 2},
                    },
                ],
            }
        )
    with pytest.raises(DataError, match="empty"):
        calibration.check_sample_count(0, 16, "nothing")


def test_activation_settings_follow_the_instruction_set():
    stage = stages.get("quantize-static")
    x86 = stage.resolve(stage.Config(isa="avx2"))
    assert (x86.activation, x86.activation_symmetric, x86.reduce_range) == ("uint8", False, False)
    for isa in ("arm64", "arm64-dotprod"):
        arm = stage.resolve(stage.Config(isa=isa))
        assert (arm.activation, arm.activation_symmetric, arm.reduce_range, arm.per_channel) == (
            "int8",
            False,
            False,
            True,
        )
    assert stage.resolve(stage.Config(isa="avx2", activation="int8")).activation == "int8"


def test_preflight_says_what_suits_and_warns_about_what_hurts():
    avx2 = preflight.advise("avx2", reduce_range=True, activation="int8")
    assert any("reduce_range" in w for w in avx2["warnings"]) and any("int8 activations" in w for w in avx2["warnings"])
    assert avx2["vnni"] is False and any("vpmaddubsw" in s for s in avx2["suits"])
    arm = preflight.advise("arm64-dotprod", reduce_range=True, activation="uint8")
    assert any("reduce_range on arm64-dotprod" in w for w in arm["warnings"])
    assert any("uint8 activations" in w for w in arm["warnings"]) and any("per-channel" in s for s in arm["suits"])
    vnni = preflight.advise("avx512_vnni", activation="uint8")
    assert vnni["vnni"] is True and not [w for w in vnni["warnings"] if "this CPU" not in w]


def test_dynamic_per_channel_quantises_per_column(tiny_run, tmp_path):
    quantize = stages.get("quantize")
    out = quantize.run(tiny_run.variants["onnx-fp32"], quantize.Config(per_channel=True), tmp_path)
    graph = onnx.load(str(tmp_path / "model.onnx")).graph
    scales = [t for t in graph.initializer if t.name.endswith("_scale") and "MatMul" in t.name]
    assert out.metadata["per_channel"] is True and any(len(t.dims) == 1 and t.dims[0] > 1 for t in scales)


def test_preflight_command_reports_this_cpu_and_refuses_an_unknown_isa():
    from typer.testing import CliRunner

    from edgenlp.cli import app
    from edgenlp.hardware import cpu_info

    runner = CliRunner()
    ok = runner.invoke(app, ["preflight", "--isa", "avx2", "--reduce-range"])
    assert ok.exit_code == 0 and "VNNI no" in ok.output and "reduce_range on avx2" in " ".join(ok.output.split())
    here = runner.invoke(app, ["preflight"])
    assert here.exit_code == 0 and f"INT8 instruction set: {cpu_info().isa}" in here.output
    bad = runner.invoke(app, ["preflight", "--isa", "avx9"])
    assert bad.exit_code == 2 and "unknown --isa 'avx9'" in bad.output and "Traceback" not in bad.output


def test_calibration_hands_onnxruntime_one_batch_per_call(tiny_run, tiny_recipe, tmp_path, private_cache, monkeypatch):
    """onnxruntime keeps every intermediate output of one collect_data call: one batch a call bounds memory."""
    per_call = []
    real = calibration._calibrator_class

    def spying(method, keep_out):
        class Spy(real(method, keep_out)):
            def collect_data(self, reader):
                fed = []

                class Counting:
                    def get_next(self):
                        batch = reader.get_next()
                        if batch:
                            fed.append(batch)
                        return batch

                super().collect_data(Counting())
                per_call.append(len(fed))

        return Spy

    monkeypatch.setattr(calibration, "_calibrator_class", spying)
    _static(
        tiny_run.variants["onnx-fp32"],
        tmp_path,
        tiny_recipe["data"],
        calibrator="entropy",
        calibration_samples=32,
        calibration_batch_size=8,
    )
    assert per_call == [1, 1, 1, 1]
