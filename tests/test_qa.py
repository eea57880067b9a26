"""Extractive question answering (`question-answering`) through the whole path on a tiny BERT: SQuAD-format
data carved by article, training on windows of the context, pruning + start/end distillation, export, INT8,
the harness's exact match and F1 against SQuAD's official scoring, the report, the bundle, the torch-free
runtime's `.answer()` and the server's `/predict`; and the one-line errors of bad answers and long questions."""

from __future__ import annotations

import json
import random
import subprocess
import sys

import pytest
from conftest import FILLER, FORBID_TORCH, NEGATIVE, POSITIVE
from fastapi.testclient import TestClient

PLAIN = [w for w in FILLER if w not in ("very", "quite")]
QUESTIONS = ["what was very good", "what was really very good", "the very good one"]


def make_squad(articles: int, seed: int = 0) -> dict:
    """Paragraphs of filler and negative words with two positive words, one of them after `very`: that one
    answers every question. Every fourth paragraph is long, so that it is read in several windows."""
    rng = random.Random(seed)
    data = []
    for a in range(articles):
        paragraphs = []
        for p in range(4):
            words = rng.sample(PLAIN, rng.randint(3, 6)) + rng.sample(NEGATIVE, 2)
            if p == 3:
                words += [rng.choice(PLAIN) for _ in range(70)]
            rng.shuffle(words)
            answer, other = rng.sample(POSITIVE, 2)
            words.insert(rng.randint(0, len(words)), "quite " + other)
            at = rng.randint(0, len(words))
            words.insert(at, "very " + answer)
            context = " ".join(words)
            char = context.index("very " + answer) + len("very ")
            qas = [
                {"id": f"{a}-{p}-{k}", "question": q, "answers": [{"text": answer, "answer_start": char}]}
                for k, q in enumerate(rng.sample(QUESTIONS, 2))
            ]
            paragraphs.append({"context": context, "qas": qas})
        data.append({"title": f"article {a}", "paragraphs": paragraphs})
    return {"version": "1.1", "data": data}


@pytest.fixture(scope="module")
def squad_json(tmp_path_factory):
    path = tmp_path_factory.mktemp("squad") / "squad.json"
    path.write_text(json.dumps(make_squad(60)))
    return path


@pytest.fixture(scope="module")
def qa_recipe(tiny_bert, squad_json) -> dict:
    train = {"max_steps": 240, "batch_size": 16, "eval_every": 80, "learning_rate": 2e-3, "max_length": 64}
    return {
        "name": "tiny-qa",
        "model": str(tiny_bert),
        "data": {"source": str(squad_json), "validation_fraction": 0.15, "test_fraction": 0.2},
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
            "profiles": [{"name": "tiny-1t", "threads": 1, "seq_lengths": ["real", 32]}],
            "iterations": 10,
            "rounds": 2,
            "warmup": 1,
            "throughput_batches": 2,
            "bootstrap": 100,
            "reference": "pytorch-fp32",
        },
    }


@pytest.fixture(scope="module")
def qa_run(qa_recipe, tmp_path_factory):
    from edgenlp import pipeline, recipe

    return pipeline.run(recipe.parse(qa_recipe), tmp_path_factory.mktemp("qa-run"))


# -- scoring and data: no model needed ---------------------------------------------------------------


@pytest.mark.parametrize(
    "prediction, truth, em, f1",
    [
        ("the Denver Broncos", "Denver Broncos", 1.0, 1.0),  # articles go
        ("Denver Broncos!", "denver broncos", 1.0, 1.0),  # case and punctuation go
        ("Broncos", "Denver Broncos", 0.0, 2 / 3),  # precision 1, recall 1/2
        ("in 1990 and 1991", "1990", 0.0, 0.4),  # precision 1/4, recall 1
        ("", "Denver", 0.0, 0.0),
    ],
)
def test_exact_match_and_f1_are_squad_s_official_ones(prediction, truth, em, f1):
    from edgenlp.tasks.qa.scoring import squad_scores

    found = squad_scores([prediction], [[truth, "something else entirely"]])
    assert found["exact_match"] == pytest.approx(100 * em) and found["f1"] == pytest.approx(100 * f1)


