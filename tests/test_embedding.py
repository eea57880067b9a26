"""Sentence embeddings (`feature-extraction`) through the whole path on a tiny BERT: pairs data, training
on scores, pruning + distillation to the teacher's vectors, export, INT8, the harness's Spearman /
cosine / retrieval figures, the report, the bundle, the torch-free runtime and the server's TEI and
OpenAI endpoints; and the one-line errors of bad pairs files and pooling files."""

from __future__ import annotations

import base64
import csv
import json
import random
import subprocess
import sys

import numpy as np
import pytest
from conftest import FILLER, FORBID_TORCH, NEGATIVE, POSITIVE
from fastapi.testclient import TestClient

PAIR_FIELDS = ["sentence1", "sentence2", "score", "split"]


def make_pairs(n: int, seed: int = 0) -> list[dict]:
    """Pairs whose score says how many sentiment words they share: learnable by a tiny model."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        words = rng.sample(POSITIVE + NEGATIVE, 3)
        a = words + rng.sample(FILLER, 3)
        shared = rng.randint(0, 3)
        b = (
            words[:shared]
            + rng.sample([w for w in POSITIVE + NEGATIVE if w not in words], 3 - shared)
            + rng.sample(FILLER, 3)
        )
        rng.shuffle(a)
        rng.shuffle(b)
        split = "test" if i % 5 == 0 else ("validation" if i % 5 == 1 else "train")
        rows.append({"sentence1": " ".join(a), "sentence2": " ".join(b), "score": 5.0 * shared / 3, "split": split})
    return rows


def write_pairs(path, rows, fields=PAIR_FIELDS):
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return path


@pytest.fixture(scope="module")
def pairs_csv(tmp_path_factory):
    return write_pairs(tmp_path_factory.mktemp("pairs") / "pairs.csv", make_pairs(400))


@pytest.fixture(scope="module")
def embedding_recipe(tiny_bert, pairs_csv) -> dict:
    train = {"max_steps": 40, "batch_size": 16, "eval_every": 20, "learning_rate": 1e-3, "max_length": 32}
    return {
        "name": "tiny-embeddings",
        "model": str(tiny_bert),
        "task": "feature-extraction",
        "data": {"source": str(pairs_csv)},
        "variants": [
            {"name": "pytorch-fp32", "stage": "finetune", "config": train},
            {
                "name": "pruned",
                "stage": "prune",
                "parent": "pytorch-fp32",
                "config": {"ratio": 0.5, "importance": "taylor", "calibration_batches": 2, "batch_size": 8},
            },
            {"name": "distilled", "stage": "distill", "parent": "pruned", "config": {**train, "alpha": 0.7}},
            {"name": "onnx-fp32", "stage": "export", "parent": "pytorch-fp32"},
            {"name": "onnx-int8", "stage": "quantize", "parent": "onnx-fp32", "config": {"per_channel": True}},
            {
                "name": "onnx-int8-static",
                "stage": "quantize-static",
                "parent": "onnx-fp32",
                "config": {"calibration_samples": 64, "op_types": ["MatMul"]},
            },
            {
                "name": "onnx-fp32-smooth",
                "stage": "smooth",
                "parent": "onnx-fp32",
                "config": {"calibration_samples": 64},
            },
            {
                "name": "onnx-int8-smooth",
                "stage": "quantize",
                "parent": "onnx-fp32-smooth",
                "config": {"per_channel": True},
            },
            {"name": "onnx-pruned", "stage": "export", "parent": "distilled"},
            {"name": "onnx-int8-pruned", "stage": "quantize", "parent": "onnx-pruned"},
        ],
        "validation": {"examples": 16},
        "bench": {
            "profiles": [{"name": "tiny-1t", "threads": 1, "seq_lengths": ["real", 16], "throughput_batch": 8}],
            "iterations": 10,
            "rounds": 2,
            "warmup": 1,
            "throughput_batches": 2,
            "bootstrap": 100,
            "reference": "pytorch-fp32",
        },
    }


@pytest.fixture(scope="module")
def embedding_run(embedding_recipe, tmp_path_factory):
    from edgenlp import pipeline, recipe

    return pipeline.run(recipe.parse(embedding_recipe), tmp_path_factory.mktemp("embedding-run"))


def test_training_on_pairs_and_distillation_to_the_teacher_s_vectors(embedding_run):
    log = json.loads((embedding_run.variants["pytorch-fp32"].path / "training_log.json").read_text())
    assert log["task"] == "feature-extraction" and log["metric"] == "spearman"
    assert log["evals"][-1]["spearman"] > log["evals"][0]["spearman"] or log["best_score"] > 50
    distilled = json.loads((embedding_run.variants["distilled"].path / "training_log.json").read_text())
    assert {"soft_loss", "task_loss"} <= set(distilled["steps"][0])  # cosine to the teacher + the pair loss
    assert distilled["steps"][-1]["soft_loss"] < distilled["steps"][0]["soft_loss"]
    pooling = json.loads((embedding_run.variants["onnx-int8-pruned"].path / "pooling.json").read_text())
    assert pooling == {"mode": "mean", "normalize": True}


def test_the_harness_measures_spearman_fidelity_and_retrieval(embedding_run):
    results = embedding_run.results
    assert results["task"] == "feature-extraction"
    by_name = {v["name"]: v for v in results["variants"]}
    ref, fp32, int8 = (
        by_name["pytorch-fp32"]["metrics"],
        by_name["onnx-fp32"]["metrics"],
        by_name["onnx-int8"]["metrics"],
    )
    assert results["eval"]["examples"] == 80 and ref["sentences"] == results["eval"]["sentences"]
    assert ref["spearman_ci"][0] <= ref["spearman"] <= ref["spearman_ci"][1]
    assert abs(fp32["spearman"] - ref["spearman"]) < 0.05  # the same model in another engine
    assert fp32["cosine_to_reference"]["min"] > 0.9999 and fp32["retrieval"]["recall_at_k"] > 0.97
    assert 0.5 < int8["cosine_to_reference"]["mean"] < 1.0
    assert sum(int8["cosine_to_reference"]["histogram"]["counts"]) == ref["sentences"]
    lo, hi = int8["spearman_delta_ci"]
    assert lo <= by_name["onnx-int8"]["ratios"]["spearman_delta_points"] <= hi
    assert by_name["onnx-int8"]["profiles"]["tiny-1t"]["throughput_seq_per_s"] > 0
    targets = {t["target"] for t in results["selection"]["by_target"]} if "by_target" in results["selection"] else set()
    report = (embedding_run.out_dir / "report.md").read_text()
    assert "## Embedding quality and size" in report and "## Cosine to the reference: distribution" in report
    assert "Spearman" in (embedding_run.out_dir / "report.html").read_text()
    del targets


def test_smoothing_moves_activation_outliers_into_the_weights_and_keeps_fp32_exact(embedding_run, embedding_recipe):
    """SmoothQuant on the exported graph: the same vectors in FP32 (validation held it to its parent), every
    weight MatMul's input evened out per channel, and an INT8 child built from it like any other."""
    import onnx

    from edgenlp.data import DataSpec
    from edgenlp.quantization import smoothing
    from edgenlp.tasks import get
    from edgenlp.tasks.embedding.validate import MIN_COSINE_FP32

    parent, smoothed = embedding_run.variants["onnx-fp32"], embedding_run.variants["onnx-fp32-smooth"]
    facts = smoothed.meta["metadata"]
    assert facts["smoothed_matmuls"] == 12 and facts["smoothed_inputs"] == 8  # 2 layers: Q/K/V share one input
    check = smoothed.meta["validation"]
    assert check["passed"] and check["required_min_cosine"] == MIN_COSINE_FP32 and check["min_cosine"] > 0.99999
    task = get("feature-extraction")
    data = task.load_data(DataSpec(**embedding_recipe["data"]))

    def spread(path, tensors):  # largest channel peak over the median one, per MatMul input
        peaks = smoothing.activation_maxima(path / "model.onnx", tensors, task.calibration_batches(data, path, 64, 16))
        return {name: float(p.max() / np.median(p)) for name, p in peaks.items()}

    inputs = list(smoothing.weight_matmuls(onnx.load(str(parent.path / "model.onnx"))))
    before = spread(parent.path, inputs)
    after = spread(smoothed.path, [name + smoothing.SUFFIX for name in inputs])
    assert all(after[name + smoothing.SUFFIX] < before[name] for name in inputs)
    by_name = {v["name"]: v for v in embedding_run.results["variants"]}
    assert by_name["onnx-int8-smooth"]["metrics"]["cosine_to_reference"]["mean"] > 0.9


