"""Named entities (`token-classification`) through the whole path on a tiny BERT: CoNLL data, training with
each word judged by its first subword, pruning + per-token distillation, export, INT8, the harness's
entity scores against seqeval's, the report, the bundle, the torch-free runtime's spans with offsets and
the server's `/predict`; and the one-line errors of tags that are not IOB2."""

from __future__ import annotations

import json
import random
import subprocess
import sys

import pytest
from conftest import FILLER, FORBID_TORCH, NEGATIVE, POSITIVE, VOCAB
from fastapi.testclient import TestClient
from hypothesis import given, settings
from hypothesis import strategies as st

SUFFIXES = ["##s", "##ly"]
"""WordPiece continuations, so that some words are two subwords (`goods` = good + ##s)."""


def make_sentences(n: int, seed: int = 0) -> list[tuple[list[str], list[str]]]:
    """Filler words around entities: one or two positive words are a `pos` entity, a negative word a `neg`
    one; a plural (two subwords) is tagged as its word."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        words, tags = [], []
        for _ in range(rng.randint(1, 2)):
            words += rng.sample(FILLER, rng.randint(1, 3))
            tags += ["O"] * (len(words) - len(tags))
            kind = rng.choice(["pos", "neg"])
            pool = POSITIVE if kind == "pos" else NEGATIVE
            for i in range(rng.randint(1, 2) if kind == "pos" else 1):
                word = rng.choice(pool)
                words.append(word + "s" if rng.random() < 0.3 else word)
                tags.append(("B-" if i == 0 else "I-") + kind)
        words += rng.sample(FILLER, 2)
        tags += ["O", "O"]
        out.append((words, tags))
    return out


def write_conll(path, sentences) -> None:
    path.write_text("".join("".join(f"{w}\t{t}\n" for w, t in zip(*s)) + "\n" for s in sentences))


def build_tagger_bert(folder):
    """A 2-layer BERT base model whose vocabulary has two WordPiece continuations, saved in `folder`."""
    from transformers import BertConfig, BertModel, BertTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    vocab = folder / "vocab.txt"
    vocab.write_text("\n".join(VOCAB + SUFFIXES + [str(i) for i in range(10)]) + "\n")
    tokenizer = BertTokenizerFast(vocab_file=str(vocab), model_max_length=64)
    config = BertConfig(
        vocab_size=len(VOCAB) + len(SUFFIXES) + 10,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tagger_bert(tmp_path_factory):
    return build_tagger_bert(tmp_path_factory.mktemp("tiny-tagger-bert"))


@pytest.fixture(scope="module")
def conll_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("conll")
    for name, n, seed in (("train", 300, 0), ("dev", 80, 1), ("test", 60, 2)):
        write_conll(folder / f"{name}.conll", make_sentences(n, seed))
    return folder


@pytest.fixture(scope="module")
def ner_recipe(tagger_bert, conll_folder) -> dict:
    train = {"max_steps": 60, "batch_size": 16, "eval_every": 30, "learning_rate": 2e-3, "max_length": 32}
    return {
        "name": "tiny-ner",
        "model": str(tagger_bert),
        "data": {"source": str(conll_folder)},
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
            {"name": "onnx-pruned", "stage": "export", "parent": "distilled"},
            {"name": "onnx-int8-pruned", "stage": "quantize", "parent": "onnx-pruned"},
        ],
        "validation": {"examples": 16, "min_label_agreement": 0.5},
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
def ner_run(ner_recipe, tmp_path_factory):
    from edgenlp import pipeline, recipe

    return pipeline.run(recipe.parse(ner_recipe), tmp_path_factory.mktemp("ner-run"))


# -- scoring and data: no model needed ---------------------------------------------------------------

TAG = st.sampled_from(["O", "O", "B-pos", "I-pos", "B-neg", "I-neg"])


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.lists(TAG, min_size=1, max_size=8), st.lists(TAG, min_size=8, max_size=8)), max_size=12))
def test_entity_scores_are_seqeval_s(sentences):
    from seqeval.metrics import classification_report, f1_score, precision_score, recall_score

    from edgenlp.tasks.ner.scoring import entity_scores

    gold = [g for g, _ in sentences]
    predicted = [p[: len(g)] for g, p in sentences]
    ours = entity_scores(gold, predicted, ["neg", "pos"])
    if not any(t != "O" for s in gold + predicted for t in s):
        assert ours["entity_f1"] == 0.0
        return
    for key, theirs in (
        ("entity_precision", precision_score),
        ("entity_recall", recall_score),
        ("entity_f1", f1_score),
    ):
        assert ours[key] == pytest.approx(100 * theirs(gold, predicted, zero_division=0), abs=1e-9)
    report = classification_report(gold, predicted, output_dict=True, zero_division=0)
    for kind in ("neg", "pos"):
        if kind in report:
            assert ours["per_type"][kind]["f1"] == pytest.approx(100 * report[kind]["f1-score"], abs=1e-9)
            assert ours["per_type"][kind]["support"] == report[kind]["support"]


def test_conll_files_folders_and_jsonl_are_read(tmp_path, conll_folder):
    from edgenlp.tasks import get

    task = get("token-classification")
    data = task.load_data(str(conll_folder))
    assert data.describe()["sizes"] == {"train": 300, "validation": 80, "test": 60}
    assert data.labels == ["O", "B-neg", "I-neg", "B-pos", "I-pos"]
    one = tmp_path / "all.conll"
    write_conll(one, make_sentences(200))
    assert sum(task.load_data(str(one)).describe()["sizes"].values()) == 200  # split by a hash of each sentence
    rows = [
        {"tokens": w, "tags": t, "split": "train" if i % 4 else "test"} for i, (w, t) in enumerate(make_sentences(80))
    ]
    jsonl = tmp_path / "tagged.jsonl"
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in rows))
    sizes = task.load_data(str(jsonl)).describe()["sizes"]
    assert sizes["test"] == 20 and sizes["train"] + sizes["validation"] == 60  # validation carved from train
    assert task.claims_data(str(jsonl)) and task.claims_data(str(one)) and task.claims_data(str(conll_folder))
    assert task.claims_data("wnut17") and not task.claims_data(str(tmp_path / "reviews.csv"))


@pytest.mark.parametrize(
    "lines, message",
    [
        (["the\tO", "good\tI-pos"], "I-pos follows O, but in IOB2 an entity starts with B-pos"),
        (["good\tS-pos"], "tag 'S-pos' is not IOB2"),
        (["good\tpos"], "tag 'pos' is not IOB2"),
        (["good\tB-pos", "bad\tI-neg"], "I-neg follows B-pos"),
        (["good"], "is not a word and its tag"),
    ],
)
def test_tags_that_are_not_iob2_are_one_line_errors(tmp_path, lines, message):
    from edgenlp.errors import DataError
    from edgenlp.tasks import get

    path = tmp_path / "bad.conll"
    path.write_text("the\tO\n\n" + "\n".join(lines) + "\n\n")
    with pytest.raises(DataError, match=message) as caught:
        get("token-classification").load_data(str(path))
    assert "\n" not in str(caught.value) and "sentence 2" in str(caught.value) or "line" in str(caught.value)


def test_jsonl_with_tag_numbers_or_unequal_lengths_is_refused(tmp_path):
    from edgenlp.errors import DataError
    from edgenlp.tasks import get

    for row, message in (
        ({"tokens": ["good"], "tags": [1]}, "give tag names"),
        ({"tokens": ["good", "film"], "tags": ["B-pos"]}, "2 words but 1 tags"),
        ({"tokens": [], "tags": []}, "a sentence needs `tokens`"),
    ):
        path = tmp_path / "bad.jsonl"
        path.write_text(json.dumps(row) + "\n")
        with pytest.raises(DataError, match=message):
            get("token-classification").load_data(str(path))


def test_a_bare_encoder_given_tagged_words_is_made_a_tagger(tagger_bert, conll_folder):
    from edgenlp import models, pipeline, recipe

    spec = recipe.parse({"name": "t", "model": str(tagger_bert), "data": {"source": str(conll_folder)}, "variants": []})
    assert pipeline.with_task_of_data(spec, models.resolve(spec.model)).task == "token-classification"


# -- the whole path on the tiny tagger ---------------------------------------------------------------


def test_training_judges_first_subwords_and_distillation_follows_the_teacher_per_token(ner_run):
    log = json.loads((ner_run.variants["pytorch-fp32"].path / "training_log.json").read_text())
    assert log["task"] == "token-classification" and log["metric"] == "entity_f1"
    assert log["best_score"] > 40  # the negative words alone are half the entities, and learnable
    distilled = json.loads((ner_run.variants["distilled"].path / "training_log.json").read_text())
    assert {"soft_loss", "task_loss"} <= set(distilled["steps"][0])
    assert all(step["soft_loss"] < 0.5 for step in distilled["steps"])  # per-token KL, the teacher kept close
    agreement = {v["name"]: v["metrics"].get("word_agreement_with_reference") for v in ner_run.results["variants"]}
    assert agreement["distilled"] >= 0.9  # the pruned student tags nearly every word as its teacher
    config = json.loads((ner_run.variants["onnx-int8-pruned"].path / "config.json").read_text())
    assert config["id2label"]["0"] == "O" and len(config["id2label"]) == 5


def test_the_harness_scores_entities_against_gold_and_the_reference(ner_run, conll_folder):
    from edgenlp.tasks import get
    from edgenlp.tasks.ner.scoring import entity_scores
    from edgenlp.tasks.ner.session import open_tagger

    results = ner_run.results
    assert results["task"] == "token-classification" and results["eval"]["examples"] == 60
    by_name = {v["name"]: v for v in results["variants"]}
    ref, fp32, int8 = (by_name[n]["metrics"] for n in ("pytorch-fp32", "onnx-fp32", "onnx-int8"))
    assert ref["entity_f1_ci"][0] <= ref["entity_f1"] <= ref["entity_f1_ci"][1]
    assert fp32["entity_f1"] == pytest.approx(ref["entity_f1"]) and fp32["word_agreement_with_reference"] == 1.0
    lo, hi = int8["entity_f1_delta_ci"]
    assert lo <= by_name["onnx-int8"]["ratios"]["entity_f1_delta_points"] <= hi
    assert set(ref["per_type"]) == {"neg", "pos"} and set(int8["per_type_f1_delta"]) == {"neg", "pos"}
    # the figure is the test split tagged word by word, scored as seqeval scores it
    data = get("token-classification").load_data(str(conll_folder))
    tagger = open_tagger(ner_run.variants["onnx-fp32"].path, "onnx")
    predicted = [[tagger.labels[t] for t in tags] for tags in tagger.tag_words(data.test.words, batch_size=1)]
    assert entity_scores(data.test.tags, predicted, ["neg", "pos"])["entity_f1"] == pytest.approx(fp32["entity_f1"])
    report = (ner_run.out_dir / "report.md").read_text()
    assert "## Entity scores and size" in report and "## F1 per entity type" in report
    assert "F1 per entity type" in (ner_run.out_dir / "report.html").read_text()


def test_a_word_of_two_subwords_is_tagged_once_and_its_span_covers_both(ner_run):
    from edgenlp.runtime.entities import TokenTagger

    tagger = TokenTagger(ner_run.variants["onnx-fp32"].path)
    prepared = tagger.prepare(["the goods film"])
    assert tagger.tokenizer._tok.id_to_token(prepared[0].ids[3]) == "##s"  # [CLS] the good ##s film [SEP]
    probs = tagger.token_probabilities([prepared[0].encoding])[0]
    words = tagger.words(prepared[0].encoding, probs)
    assert sorted(words) == [0, 1, 2] and (words[1].start, words[1].end) == (4, 9)
    assert words[1].tag == int(probs[2].argmax())  # the first subword's tag, not the continuation's


def test_the_bundle_finds_entities_with_offsets_without_torch(ner_run, tmp_path):
    from edgenlp.bundle import build
    from edgenlp.runtime import load

    folder = build(ner_run.variants["onnx-int8"].path, tmp_path / "bundle")
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["task"] == "token-classification" and manifest["entity_types"] == ["neg", "pos"]
    assert manifest["transformers_js"]["pipeline"] == "token-classification"
    texts = ["the movie was   awful and boring", "a goods film", "the plot"]
    found = load(folder).entities(texts, batch_size=1)
    assert len(found) == 3 and found[2] == []
    for text, entities in zip(texts, found):
        for e in entities:
            assert text[e["start"] : e["end"]] == e["word"] and e["entity_group"] in ("neg", "pos")
            assert 0 < e["score"] <= 1
    script = FORBID_TORCH + (
        "from edgenlp.runtime import load\n"
        f"print(__import__('json').dumps(load({str(folder)!r}).entities({texts!r}, batch_size=1)))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert json.loads(done.stdout) == json.loads(json.dumps(found))
    with pytest.raises(Exception, match="classify\\(\\) needs a text-classification bundle"):
        load(folder).classify("good")
    lines = subprocess.run(
        [sys.executable, "-m", "edgenlp.runtime", str(folder), *texts, "--batch-size", "1"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    assert [json.loads(line)["entities"] for line in lines] == json.loads(json.dumps(found))


def test_the_server_answers_entities_in_the_inference_api_shape(ner_run, tmp_path):
    from edgenlp.bundle import build
    from edgenlp.runtime import load
    from edgenlp.serve import ServeSettings, create_app

    bundle = load(build(ner_run.variants["onnx-fp32"].path, tmp_path / "bundle"))
    texts = ["the movie was awful", "good goods fun"]
    expected = bundle.entities(texts)
    with TestClient(create_app(bundle, ServeSettings(max_client_batch_size=4))) as client:
        one = client.post("/predict", json={"inputs": texts[0]})
        assert one.status_code == 200 and [e["word"] for e in one.json()] == [e["word"] for e in expected[0]]
        assert [e["score"] for e in one.json()] == pytest.approx([e["score"] for e in expected[0]], abs=1e-6)
        many = client.post("/predict", json={"inputs": texts}).json()
        assert [[(e["entity_group"], e["start"], e["end"]) for e in a] for a in many] == [
            [(e["entity_group"], e["start"], e["end"]) for e in a] for a in expected
        ]
        for body, status in (({"inputs": ""}, 400), ({"inputs": ["a"] * 5}, 413), ({"inputs": 3}, 422)):
            bad = client.post("/predict", json=body)
            assert bad.status_code == status and set(bad.json()) == {"error", "error_type"}
        wrong = client.post("/embed", json={"inputs": "good"})
        assert wrong.status_code == 400 and "needs a feature-extraction bundle" in wrong.json()["error"]


@pytest.mark.browser
def test_the_page_marks_entities_on_the_server_and_in_the_browser(ner_run, tmp_path):
    """The web page of a tagger bundle: a sentence in, its entities out, from the server and from
    transformers.js in headless Chromium (its tokens read as words and spans as the runtime reads them)."""
    import os
    import subprocess as sp
    from pathlib import Path

    from test_serve import CHROMIUM, _free_port, _wait_ready

    from edgenlp.bundle import build
    from edgenlp.serve import default_web_assets

    if (default_web_assets() is None or not Path(CHROMIUM).exists()) and not os.environ.get("CI"):
        pytest.skip("needs Debian's chromium and transformers.js (`npm ci --ignore-scripts` in web/)")
    from playwright.sync_api import sync_playwright

    bundle_dir = build(ner_run.variants["onnx-fp32"].path, tmp_path / "bundle")
    text = "the movie was awful and boring but goods fun"
    expected = [
        f"{e['word']} ({e['entity_group']})"
        for e in __import__("edgenlp.runtime").runtime.load(bundle_dir).entities(text)[0]
    ]
    port = _free_port()
    proc = sp.Popen([sys.executable, "-m", "edgenlp.cli", "serve", str(bundle_dir), "--port", str(port)], text=True)
    try:
        _wait_ready(port, proc)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
            page = browser.new_page()
            page.goto(f"http://127.0.0.1:{port}/")
            page.wait_for_function("document.getElementById('model').textContent.includes('token-classification')")
            page.fill("#text", text)
            page.check("#in-browser")
            page.click("#run")
            page.wait_for_function("Number(document.body.dataset.done || 0) >= 1", timeout=90000)
            found = "els => els.map(e => e.dataset.entity)"
            server = page.eval_on_selector_all("#server-answer .entity", found)
            in_browser = page.eval_on_selector_all("#browser-answer .entity", found)
            assert expected and server == expected and in_browser == expected
            browser.close()
    finally:
        proc.terminate()
        proc.wait(30)


@pytest.mark.slow
def test_the_fused_graph_and_its_int8_pass_the_task_s_own_check(ner_run, ner_recipe, tmp_path):
    from conftest import check_fused_graph

    check_fused_graph(ner_run, ner_recipe, tmp_path)


def test_the_accuracy_budget_search_works_on_entity_f1(ner_recipe, tmp_path, monkeypatch):
    from conftest import check_budget_search

    monkeypatch.setenv("EDGENLP_CACHE_DIR", str(tmp_path / "cache"))
    check_budget_search(ner_recipe, tmp_path / "run")


def test_a_latency_target_prunes_a_tagger_and_keeps_it_by_entity_f1(ner_recipe, tmp_path):
    """Recovered by per-token KL."""
    from conftest import check_latency_target

    check_latency_target(ner_recipe, tmp_path, "entity_f1")


def test_openvino_tags_as_onnx_and_ctranslate2_refuses_a_tagger_in_one_line(ner_run, tmp_path):
    """OpenVINO converts the tagger's graph (its FP32 IR tags every word as the ONNX graph does); CTranslate2
    converts classifiers and decoders only, and says so."""
    from conftest import openvino_of

    from edgenlp import stages
    from edgenlp.errors import EdgeNLPError
    from edgenlp.tasks.ner.session import open_tagger

    onnx, work = openvino_of(ner_run, tmp_path, "token-classification")
    sentences = [["the", "movie", "was", "awful"], ["very", "goods", "fun", "film"]]
    assert open_tagger(work, "openvino").tag_words(sentences) == open_tagger(onnx.path, "onnx").tag_words(sentences)
    with pytest.raises(EdgeNLPError) as refused:
        stages.get("ctranslate2").run(ner_run.variants["pytorch-fp32"], stages.get("ctranslate2").Config(), tmp_path)
    assert "ForTokenClassification" in str(refused.value) and "\n" not in str(refused.value)