def test_squad_files_are_carved_by_article_and_bad_answers_refused(tmp_path, squad_json):
    from edgenlp.errors import DataError
    from edgenlp.tasks import get

    task = get("question-answering")
    data = task.load_data(str(squad_json))
    articles = {name: {q.article for q in getattr(data, name)} for name in ("train", "validation", "test")}
    assert not (articles["train"] & articles["test"]) and not (articles["train"] & articles["validation"])
    assert sum(data.describe()["sizes"].values()) == 60 * 4 * 2 and task.claims_data(str(squad_json))
    assert task.claims_data("squad11") and not task.claims_data(str(tmp_path / "x.csv"))
    bad = make_squad(2)
    bad["data"][0]["paragraphs"][0]["qas"][0]["answers"][0]["answer_start"] += 1
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(bad))
    with pytest.raises(DataError, match="is not the context's text at") as caught:
        task.load_data(str(path))
    assert "\n" not in str(caught.value) and "article 0 paragraph 0 question 0" in str(caught.value)
    bad["data"][0]["paragraphs"][0]["qas"][0]["answers"] = []
    path.write_text(json.dumps(bad))
    with pytest.raises(DataError, match="no answers"):
        task.load_data(str(path))


def test_the_kit_s_squad_is_carved_by_article_and_says_the_scores_are_not_official(tmp_path):
    from edgenlp.tasks import get
    from edgenlp.tasks.qa.measure import eval_section

    try:
        data = get("question-answering").load_data("squad11")
    except Exception as exc:  # the kit is optional for unit tests
        pytest.skip(str(exc))
    assert data.describe()["articles"] == {"train": 32, "validation": 7, "test": 9}
    assert "not comparable with official SQuAD dev results" in data.notes[0]
    payload = {"name": "squad11/test", "questions": [{}]}
    section = eval_section(
        payload, {"eval": {"windows": [1]}, "profiles": {"p": {"process": {"mean_tokens": 9}}}}, [_P()]
    )
    assert "not comparable" in section["note"]


class _P:
    name = "p"


# -- the whole path on the tiny reader ---------------------------------------------------------------


def test_training_on_windows_and_start_end_distillation(qa_run):
    log = json.loads((qa_run.variants["pytorch-fp32"].path / "training_log.json").read_text())
    assert log["task"] == "question-answering" and log["metric"] == "f1"
    assert log["best_score"] > 20  # the word after "very" is learnable; chance is far lower
    distilled = json.loads((qa_run.variants["distilled"].path / "training_log.json").read_text())
    assert {"soft_loss", "task_loss"} <= set(distilled["steps"][0])
    soft = [step["soft_loss"] for step in distilled["steps"]]
    assert all(0 <= s < 1.0 for s in soft)  # start/end KL: the pruned reader stays close to its teacher


def test_a_reader_trained_in_short_windows_trains_on_in_longer_ones_up_to_its_positions(qa_run, squad_json, tmp_path):
    """A reader's tokenizer says the window it was last trained in; training it on asks for longer windows
    (recipes/minilm-squad-384.yaml: 256 -> 384), capped by the model's positions, and saves the new window."""
    import shutil

    from edgenlp.stages.finetune import Config
    from edgenlp.tasks import get
    from edgenlp.tasks.qa.train import Trainer

    reader = tmp_path / "reader"
    shutil.copytree(qa_run.variants["pytorch-fp32"].path, reader)
    settings = json.loads((reader / "tokenizer_config.json").read_text())
    (reader / "tokenizer_config.json").write_text(json.dumps({**settings, "model_max_length": 32}))
    data = get("question-answering").load_data(str(squad_json))
    longer = Trainer(reader, data, Config(max_length=48, max_eval_examples=8))
    assert longer.max_length == 48 and max(len(r["input_ids"]) for r in longer.train_rows) == 48
    longer.save(tmp_path / "saved")
    assert json.loads((tmp_path / "saved" / "tokenizer_config.json").read_text())["model_max_length"] == 48
    assert Trainer(reader, data, Config(max_length=512, max_eval_examples=8)).max_length == 64  # tiny_bert's positions


