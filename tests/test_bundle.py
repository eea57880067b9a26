"""Bundles: the transformers.js layout, the manifest, the ORT and strings targets, and the torch-free runtime."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from conftest import FORBID_TORCH
from typer.testing import CliRunner

from edgenlp.bundle import TargetSettings, build
from edgenlp.cli import app
from edgenlp.runtime import BundleError, InputError, load

TEXTS = ["good film", "the plot was really boring and bad", "fun", "awful", "the movie was a very nice film indeed"]


@pytest.fixture(scope="module")
def int8_bundle(tiny_run, tmp_path_factory) -> Path:
    return build(tiny_run.variants["onnx-int8-dynamic"].path, tmp_path_factory.mktemp("b") / "int8", zip_archive=True)


@pytest.fixture
def copy_of(int8_bundle, tmp_path):
    target = tmp_path / "copy"
    shutil.copytree(int8_bundle, target)
    return target


def test_layout_is_what_transformers_js_and_optimum_load(int8_bundle):
    names = {p.relative_to(int8_bundle).as_posix() for p in int8_bundle.rglob("*") if p.is_file()}
    assert names == {
        "config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "onnx/model_quantized.onnx",
        "onnx/model_quantized.onnx_data",
        "manifest.json",
    }
    config = json.loads((int8_bundle / "config.json").read_text())
    assert config["id2label"] == {"0": "neg", "1": "pos"} and config["label2id"] == {"neg": 0, "pos": 1}
    assert config["transformers.js_config"] == {"use_external_data_format": True}
    import onnx
    from onnx.external_data_helper import uses_external_data

    graph = onnx.load(str(int8_bundle / "onnx" / "model_quantized.onnx"), load_external_data=False)
    big = [t for t in graph.graph.initializer if len(t.raw_data) > 1024 or uses_external_data(t)]
    assert big and all(uses_external_data(t) for t in big)  # the weights live beside the graph
    assert oct((int8_bundle / "onnx" / "model_quantized.onnx_data").stat().st_mode & 0o777) == "0o644"


def test_manifest_describes_signature_lineage_benchmark_and_hashes(int8_bundle, tiny_run):
    from edgenlp.runtime.hashing import sha256_file

    m = json.loads((int8_bundle / "manifest.json").read_text())
    variant = tiny_run.variants["onnx-int8-dynamic"]
    assert m["format"] == "edgenlp.bundle" and m["format_version"] == 1 and m["task"] == "text-classification"
    assert m["labels"] == ["neg", "pos"] and m["max_length"] == 32
    assert [i["name"] for i in m["model"]["inputs"]] == ["input_ids", "attention_mask", "token_type_ids"]
    assert m["model"]["inputs"][0]["dtype"] == "int64" and m["model"]["outputs"][0]["shape"][-1] == 2
    assert m["model"]["opset"] >= 13 and m["onnxruntime"]["minimum"] and m["onnxruntime"]["checked_with"]
    assert m["isa"]["tuned_for"] == variant.meta["metadata"]["isa"]
    stages = [step["stage"] for step in m["lineage"]]
    assert stages == ["quantize", "export", "finetune", "source"] and m["lineage"][0]["id"] == variant.id
    bench = m["benchmark"]
    record = next(v for v in tiny_run.results["variants"] if v["name"] == "onnx-int8-dynamic")
    assert bench["accuracy"] == record["metrics"]["accuracy"] and bench["size_bytes"] == record["size_bytes"]
    assert bench["latency_ms"]["tiny-1t"]["real"]["p50"] == record["latency_ms"]["tiny-1t"]["real"]["p50"]
    assert bench["profiles"]["tiny-1t"]["peak_rss_bytes"] > 0 and bench["cpu"]["model"]
    for rel, entry in m["files"].items():
        assert sha256_file(int8_bundle / rel) == entry["sha256"]
    assert "manifest.json" not in m["files"]


def test_mask_value_rewrite_changes_no_logit_on_padded_batches(int8_bundle, tiny_run):
    from edgenlp.runtime import TextClassifier

    m = json.loads((int8_bundle / "manifest.json").read_text())
    assert m["batching"]["mask_rewrite"].startswith("applied")
    assert m["batching"]["batch_invariant"] is False and "batch_size=1" in m["batching"]["batch_note"]
    assert m["batching"]["padding_cost"]["ms_all_real"] > 0
    original = TextClassifier(tiny_run.variants["onnx-int8-dynamic"].path)
    bundled = TextClassifier(int8_bundle, model_file=int8_bundle / m["model"]["file"])
    batch = original.tokenizer.encode(TEXTS)
    assert batch["attention_mask"].min() == 0  # padded rows are in the batch
    assert np.array_equal(original.logits(batch), bundled.logits(batch))


def test_runtime_answers_like_the_variant_in_any_batching(tiny_run, tmp_path):
    from edgenlp.runtime import TextClassifier

    bundle_dir = build(tiny_run.variants["onnx-fp32"].path, tmp_path / "fp32")
    assert (bundle_dir / "onnx" / "model.onnx").is_file()
    assert json.loads((bundle_dir / "manifest.json").read_text())["batching"]["batch_invariant"] is True
    bundle = load(bundle_dir)
    single = [bundle.classify([t])[0] for t in TEXTS]
    for batch_size, by_length in ((2, True), (32, True), (2, False)):
        answers = bundle.classify(TEXTS, batch_size=batch_size, sort_by_length=by_length)
        assert [a["label"] for a in answers] == [a["label"] for a in single]
        assert np.allclose([a["score"] for a in answers], [a["score"] for a in single], atol=1e-5)
    reference = TextClassifier(tiny_run.variants["onnx-fp32"].path).classify(TEXTS)
    assert [a["label"] for a in reference] == [a["label"] for a in single]
    assert (
        set(single[0]["probabilities"]) == {"neg", "pos"} and abs(sum(single[0]["probabilities"].values()) - 1) < 1e-5
    )


def test_length_batches_pack_similar_lengths_within_the_token_budget():
    from edgenlp.runtime import length_batches

    batches = length_batches([5, 50, 6, 49, 7, 48], batch_size=3)
    assert batches == [[0, 2, 4], [5, 3, 1]]
    assert length_batches([10, 10, 10, 40], batch_size=8, max_batch_tokens=40) == [[0, 1, 2], [3]]
    assert sorted(i for b in length_batches(list(range(100, 0, -1)), 7) for i in b) == list(range(100))


def test_text_longer_than_the_maximum_is_cut_and_said_or_refused(int8_bundle):
    bundle = load(int8_bundle)
    long = "good " * 200
    assert bundle.classify([long, "fun"])[0]["truncated"] is True
    assert bundle.classify(["fun"])[0]["truncated"] is False
    with pytest.raises(InputError, match="longer than the model's maximum of 32 tokens"):
        bundle.classify(["fun", long], truncate=False)
    with pytest.raises(InputError, match="text 1 is empty"):
        bundle.classify(["fun", "   "])
    with pytest.raises(InputError, match="no texts"):
        bundle.classify([])
    with pytest.raises(InputError, match="text-generation bundle"):
        bundle.generate("hello")


def test_tampered_missing_and_extra_files_are_refused(copy_of):
    model = copy_of / "onnx" / "model_quantized.onnx"
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0xFF
    model.write_bytes(bytes(data))
    with pytest.raises(BundleError, match="onnx/model_quantized.onnx .* does not match its sha256"):
        load(copy_of)
    model.unlink()
    with pytest.raises(BundleError, match="missing onnx/model_quantized.onnx"):
        load(copy_of, verify_hashes=True)


def test_trusted_storage_may_skip_the_hash_check(copy_of):
    config = copy_of / "tokenizer_config.json"
    config.write_text(config.read_text() + " ")
    with pytest.raises(BundleError, match="tokenizer_config.json .* does not match its sha256"):
        load(copy_of)
    assert load(copy_of, verify_hashes=False).classify(["fun"])[0]["label"] in ("neg", "pos")


def test_missing_and_extra_files(int8_bundle, tmp_path):
    missing = tmp_path / "missing"
    shutil.copytree(int8_bundle, missing)
    (missing / "tokenizer.json").unlink()
    with pytest.raises(BundleError, match="missing tokenizer.json"):
        load(missing)
    extra = tmp_path / "extra"
    shutil.copytree(int8_bundle, extra)
    (extra / "onnx" / "notes.txt").write_text("hi")
    with pytest.raises(BundleError, match="onnx/notes.txt, which its manifest does not list"):
        load(extra)


def test_newer_format_wrong_task_and_not_a_bundle_are_refused(copy_of, tmp_path):
    with pytest.raises(BundleError, match="is a text-classification bundle, not text-generation"):
        load(copy_of, task="text-generation")
    manifest = json.loads((copy_of / "manifest.json").read_text())
    manifest["format_version"] = 2
    (copy_of / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="bundle format 2, newer than this runtime reads \\(1\\): upgrade"):
        load(copy_of)
    with pytest.raises(BundleError, match="not an edgenlp bundle"):
        load(tmp_path)


def test_zip_loads_and_a_truncated_zip_is_refused(int8_bundle, tmp_path, monkeypatch):
    monkeypatch.setenv("EDGENLP_CACHE", str(tmp_path / "cache"))
    archive = int8_bundle.with_name("int8.zip")
    with zipfile.ZipFile(archive) as z:
        assert "manifest.json" in z.namelist() and "onnx/model_quantized.onnx" in z.namelist()
    assert [a["label"] for a in load(archive).classify(TEXTS)] == [
        a["label"] for a in load(int8_bundle).classify(TEXTS)
    ]
    cut = tmp_path / "cut.zip"
    cut.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    with pytest.raises(BundleError, match="truncated or damaged"):
        load(cut)
    assert not list((tmp_path / "cache").glob("bundles/.*partial*"))
    escaping = tmp_path / "escaping.zip"
    with zipfile.ZipFile(escaping, "w") as z:
        z.writestr("manifest.json", "{}")
        z.writestr("../outside.txt", "x")
    with pytest.raises(BundleError, match="points outside the bundle"):
        load(escaping)
    assert not (tmp_path / "cache" / "outside.txt").exists() and not (tmp_path / "outside.txt").exists()


def test_cli_bundle_and_run_jsonl_and_one_line_errors(tiny_run, tmp_path):
    runner = CliRunner()
    out = tmp_path / "cli-bundle"
    done = runner.invoke(app, ["bundle", str(tiny_run.out_dir), "--out", str(out)])
    assert done.exit_code == 0, done.output
    selected = tiny_run.results["selection"]["selected"]
    assert json.loads((out / "manifest.json").read_text())["model"]["variant"] == selected
    done = runner.invoke(app, ["run", str(out), "good film", "awful plot"])
    assert done.exit_code == 0, done.output
    lines = [json.loads(line) for line in done.stdout.strip().splitlines()]
    assert [x["text"] for x in lines] == ["good film", "awful plot"] and all(
        x["label"] in ("neg", "pos") for x in lines
    )
    done = runner.invoke(app, ["run", str(out)], input="fun\n\nbad film\n")
    assert done.exit_code == 0 and len(done.stdout.strip().splitlines()) == 2
    done = runner.invoke(app, ["run", str(out), ""])
    assert done.exit_code == 2 and "text 0 is empty" in done.output and "Traceback" not in done.output


def test_cli_bundle_refuses_bad_sources_and_never_replaces_foreign_folders(tiny_run, tmp_path):
    runner = CliRunner()
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    cases = [
        ([str(tiny_run.variants["pytorch-fp32"].path), "--out", str(tmp_path / "a")], "is a pytorch variant"),
        ([str(tmp_path / "nowhere"), "--out", str(tmp_path / "b")], "does not exist"),
        ([str(tiny_run.variants["onnx-fp32"].path), "--out", str(foreign)], "is not an edgenlp bundle"),
        (
            [str(tiny_run.variants["onnx-fp32"].path), "--out", str(tmp_path / "c"), "--target", "apk"],
            "unknown bundle target",
        ),
    ]
    for args, message in cases:
        done = runner.invoke(app, ["bundle", *args])
        assert done.exit_code == 2, done.output
        assert message in done.output and "Traceback" not in done.output
    assert (foreign / "notes.txt").read_text() == "keep me"
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())  # no half-written bundle left


def test_rebuilding_replaces_an_earlier_bundle_and_a_failed_target_leaves_it(tiny_run, tmp_path):
    from edgenlp.data import DataSpec
    from edgenlp.errors import EdgeNLPError

    out = tmp_path / "again"
    build(tiny_run.variants["onnx-fp32"].path, out)
    first = json.loads((out / "manifest.json").read_text())["files"]
    with pytest.raises(EdgeNLPError):  # the strings target cannot read its test split
        build(
            tiny_run.variants["onnx-int8-dynamic"].path,
            out,
            targets=["strings"],
            settings=TargetSettings(data=DataSpec(source=str(tmp_path / "missing.csv"))),
        )
    assert json.loads((out / "manifest.json").read_text())["files"] == first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["again"]
    build(tiny_run.variants["onnx-int8-dynamic"].path, out)
    assert (out / "onnx" / "model_quantized.onnx").exists() and not (out / "onnx" / "model.onnx").exists()
    load(out)


def test_ort_target_converts_checks_and_records_the_mobile_verdict(tiny_run, tmp_path):
    import onnxruntime as ort

    out = build(tiny_run.variants["onnx-int8-dynamic"].path, tmp_path / "ort", targets=["ort"])
    m = json.loads((out / "manifest.json").read_text())
    target = m["targets"]["ort"]
    assert target["file"] == "ort/model_quantized.ort" and (out / target["required_operators"]).read_text().strip()
    assert target["bytes"] <= target["onnx_bytes"]
    assert "execution provider" in target["mobile_usability"]["recommendation"]
    assert set(target["mobile_usability"]["execution_providers"]) >= {"NNAPI"}
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1  # as the bundle's runtime session: the same kernels, the same order of sums
    session = ort.InferenceSession(str(out / target["file"]), options, providers=["CPUExecutionProvider"])
    bundle = load(out, threads=1)
    feed = bundle.model.tokenizer.encode(TEXTS)
    ort_logits = session.run(None, {i.name: feed[i.name] for i in session.get_inputs()})[0]
    onnx_logits = bundle.model.logits(feed)
    # the ORT file holds the graph as onnxruntime optimised it when converting; dynamic INT8 re-quantises every
    # activation, so a last-bit float difference upstream can move one quantisation step: a tolerance INT8
    # keeps on any CPU (the labels must agree exactly)
    assert np.allclose(ort_logits, onnx_logits, atol=1e-3)
    assert (ort_logits.argmax(-1) == onnx_logits.argmax(-1)).all()
    assert "ort/model_quantized.ort" in m["files"]


def test_strings_target_gives_the_two_part_labels_on_the_whole_test_split(tiny_run, tiny_recipe, tmp_path):
    from edgenlp import data
    from edgenlp.bundle.strings import session

    spec = data.DataSpec(**tiny_recipe["data"])
    out = build(
        tiny_run.variants["onnx-int8-dynamic"].path,
        tmp_path / "strings",
        targets=["strings"],
        settings=TargetSettings(data=spec),
    )
    target = json.loads((out / "manifest.json").read_text())["targets"]["strings"]
    test_texts = data.load(spec).test.texts
    assert target["checked"]["texts"] == len(test_texts) and target["checked"]["labels_differ"] == 0
    assert any("one text per run" in x for x in target["limits"])
    one = session(out / target["file"])
    bundle = load(out)
    from edgenlp.bundle.strings import text_to_label_graph

    _, tokenizer_graph = text_to_label_graph(out, "onnx/model_quantized.onnx", bundle.labels, 32)
    ids = session(tokenizer_graph).run(None, {"text": np.array(["good \ufffd film"])})[0][0].tolist()
    assert ids == bundle.model.tokenizer.tokenize(["good \ufffd film"])[0].ids  # U+FFFD dropped, as HF does
    for text in test_texts[:10]:
        label, probs, _ = one.run(None, {"text": np.array([text])})
        assert str(label[0]) == bundle.classify([text], batch_size=1)[0]["label"]


def test_generation_bundle_carries_the_kv_cache_model_and_generates(tiny_gpt2_run, tmp_path):
    from edgenlp.runtime import CausalLM

    variant = tiny_gpt2_run.variants["onnx-int4"]
    out = build(variant.path, tmp_path / "gpt2")
    m = json.loads((out / "manifest.json").read_text())
    assert m["task"] == "text-generation" and m["model"]["file"] == "onnx/model_q4.onnx"
    assert m["kv_cache"]["layers"] == 2 and m["generation"]["temperature"] == 0.0
    assert tuple(map(int, m["onnxruntime"]["minimum"].split("."))) >= (1, 17)  # MatMulNBits arrived in 1.17
    assert m["benchmark"]["perplexity"] > 0
    bundle = load(out)
    done = bundle.generate("the movie was", max_new_tokens=6)
    expected = CausalLM(variant.path).generate("the movie was", max_new_tokens=6)
    assert done.token_ids == expected.token_ids and done.text == expected.text
    with pytest.raises(InputError, match="text-classification bundle"):
        bundle.classify(["hi"])
    done = CliRunner().invoke(app, ["run", str(out), "the movie was", "--max-new-tokens", "4"])
    assert done.exit_code == 0, done.output
    line = json.loads(done.stdout.strip())
    assert line["prompt"] == "the movie was" and line["new_tokens"] <= 4 and line["generated_text"]


RUNTIME_ONLY = (
    FORBID_TORCH
    + """
