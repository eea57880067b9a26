"""OpenVINO and CTranslate2 variants beside onnxruntime: built, validated, measured, selected, bundled."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from edgenlp import pipeline, recipe
from edgenlp.artifact import Artifact
from edgenlp.errors import DataError, EngineError, EngineMissing, VariantsSkipped
from edgenlp.runtime import engines

ENGINE_VARIANTS = [
    {"name": "openvino-fp32", "stage": "openvino", "parent": "onnx-fp32"},
    {
        "name": "openvino-int8",
        "stage": "openvino",
        "parent": "onnx-fp32",
        "config": {"precision": "int8", "calibration_samples": 32},
    },
    {"name": "ctranslate2-int8", "stage": "ctranslate2", "parent": "pytorch-fp32"},
    {
        "name": "ctranslate2-fp32",
        "stage": "ctranslate2",
        "parent": "pytorch-fp32",
        "config": {"compute_type": "float32"},
    },
]
ONLY_ENGINE = """
import importlib.abc, json, sys

class Forbid(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {forbidden!r}:
            raise ImportError(f"{{name}} must not be imported")
        return None

sys.meta_path.insert(0, Forbid())
from edgenlp.runtime import load
bundle = load(sys.argv[1])
{body}
"""
ALL_BUT = {
    "openvino": ("torch", "transformers", "optimum", "onnxruntime", "ctranslate2"),
    "ctranslate2": ("torch", "transformers", "optimum", "onnxruntime", "openvino"),
}


def _with_tiny_variants(run, out: Path) -> None:
    shutil.copytree(run.out_dir / "variants", out / "variants")


@pytest.fixture(scope="module")
def engine_run(tiny_recipe, tiny_run, tmp_path_factory):
    """The tiny classifier's run plus one variant per engine setting, and one the ctranslate2 stage must refuse."""
    out = tmp_path_factory.mktemp("engines")
    _with_tiny_variants(tiny_run, out)
    spec = json.loads(json.dumps(tiny_recipe))
    spec["variants"] = [v for v in spec["variants"] if v["name"] != "onnx-fp32-opt"]  # keeps the suite short
    spec["variants"] += ENGINE_VARIANTS + [
        {"name": "ctranslate2-from-onnx", "stage": "ctranslate2", "parent": "onnx-fp32"}
    ]
    with pytest.raises(VariantsSkipped) as failed:
        pipeline.run(recipe.parse(spec), out)
    return out, str(failed.value), json.loads((out / "results.json").read_text())


def test_engine_variants_are_validated_against_their_parent(engine_run):
    out, _, _ = engine_run
    for name in ("openvino-fp32", "openvino-int8", "ctranslate2-int8", "ctranslate2-fp32"):
        art = Artifact.load(out / "variants" / name)
        assert art.format == name.split("-")[0]
        assert art.meta["validation"]["passed"], name
        assert art.verify()
    assert Artifact.load(out / "variants" / "openvino-fp32").meta["validation"]["max_abs_logit_diff"] < 1e-4
    assert Artifact.load(out / "variants" / "ctranslate2-fp32").meta["validation"]["max_abs_logit_diff"] < 1e-4
    assert (
        Artifact.load(out / "variants" / "openvino-int8").meta["metadata"]["quantization"]["calibration"]["samples"]
        == 32
    )
    assert Artifact.load(out / "variants" / "ctranslate2-int8").precision == "int8"
    assert (out / "variants" / "ctranslate2-int8" / "ctranslate2" / "classifier.npz").is_file()


def test_a_refused_engine_variant_is_skipped_and_the_others_measured(engine_run):
    out, message, results = engine_run
    assert "\n" not in message
    assert "variant ctranslate2-from-onnx was not built" in message and "PyTorch checkpoint" in message
    assert "ctranslate2-from-onnx" in results["skipped"]
    measured = {v["name"] for v in results["variants"]}
    assert {"openvino-int8", "ctranslate2-int8", "onnx-int8-dynamic"} <= measured
    assert not (out / "variants" / "ctranslate2-from-onnx").exists()
    assert not [p for p in (out / "variants").iterdir() if p.name.startswith(".")]


def test_every_engine_is_measured_and_selection_names_one_per_target(engine_run):
    out, _, results = engine_run
    by_name = {v["name"]: v for v in results["variants"]}
    for name in ("openvino-int8", "ctranslate2-int8"):
        assert by_name[name]["format"] == name.split("-")[0]
        for shape in ("real", "len32"):
            assert by_name[name]["latency_ms"]["tiny-1t"][shape]["p50"] > 0
        assert by_name[name]["size_bytes"] > 0
    targets = results["selection"]["by_target"]
    assert [t["target"] for t in targets] == ["real lengths", "32 tokens"]
    for t in targets:
        assert {"onnx", "openvino", "ctranslate2", "pytorch"} <= set(t["by_engine"])
        fastest = min(t["by_engine"].values(), key=lambda b: b["value"])
        assert t["selected"] == fastest["variant"] and t["value"] == fastest["value"]
        assert t["engine"] == by_name[t["selected"]]["format"]
        assert t["selected"] in t["why"]
    report = (out / "report.md").read_text()
    assert "## Which engine to ship" in report and "`ctranslate2-from-onnx` was not built" in report
    assert "Which engine to ship" in (out / "report.html").read_text()


@pytest.mark.parametrize("name", ["openvino-int8", "ctranslate2-int8"])
def test_a_bundle_per_engine_loads_with_only_that_engine(engine_run, tmp_path, name):
    from edgenlp import bundle
    from edgenlp.bench.runners import open_runner
    from edgenlp.runtime import TextTokenizer

    out, _, _ = engine_run
    engine = name.split("-")[0]
    folder = bundle.build(out / "variants" / name, tmp_path / "bundle")
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["engine"] == engine and manifest["model"]["engine"] == engine
    assert manifest["model"]["file"].startswith(engine)
    assert manifest["benchmark"]["accuracy"] is not None
    assert engine in manifest and "onnxruntime" not in manifest
    texts = ["the movie was great fun", "awful boring plot", "quite a film"]
    body = (
        "print(json.dumps({'engine': bundle.engine, 'labels': [a['label'] for a in bundle.classify("
        + repr(texts)
        + ", batch_size=1)], 'loaded': sorted(m for m in sys.modules if m.split('.')[0] in "
        "('onnxruntime', 'openvino', 'ctranslate2', 'torch'))}))"
    )
    script = ONLY_ENGINE.format(forbidden=ALL_BUT[engine], body=body)
    done = subprocess.run([sys.executable, "-c", script, str(folder)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    answer = json.loads(done.stdout.strip().splitlines()[-1])
    assert answer["engine"] == engine
    assert {m.split(".")[0] for m in answer["loaded"]} == {engine}
    # the bundle answers as the variant did when the harness measured it
    runner = open_runner(out / "variants" / name, engine, threads=1)
    tok = TextTokenizer(out / "variants" / name)
    labels = Artifact.load(out / "variants" / name).labels()
    assert answer["labels"] == [labels[int(runner.logits(tok.encode([t]))[0].argmax())] for t in texts]


def test_bundle_targets_are_refused_for_engine_variants(engine_run, tmp_path):
    from edgenlp import bundle
    from edgenlp.errors import ArtifactError

    out, _, _ = engine_run
    with pytest.raises(ArtifactError, match="transform an ONNX graph"):
        bundle.build(out / "variants" / "openvino-int8", tmp_path / "b", targets=["ort"])


# -- bad input ----------------------------------------------------------------------------------------


def test_an_engine_not_installed_is_named_with_its_extra(engine_run, tiny_recipe, tmp_path, monkeypatch):
    from edgenlp.cli import app

    out, _, _ = engine_run
    monkeypatch.setattr(engines.Engine, "installed", lambda self: self.name != "openvino")
    run_dir = tmp_path / "run"
    shutil.copytree(
        out / "variants", run_dir / "variants", ignore=shutil.ignore_patterns("openvino-*", "ctranslate2-from-onnx")
    )
    spec = json.loads(json.dumps(tiny_recipe))
    spec["variants"] += [ENGINE_VARIANTS[1], ENGINE_VARIANTS[2]]
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(spec))
    result = CliRunner().invoke(app, ["optimize", "--recipe", str(path), "--out", str(run_dir), "--no-bench"])
    assert result.exit_code == 2, result.output
    text = " ".join(result.output.split())
    assert "Traceback" not in result.output
    assert "variant openvino-int8 was not built" in text and "pip install 'edgenlp[openvino]'" in text
    assert Artifact.load(run_dir / "variants" / "ctranslate2-int8").format == "ctranslate2"  # the rest were built
    with pytest.raises(EngineMissing, match=r"edgenlp\[openvino\]"):
        engines.open_encoder("openvino", out / "variants" / "openvino-int8")


def test_a_bundle_whose_engine_is_missing_says_so(engine_run, tmp_path, monkeypatch):
    from edgenlp import bundle
    from edgenlp.runtime import load

    out, _, _ = engine_run
    folder = bundle.build(out / "variants" / "ctranslate2-int8", tmp_path / "bundle")
    monkeypatch.setattr(engines.Engine, "installed", lambda self: self.name != "ctranslate2")
    with pytest.raises(EngineMissing, match=r"bundle .* needs the ctranslate2 engine.*edgenlp\[ctranslate2\]"):
        load(folder)


def test_a_calibration_set_too_small_is_refused(engine_run, tmp_path):
    from edgenlp.data import DataSpec
    from edgenlp.stages import openvino

    out, _, _ = engine_run
    small = tmp_path / "small.csv"
    small.write_text("review,sentiment\n" + "".join(f"good film {i},pos\nbad film {i},neg\n" for i in range(5)))
    config = openvino.Config(
        precision="int8", data=DataSpec(source=str(small), text_column="review", label_column="sentiment")
    )
    work = tmp_path / "work"
    work.mkdir()
    with pytest.raises(DataError, match="calibration set has .* fewer than"):
        openvino.run(Artifact.load(out / "variants" / "onnx-fp32"), config, work)


def test_ctranslate2_names_the_pruned_layer_it_cannot_convert(tmp_path):
    from edgenlp.stages import ctranslate2

    config = {
        "architectures": ["PrunedBertForSequenceClassification"],
        "model_type": "edgenlp-pruned-bert",
        "num_attention_heads": 4,
        "hidden_size": 32,
        "intermediate_size": 64,
        "layer_heads": [4, 2],
        "layer_intermediate_sizes": [64, 40],
        "attention_head_size": 8,
    }
    (tmp_path / "config.json").write_text(json.dumps(config))
    art = Artifact(tmp_path, {"format": "pytorch", "name": "recovered-0.5"})
    with pytest.raises(EngineError, match="layer 1 keeps 2 of 4 attention heads"):
        ctranslate2.check_convertible(art)


def test_openvino_names_the_operator_it_cannot_convert(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    from edgenlp.stages import openvino

    node = helper.make_node("Frobnicate", ["x"], ["y"], domain="com.example")
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.example", 1)])
    onnx.save(model, str(tmp_path / "model.onnx"))
    art = Artifact(tmp_path, {"format": "onnx", "precision": "fp32", "name": "odd"})
    with pytest.raises(EngineError, match="OpenVINO cannot convert model.onnx: .*com.example.Frobnicate") as refused:
        openvino.convert(art)
    assert "\n" not in str(refused.value)


# -- GPT-2 ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def gpt2_engine_run(tiny_gpt2_recipe, tiny_gpt2_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("gpt2-engines")
    _with_tiny_variants(tiny_gpt2_run, out)
    spec = json.loads(json.dumps(tiny_gpt2_recipe))
    # the engines' variants and their parents only: keeps the suite short
    spec["variants"] = [v for v in spec["variants"] if v["name"] in ("pytorch-fp32", "onnx-fp32")]
    spec["bench"].update(max_eval_tokens=256, eval_prompts=2)
    spec["variants"] += [
        {"name": "openvino-fp32", "stage": "openvino", "parent": "onnx-fp32"},
        {"name": "openvino-int8", "stage": "openvino", "parent": "onnx-fp32", "config": {"precision": "int8"}},
        {"name": "ctranslate2-int8", "stage": "ctranslate2", "parent": "pytorch-fp32"},
    ]
    return pipeline.run(recipe.parse(spec), out)


def test_generator_variants_on_every_engine_are_validated_and_measured(gpt2_engine_run):
    results = gpt2_engine_run.results
    by_name = {v["name"]: v for v in results["variants"]}
    for name in ("openvino-fp32", "openvino-int8", "ctranslate2-int8"):
        art = gpt2_engine_run.variants[name]
        assert art.meta["validation"]["cache_agrees"], name
        v = by_name[name]
        assert v["format"] == name.split("-")[0]
        assert v["metrics"]["perplexity"] > 0 and v["metrics"]["top1_agreement"] >= 0.5
        assert v["latency_ms"]["gen-1t"]["ttft"]["p50"] > 0 and v["profiles"]["gen-1t"]["tokens_per_s"] > 0
    assert gpt2_engine_run.variants["openvino-fp32"].meta["validation"]["greedy_identical"] == 1.0
    assert (
        gpt2_engine_run.variants["openvino-int8"].meta["metadata"]["quantization"]["method"] == "nncf.compress_weights"
    )
    targets = results["selection"]["by_target"]
    assert [t["target"] for t in targets] == ["decode", "first token"]
    assert all({"onnx", "openvino", "ctranslate2"} <= set(t["by_engine"]) for t in targets)


@pytest.mark.parametrize("name", ["openvino-int8", "ctranslate2-int8"])
def test_a_generator_bundle_per_engine_continues_as_its_variant(gpt2_engine_run, tmp_path, name):
    from edgenlp import bundle
    from edgenlp.bench.runners import open_causal_runner
    from edgenlp.runtime.generation import Sampling

    engine = name.split("-")[0]
    variant = gpt2_engine_run.variants[name]
    folder = bundle.build(variant.path, tmp_path / "bundle")
    body = (
        "g = bundle.generate('the movie was', max_new_tokens=8, temperature=0)\n"
        "s = bundle.generate('the movie was', max_new_tokens=8, temperature=0.8, top_k=5, seed=3)\n"
        "print(json.dumps({'ids': g.token_ids, 'sampled': len(s.token_ids), 'stream': ''.join(bundle.stream("
        "'the movie was', max_new_tokens=4))}))"
    )
    script = ONLY_ENGINE.format(forbidden=ALL_BUT[engine], body=body)
    done = subprocess.run([sys.executable, "-c", script, str(folder)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    answer = json.loads(done.stdout.strip().splitlines()[-1])
    model = open_causal_runner(variant.path, engine, threads=1)
    expected = model.generate("the movie was", max_new_tokens=8, sampling=Sampling()).token_ids
    assert answer["ids"] == expected and len(expected) > 0
    assert answer["sampled"] > 0 and answer["stream"]
    # CTranslate2's own decoding loop (greedy) picks the tokens edgenlp's loop over its `step` picks
    if engine == "ctranslate2":
        assert list(model.token_stream(model.encode("the movie was"), 8, Sampling(), use_cache=False)) == expected


def test_ctranslate2_generator_times_exactly_the_asked_tokens(gpt2_engine_run):
    from edgenlp.runtime.ctranslate2_engine import Generator

    model = Generator(gpt2_engine_run.variants["ctranslate2-int8"].path)
    first, rest = model.timed_generation(model.encode("the movie was"), 12)
    assert first > 0 and len(rest) == 11 and all(t >= 0 for t in rest)
    logits, past = model.step(np.asarray([model.encode("the movie")], dtype=np.int64), None)
    assert logits.shape[1] == len(model.encode("the movie")) and np.allclose(np.exp(logits[0, -1]).sum(), 1, atol=1e-3)


def test_the_server_answers_with_an_engine_bundle_and_says_the_page_cannot(engine_run, tmp_path):
    from fastapi.testclient import TestClient

    from edgenlp import bundle
    from edgenlp.runtime import load
    from edgenlp.serve import ServeSettings, create_app

    out, _, _ = engine_run
    folder = bundle.build(out / "variants" / "openvino-int8", tmp_path / "bundle")
    with TestClient(create_app(load(folder), ServeSettings(web_assets=tmp_path))) as client:
        info = client.get("/info").json()
        assert info["manifest"]["engine"] == "openvino"
        assert info["browser"] is False and "openvino" in info["browser_note"]
        answer = client.post("/predict", json={"inputs": ["good fun film", "awful plot"]})
        assert answer.status_code == 200, answer.text
        assert [sorted(x["label"] for x in ranked) for ranked in answer.json()] == [["neg", "pos"]] * 2


def test_an_engine_bundle_does_not_claim_an_instruction_set(engine_run, tmp_path):
    from edgenlp import bundle

    out, _, _ = engine_run
    manifest = json.loads(
        (bundle.build(out / "variants" / "ctranslate2-int8", tmp_path / "b") / "manifest.json").read_text()
    )
    assert manifest["isa"]["tuned_for"] is None and "ctranslate2 picks" in manifest["isa"]["note"]