def test_start_end_distillation_pulls_a_student_to_its_teacher(tiny_bert):
    """The distill stage's soft term for readers: zero against the teacher itself, and descending it moves
    another reader's start and end distributions towards the teacher's on real windows."""
    import torch
    from transformers import AutoModelForQuestionAnswering, AutoTokenizer

    from edgenlp.tasks.qa.train import Trainer

    torch.manual_seed(0)
    teacher = AutoModelForQuestionAnswering.from_pretrained(tiny_bert).eval()
    student = AutoModelForQuestionAnswering.from_pretrained(tiny_bert).train()  # a fresh span head: another reader
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert)
    pairs = [(q["question"], p["context"]) for p in make_squad(1)["data"][0]["paragraphs"] for q in p["qas"]]
    questions, contexts = map(list, zip(*pairs))
    batch = dict(
        tokenizer(questions, contexts, truncation="only_second", max_length=64, padding=True, return_tensors="pt")
    )

    def soft_loss(model):
        return Trainer.distillation_terms(model, teacher, batch, temperature=2.0, hidden=False)[2]

    assert float(soft_loss(teacher)) == pytest.approx(0.0, abs=1e-6)
    before = float(soft_loss(student))
    assert before > 1e-3
    optimiser = torch.optim.Adam(student.parameters(), lr=1e-2)
    for _ in range(20):
        optimiser.zero_grad()
        soft_loss(student).backward()
        optimiser.step()
    assert float(soft_loss(student)) < before / 4


def test_a_new_reader_is_checked_on_the_answers_it_gives(qa_run, qa_recipe):
    """Validation reads question and context as a pair, like the runtime: a quantised reader passes on the
    share of answers it keeps; an FP32 variant that is another model fails on its logits."""
    from edgenlp.data import DataSpec
    from edgenlp.errors import ValidationFailed
    from edgenlp.recipe import ValidationSettings
    from edgenlp.tasks import get
    from edgenlp.tasks.qa.session import open_answerer

    task = get("question-answering")
    texts = task.validation_texts(task.load_data(DataSpec(**qa_recipe["data"])), 16)
    questions = [json.loads(line) for line in texts]
    assert len(questions) == 16 and set(questions[0]) == {"question", "context"}
    parent, child = qa_run.variants["onnx-fp32"], qa_run.variants["onnx-int8"]
    found = task.check_against_parent(parent, child, texts, ValidationSettings(min_label_agreement=0.5))
    # one question at a time, as validation asks: dynamic INT8 scales activations per batch
    readers = [open_answerer(v.path, "onnx", 2) for v in (parent, child)]
    spans = [[(a["start"], a["end"]) for q in questions for a in reader.answers([q])] for reader in readers]
    assert found["label_agreement"] == sum(a == b for a, b in zip(*spans)) / 16
    with pytest.raises(ValidationFailed, match="FP32 start/end logits differ"):
        task.check_against_parent(parent, qa_run.variants["onnx-pruned"], texts, ValidationSettings())