def test_smoothing_refuses_a_quantised_parent_in_one_line(embedding_run, tmp_path):
    from edgenlp.errors import ArtifactError
    from edgenlp.stages import smooth

    with pytest.raises(ArtifactError, match="smooth needs an FP32 ONNX variant"):
        smooth.run(embedding_run.variants["onnx-int8"], smooth.Config(), tmp_path)


@pytest.mark.slow
def test_a_latency_target_prunes_an_embedder_and_keeps_it_by_spearman(embedding_recipe, tmp_path):
    """Recovered by cosine to the teacher."""
    from conftest import check_latency_target

    check_latency_target(embedding_recipe, tmp_path, "spearman")


def test_the_bundle_embeds_without_torch_as_the_harness_did(embedding_run, tmp_path):
    from edgenlp.bundle import build
    from edgenlp.runtime import load
    from edgenlp.tasks.embedding.validate import embed_with

    bundle_dir = build(embedding_run.variants["onnx-int8"].path, tmp_path / "bundle")
    manifest = json.loads((bundle_dir / "manifest.json").read_text())
    assert manifest["task"] == "feature-extraction" and manifest["pooling"] == {"mode": "mean", "normalize": True}
    texts = ["good fun film", "the plot was awful", "great"]
    vectors = load(bundle_dir).embed(texts, batch_size=1)
    assert vectors.shape == (3, 32) and np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    harness = embed_with(embedding_run.variants["onnx-int8"], texts)
    assert np.allclose(vectors, harness / np.linalg.norm(harness, axis=1, keepdims=True), atol=1e-5)
    script = FORBID_TORCH + (
        "from edgenlp.runtime import load\n"
        f"v = load({str(bundle_dir)!r}).embed({texts!r}, batch_size=1)\n"
        "import json; print(json.dumps(v.tolist()))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert np.allclose(np.asarray(json.loads(done.stdout)), vectors, atol=1e-6)
    with pytest.raises(Exception, match="classify\\(\\) needs a text-classification bundle"):
        load(bundle_dir).classify("good")


def test_the_server_answers_tei_and_openai_embeddings(embedding_run, tmp_path):
    from edgenlp.bundle import build
    from edgenlp.runtime import load
    from edgenlp.serve import ServeSettings, create_app

    bundle = load(build(embedding_run.variants["onnx-fp32"].path, tmp_path / "bundle"))
    expected = bundle.embed(["good fun film", "awful"])
    with TestClient(create_app(bundle, ServeSettings(max_client_batch_size=4))) as client:
        one = client.post("/embed", json={"inputs": "good fun film"})
        assert one.status_code == 200 and np.allclose(one.json()[0], expected[0], atol=1e-5)
        raw = client.post("/embed", json={"inputs": ["good fun film"], "normalize": False}).json()
        assert np.linalg.norm(raw[0]) != pytest.approx(1.0, abs=1e-3)
        assert np.allclose(np.asarray(raw[0]) / np.linalg.norm(raw[0]), expected[0], atol=1e-5)
        oa = client.post("/v1/embeddings", json={"input": ["good fun film", "awful"], "model": "x"}).json()
        assert (
            oa["object"] == "list" and [d["index"] for d in oa["data"]] == [0, 1] and oa["usage"]["prompt_tokens"] > 2
        )
        assert np.allclose(oa["data"][1]["embedding"], expected[1], atol=1e-5)
        b64 = client.post("/v1/embeddings", json={"input": "awful", "encoding_format": "base64"}).json()
        decoded = np.frombuffer(base64.b64decode(b64["data"][0]["embedding"]), dtype="<f4")
        assert np.allclose(decoded, expected[1], atol=1e-5)
        for body, status in (
            ({"inputs": ""}, 400),
            ({"inputs": ["a"] * 5}, 413),
            ({"inputs": "x", "pooling": "cls"}, 422),
        ):
            bad = client.post("/embed", json=body)
            assert bad.status_code == status and set(bad.json()) == {"error", "error_type"}
        assert client.post("/v1/embeddings", json={"input": [[1, 2, 3]]}).status_code == 422
        wrong = client.post("/predict", json={"inputs": "good"})
        assert wrong.status_code == 400 and "needs a text-classification bundle" in wrong.json()["error"]


def test_sentence_transformers_pooling_is_read_and_a_stranger_s_is_checked(tmp_path):
    from edgenlp.runtime.embedding import pooling_of
    from edgenlp.runtime.errors import BundleError

    (tmp_path / "1_Pooling").mkdir()
    (tmp_path / "modules.json").write_text(
        json.dumps(
            [
                {"idx": 0, "path": "", "type": "sentence_transformers.models.Transformer"},
                {"idx": 1, "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
            ]
        )
    )
    (tmp_path / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_cls_token": True}))
    assert pooling_of(tmp_path).as_json() == {"mode": "cls", "normalize": False}
    hidden = np.arange(2 * 3 * 2, dtype=np.float32).reshape(2, 3, 2)
    mask = np.array([[1, 1, 0], [1, 0, 0]])
    assert np.allclose(pooling_of(tmp_path).apply(hidden, mask), hidden[:, 0])
    (tmp_path / "modules.json").write_text(json.dumps([{"path": "../../etc", "type": "x.Pooling"}]))
    with pytest.raises(BundleError, match="outside the model folder"):
        pooling_of(tmp_path)
    (tmp_path / "pooling.json").write_text(json.dumps({"mode": "weighted", "normalize": True}))
    with pytest.raises(BundleError, match="mode must be one of mean, cls, max"):
        pooling_of(tmp_path)


@pytest.mark.parametrize(
    ("rows", "fields", "message"),
    [
        ([{"sentence1": "a b", "sentence2": "c d"}], ["sentence1", "sentence2"], "no label column"),
        (
            [{"sentence1": "a b", "sentence2": "c d", "score": "high"}],
            ["sentence1", "sentence2", "score"],
            "score 'high' is not a number",
        ),
        (
            [{"sentence1": "a b", "sentence2": "", "score": 1}],
            ["sentence1", "sentence2", "score"],
            "a pair needs two sentences",
        ),
        ([{"sentence1": "a", "score": 1}], ["sentence1", "score"], "no pair column"),
    ],
)
def test_pairs_without_a_score_or_a_second_sentence_are_one_line_errors(tmp_path, rows, fields, message):
    from edgenlp.errors import DataError
    from edgenlp.tasks.embedding.data import load_data

    path = write_pairs(tmp_path / "bad.csv", rows, fields)
    with pytest.raises(DataError, match=message) as caught:
        load_data(str(path))
    assert "\n" not in str(caught.value)


def test_the_cli_refuses_bad_pairs_in_one_line(tmp_path, embedding_recipe):
    import yaml
    from typer.testing import CliRunner

    from edgenlp.cli import app

    path = write_pairs(
        tmp_path / "bad.csv",
        [{"sentence1": "a b", "sentence2": "c", "score": "x"}],
        ["sentence1", "sentence2", "score"],
    )
    recipe_file = tmp_path / "recipe.yaml"
    recipe_file.write_text(yaml.safe_dump({**embedding_recipe, "data": {"source": str(path)}}))
    done = CliRunner().invoke(app, ["optimize", "--recipe", str(recipe_file), "--out", str(tmp_path / "r")])
    assert done.exit_code == 2 and "score 'x' is not a number" in done.output and "Traceback" not in done.output


@pytest.mark.real
def test_sts_b_from_the_kit_keeps_its_three_files_apart():
    from edgenlp.tasks.embedding.data import load_data

    data = load_data("sts-b")
    assert (len(data.train), len(data.validation), len(data.test)) == (5749, 1500, 1379)
    assert data.test.first[0] == "A girl is styling her hair." and data.test.scores[0] == 2.5


@pytest.mark.browser
def test_the_page_compares_sentences_on_the_server_and_in_the_browser(embedding_run, tmp_path):
    """The web page of an embedding bundle: lines in, the first line's cosine to each other line out, from
    the server and from transformers.js in headless Chromium, ranked the same."""
    import os
    import subprocess as sp
    from pathlib import Path

    from test_serve import CHROMIUM, _free_port, _wait_ready

    from edgenlp.bundle import build
    from edgenlp.serve import default_web_assets

    if (default_web_assets() is None or not Path(CHROMIUM).exists()) and not os.environ.get("CI"):
        pytest.skip("needs Debian's chromium and transformers.js (`npm ci --ignore-scripts` in web/)")
    from playwright.sync_api import sync_playwright

    bundle_dir = build(embedding_run.variants["onnx-fp32"].path, tmp_path / "bundle")
    port = _free_port()
    proc = sp.Popen([sys.executable, "-m", "edgenlp.cli", "serve", str(bundle_dir), "--port", str(port)], text=True)
    try:
        _wait_ready(port, proc)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
            page = browser.new_page()
            page.goto(f"http://127.0.0.1:{port}/")
            page.wait_for_function("document.getElementById('model').textContent.includes('feature-extraction')")
            page.fill("#text", "good fun film\ngreat fun movie\nawful boring plot\nthe film was fun")
            page.check("#in-browser")
            page.click("#run")
            page.wait_for_selector("#server-answer .bar.top", timeout=30000)
            page.wait_for_selector("#browser-answer .bar.top", timeout=60000)
            order = "els => els.map(e => e.dataset.label)"
            server = page.eval_on_selector_all("#server-answer .bar", order)
            in_browser = page.eval_on_selector_all("#browser-answer .bar", order)
            assert len(server) == 3 and server == in_browser
            browser.close()
    finally:
        proc.terminate()
        proc.wait(30)


def test_pairs_data_make_a_bare_encoder_an_embedding_model(tiny_bert, pairs_csv, tmp_path):
    """No --task: sentence pairs (sts-b, or a file with a second-sentence column) give a bare encoder the
    feature-extraction task; labelled texts keep it a classifier."""
    from conftest import make_rows

    from edgenlp import models, pipeline, recipe
    from edgenlp.tasks.embedding.data import claims_data

    source = models.resolve(str(tiny_bert))
    for data in ({"source": str(pairs_csv)}, {"source": "sts-b"}):
        spec = recipe.parse({"name": "x", "model": str(tiny_bert), "data": data, "variants": []})
        assert pipeline.with_task_of_data(spec, source).task == "feature-extraction"
    labelled = tmp_path / "labelled.jsonl"
    labelled.write_text("\n".join(json.dumps({"text": r["review"], "label": r["sentiment"]}) for r in make_rows(4)))
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(json.dumps({"sentence1": "a", "sentence2": "b", "score": 1}) + "\n")
    assert claims_data(str(pairs)) and not claims_data(str(labelled)) and not claims_data("tweets")
    spec = recipe.parse({"name": "x", "model": str(tiny_bert), "data": {"source": str(labelled)}, "variants": []})
    assert pipeline.with_task_of_data(spec, source).task is None  # resolved later: a classifier to train


def test_the_fused_graph_and_its_int8_pass_the_task_s_own_check(embedding_run, embedding_recipe, tmp_path):
    from conftest import check_fused_graph

    check_fused_graph(embedding_run, embedding_recipe, tmp_path)


def test_the_accuracy_budget_search_works_on_spearman(embedding_recipe, tmp_path, monkeypatch):
    from conftest import check_budget_search

    monkeypatch.setenv("EDGENLP_CACHE_DIR", str(tmp_path / "cache"))
    check_budget_search(embedding_recipe, tmp_path / "run")


def test_ctranslate2_refuses_an_embedding_model_in_one_line(embedding_run):
    from edgenlp.errors import EngineError
    from edgenlp.stages.ctranslate2 import check_convertible

    with pytest.raises(EngineError, match="its architecture is BertModel") as caught:
        check_convertible(embedding_run.variants["pytorch-fp32"])
    assert "\n" not in str(caught.value)


def test_openvino_embeds_as_onnx_does(embedding_run, tmp_path):
    """OpenVINO converts the embedder's graph: its FP32 IR gives the ONNX graph's sentence vectors."""
    from conftest import openvino_of

    from edgenlp.tasks.embedding.session import open_embedder

    onnx, work = openvino_of(embedding_run, tmp_path, "feature-extraction")
    texts = ["good fun film", "awful boring plot, really awful"]
    ours, theirs = (
        open_embedder(path, runner).embed(texts) for path, runner in ((work, "openvino"), (onnx.path, "onnx"))
    )
    cos = (ours * theirs).sum(1) / np.linalg.norm(ours, axis=1) / np.linalg.norm(theirs, axis=1)
    assert ours.shape == theirs.shape and cos.min() > 0.9999


def test_hub_pairs_keep_their_splits_and_get_a_validation_split(monkeypatch):
    """A hub dataset's splits are kept (dev is validation); one without validation has it carved from train."""
    from edgenlp.tasks.embedding import data

    rows = {
        "train": [
            {"sentence1": f"a dog runs {i}", "sentence2": f"a dog is running {i}", "score": i % 6} for i in range(200)
        ],
        "test": [{"sentence1": "a cat", "sentence2": "a kitten", "score": 4.2}],
    }
    monkeypatch.setattr(data, "hub_dataset", lambda name: rows)
    pairs = data.load_data("hub:someone/sts")
    assert len(pairs.test) == 1 and pairs.test.scores == [4.2]
    assert len(pairs.train) + len(pairs.validation) == 200 and 5 <= len(pairs.validation) <= 40
    assert not set(pairs.train.first) & set(pairs.validation.first)


def test_a_bundle_checked_on_another_machine_is_judged_by_the_cosine_of_its_vectors(embedding_run, tmp_path):
    """`runtime.check`'s probe of an embedding bundle, compared as the target check compares it: the same vectors
    pass, vectors turned away on one sentence fail."""
    from edgenlp.bundle import build
    from edgenlp.runtime import load
    from edgenlp.runtime.check import probe
    from edgenlp.tasks.embedding.bundle import MIN_TARGET_COSINE, compare_target_answers

    bundle = load(build(embedding_run.variants["onnx-int8"].path, tmp_path / "bundle"))
    here = probe(bundle, ["good fun film", "awful boring plot", "great"])
    assert len(here["embeddings"]) == 3 and compare_target_answers(here, here)["passed"]
    turned = {"embeddings": [list(v) for v in here["embeddings"]]}
    turned["embeddings"][1] = [-x for x in turned["embeddings"][1]]
    verdict = compare_target_answers(here, turned)
    assert not verdict["passed"] and verdict["min_cosine"] < MIN_TARGET_COSINE and "3 sentences" in verdict["summary"]