import json, time
t0 = time.perf_counter()
from edgenlp.runtime import load
bundle = load(sys.argv[1])
print(json.dumps([a["label"] for a in bundle.classify(sys.argv[2:])]))
"""
)


def test_runtime_runs_where_torch_cannot_be_imported(int8_bundle):
    done = subprocess.run(
        [sys.executable, "-c", RUNTIME_ONLY, str(int8_bundle), *TEXTS], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == [a["label"] for a in load(int8_bundle).classify(TEXTS)]


@pytest.mark.slow
def test_runtime_installs_and_runs_in_a_fresh_venv_without_torch(int8_bundle, tmp_path):
    """Build the edgenlp-runtime wheel, install it alone in a new virtual environment, classify there."""
    root = Path(__file__).resolve().parents[1]
    wheels = tmp_path / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(wheels), str(root / "runtime-wheel")],
        check=True,
        capture_output=True,
    )
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    installed = subprocess.run(
        [str(python), "-m", "pip", "install", "-q", *map(str, wheels.glob("*.whl"))],
        capture_output=True,
        text=True,
        check=False,
    )
    assert installed.returncode == 0, installed.stderr[-2000:]
    listed = subprocess.run(
        [str(python), "-m", "pip", "list", "--format=json"], capture_output=True, text=True, check=True
    )
    names = {p["name"].lower() for p in json.loads(listed.stdout)}
    assert {"onnxruntime", "tokenizers", "numpy", "edgenlp-runtime"} <= names
    assert not names & {"torch", "transformers", "optimum", "edgenlp"}
    done = subprocess.run(
        [str(python), "-m", "edgenlp.runtime", str(int8_bundle), *TEXTS],
        capture_output=True,
        text=True,
        check=False,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    labels = [json.loads(line)["label"] for line in done.stdout.strip().splitlines()]
    assert labels == [a["label"] for a in load(int8_bundle).classify(TEXTS)]
    refused = subprocess.run(
        [str(python), "-m", "edgenlp.runtime", str(int8_bundle), ""],
        capture_output=True,
        text=True,
        check=False,
        cwd=tmp_path,
    )
    assert (
        refused.returncode == 2 and refused.stderr.strip() == "error: text 0 is empty: pass text with at least one word"
    )