def test_the_harness_scores_answers_against_gold_and_the_reference(qa_run, qa_recipe):
    from edgenlp.tasks import get
    from edgenlp.tasks.qa.scoring import squad_scores
    from edgenlp.tasks.qa.session import open_answerer

    results = qa_run.results
    assert results["task"] == "question-answering" and results["eval"]["examples"] == 120
    assert results["eval"]["windows_per_question"] > 1  # the long paragraphs are read in several windows
    by_name = {v["name"]: v for v in results["variants"]}
    ref, fp32, int8 = (by_name[n]["metrics"] for n in ("pytorch-fp32", "onnx-fp32", "onnx-int8"))
    assert ref["f1_ci"][0] <= ref["f1"] <= ref["f1_ci"][1] and ref["exact_match"] <= ref["f1"]
    assert fp32["f1"] == pytest.approx(ref["f1"]) and fp32["answer_agreement_with_reference"] == 1.0
    lo, hi = int8["f1_delta_ci"]
    assert lo <= by_name["onnx-int8"]["ratios"]["f1_delta_points"] <= hi
    from edgenlp.data import DataSpec

    data = get("question-answering").load_data(DataSpec(**qa_recipe["data"]))
    reader = open_answerer(qa_run.variants["onnx-fp32"].path, "onnx")
    found = [reader.answers([{"question": q.question, "context": q.context}])[0]["answer"] for q in data.test]
    assert squad_scores(found, [list(q.answers) for q in data.test])["f1"] == pytest.approx(fp32["f1"])
    report = (qa_run.out_dir / "report.md").read_text()
    assert "## Answers: exact match, F1 and size" in report
    assert "exact match" in (qa_run.out_dir / "report.html").read_text()


@pytest.mark.slow
def test_the_fused_graph_and_its_int8_pass_the_task_s_own_check(qa_run, qa_recipe, tmp_path):
    from conftest import check_fused_graph

    check_fused_graph(qa_run, qa_recipe, tmp_path)


def test_the_accuracy_budget_search_works_on_f1(qa_recipe, tmp_path, monkeypatch):
    from conftest import check_budget_search

    monkeypatch.setenv("EDGENLP_CACHE_DIR", str(tmp_path / "cache"))
    check_budget_search(qa_recipe, tmp_path / "run")


def test_a_latency_target_prunes_a_reader_and_keeps_it_by_f1(qa_recipe, tmp_path):
    """Recovered by start/end KL."""
    from conftest import check_latency_target

    check_latency_target(qa_recipe, tmp_path, "f1")


def test_the_bundle_answers_with_a_span_of_the_context_without_torch(qa_run, tmp_path):
    from edgenlp.bundle import build
    from edgenlp.runtime import load

    folder = build(qa_run.variants["onnx-int8"].path, tmp_path / "bundle")
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["task"] == "question-answering" and manifest["stride"] == 32 and manifest["max_length"] == 64
    context = "the film was boring but very great and quite bad " + "the plot " * 40 + "and very nice at the end"
    bundle = load(folder)
    answer = bundle.answer("what was very good", context)
    assert (
        set(answer) == {"answer", "score", "start", "end"}
        and context[answer["start"] : answer["end"]] == answer["answer"]
    )
    assert answer["answer"] and 0 < answer["score"] <= 1
    script = FORBID_TORCH + (
        "from edgenlp.runtime import load\n"
        f"print(__import__('json').dumps(load({str(folder)!r}).answer('what was very good', {context!r})))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert json.loads(done.stdout) == json.loads(json.dumps(answer))
    line = json.dumps({"question": "what was very good", "context": context})
    out = subprocess.run(
        [sys.executable, "-m", "edgenlp.runtime", str(folder), line, "--batch-size", "1"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert json.loads(out)["answer"] == answer["answer"]
    with pytest.raises(Exception, match="the question is too long"):
        bundle.answer("what " * 40, context)
    with pytest.raises(Exception, match="has no context"):
        bundle.answers([{"question": "what", "context": " "}])
    with pytest.raises(Exception, match="entities\\(\\) needs a token-classification bundle"):
        bundle.entities("good")


def test_the_server_answers_in_the_inference_api_shape(qa_run, tmp_path):
    from edgenlp.bundle import build
    from edgenlp.runtime import load
    from edgenlp.serve import ServeSettings, create_app

    bundle = load(build(qa_run.variants["onnx-fp32"].path, tmp_path / "bundle"))
    ask = {"question": "what was very good", "context": "the film was very fun and quite bad"}
    expected = bundle.answer(**ask)
    with TestClient(create_app(bundle, ServeSettings(max_client_batch_size=4))) as client:
        one = client.post("/predict", json={"inputs": ask})
        assert one.status_code == 200 and one.json()["answer"] == expected["answer"]
        assert one.json()["score"] == pytest.approx(expected["score"], abs=1e-6)
        many = client.post("/predict", json={"inputs": [ask, ask]}).json()
        assert [a["answer"] for a in many] == [expected["answer"]] * 2
        for body, status, says in (
            ({"inputs": "what was good"}, 400, "question-answering bundle"),
            ({"inputs": {"question": "what " * 40, "context": "x"}}, 400, "the question is too long"),
            ({"inputs": [ask] * 5}, 413, "more than the 4"),
            ({"inputs": {"question": "q"}}, 422, "context"),
        ):
            bad = client.post("/predict", json=body)
            assert bad.status_code == status and says in bad.json()["error"], bad.json()


@pytest.mark.browser
def test_the_page_answers_on_the_server_and_in_the_browser(qa_run, tmp_path):
    """The web page of a reader bundle: a question and its text in, the answer out, from the server and from
    transformers.js in headless Chromium (SQuAD-normalised: the browser decodes tokens)."""
    import os
    import subprocess as sp
    from pathlib import Path

    from test_serve import CHROMIUM, _free_port, _wait_ready

    from edgenlp.bundle import build
    from edgenlp.runtime import load
    from edgenlp.serve import default_web_assets
    from edgenlp.tasks.qa.scoring import normalize

    if (default_web_assets() is None or not Path(CHROMIUM).exists()) and not os.environ.get("CI"):
        pytest.skip("needs Debian's chromium and transformers.js (`npm ci --ignore-scripts` in web/)")
    from playwright.sync_api import sync_playwright

    bundle_dir = build(qa_run.variants["onnx-fp32"].path, tmp_path / "bundle")
    question, context = "what was very good", "the film was very fun a quite bad"
    expected = load(bundle_dir).answer(question, context)["answer"]
    port = _free_port()
    proc = sp.Popen([sys.executable, "-m", "edgenlp.cli", "serve", str(bundle_dir), "--port", str(port)], text=True)
    try:
        _wait_ready(port, proc)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
            page = browser.new_page()
            page.goto(f"http://127.0.0.1:{port}/")
            page.wait_for_function("document.getElementById('model').textContent.includes('question-answering')")
            page.fill("#text", f"{question}\n{context}")
            page.check("#in-browser")
            page.click("#run")
            page.wait_for_selector("#server-answer .answer-span", timeout=30000)
            page.wait_for_selector("#browser-answer .answer-span", timeout=90000)
            server = page.get_attribute("#server-answer .answer-span", "data-answer")
            in_browser = page.get_attribute("#browser-answer .answer-span", "data-answer")
            assert expected and server == expected and normalize(in_browser) == normalize(expected)
            browser.close()
    finally:
        proc.terminate()
        proc.wait(30)


def test_openvino_answers_as_onnx_and_ctranslate2_refuses_a_reader_in_one_line(qa_run, tmp_path):
    """OpenVINO converts the reader's graph (start and end logits both: the same answers as ONNX); CTranslate2
    converts classifiers and decoders only, and says so."""
    from conftest import openvino_of

    from edgenlp import stages
    from edgenlp.errors import EdgeNLPError
    from edgenlp.tasks.qa.session import open_answerer

    onnx, work = openvino_of(qa_run, tmp_path, "question-answering")
    asked = [{"question": "what was very good", "context": "the film was very fun a quite bad " + "plot " * 60}]
    ours, theirs = open_answerer(work, "openvino").answers(asked)[0], open_answerer(onnx.path, "onnx").answers(asked)[0]
    assert (ours["start"], ours["end"]) == (theirs["start"], theirs["end"])
    assert ours["score"] == pytest.approx(theirs["score"], abs=1e-4)
    with pytest.raises(EdgeNLPError) as refused:
        stages.get("ctranslate2").run(qa_run.variants["pytorch-fp32"], stages.get("ctranslate2").Config(), tmp_path)
    assert "ForQuestionAnswering" in str(refused.value) and "\n" not in str(refused.value)
