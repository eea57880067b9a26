"""The text-generation path on a tiny GPT-2: task detection, training, export with KV cache, INT8 and
INT4, fidelity metrics, the generation benchmark, the runtime's generate() and its refusals."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest
from conftest import FORBID_TORCH
from typer.testing import CliRunner

from edgenlp.cli import app

runner = CliRunner()


# -- tasks ------------------------------------------------------------------------------------------


def test_task_is_read_from_the_config():
    from edgenlp.tasks import of_config

    assert of_config({"architectures": ["GPT2LMHeadModel"]}) == "text-generation"
    assert of_config({"architectures": ["BertForSequenceClassification"]}) == "text-classification"
    assert of_config({"architectures": ["BertModel"], "model_type": "bert"}) is None
    assert of_config({"model_type": "gpt2"}) == "text-generation"


def test_a_language_model_given_labelled_data_is_not_silently_made_a_classifier(tmp_path, tiny_gpt2, tiny_csv):
    from edgenlp.artifact import Artifact

    common = [
        "--data",
        str(tiny_csv),
        "--text-column",
        "review",
        "--max-steps",
        "2",
        "--eval-every",
        "2",
        "--batch-size",
        "4",
        "--max-length",
        "32",
    ]
    lm = runner.invoke(app, ["finetune", str(tiny_gpt2), *common, "--out", str(tmp_path / "lm")])
    assert lm.exit_code == 0, lm.output
    assert Artifact.load(tmp_path / "lm").task == "text-generation"
    clf = runner.invoke(
        app,
        [
            "finetune",
            str(tiny_gpt2),
            *common,
            "--label-column",
            "sentiment",
            "--task",
            "text-classification",
            "--out",
            str(tmp_path / "clf"),
        ],
    )
    assert clf.exit_code == 0, clf.output
    assert Artifact.load(tmp_path / "clf").task == "text-classification"
    bad = runner.invoke(
        app, ["finetune", str(tiny_gpt2), *common, "--task", "translation", "--out", str(tmp_path / "x")]
    )
    assert bad.exit_code == 2 and "unknown task 'translation'" in bad.output


# -- corpora --------------------------------------------------------------------------------------


def test_corpus_sources(tmp_path):
    from edgenlp import corpus
    from edgenlp.errors import DataError

    txt = tmp_path / "a.txt"
    txt.write_text("\n\n".join(f"document number {i} about markets" for i in range(60)))
    c = corpus.load(str(txt))
    assert len(c.train) + len(c.validation) + len(c.test) == 60 and c.test and c.validation
    jl = tmp_path / "a.jsonl"
    jl.write_text("".join(json.dumps({"body": f"text {i} here", "label": "x"}) + "\n" for i in range(60)))
    with pytest.raises(DataError, match="text column"):
        corpus.load(str(jl))
    assert len(corpus.load(corpus.DataSpec(source=str(jl), text_column="body")).train) > 30
    raw = " = Alpha = \n \n first line \n = = Sub = = \n more \n = Beta = \n text \n"
    assert corpus.wikitext_articles(raw) == ["= Alpha =\nfirst line\n= = Sub = =\nmore", "= Beta =\ntext"]
    empty = tmp_path / "e.txt"
    empty.write_text("\n\n")
    with pytest.raises(DataError, match="empty"):
        corpus.load(str(empty))


def test_a_corpus_too_small_for_one_window_is_one_line(tmp_path, tiny_gpt2):
    small = tmp_path / "small.txt"
    small.write_text("\n\n".join(f"good film {i}" for i in range(30)))
    out = runner.invoke(
        app,
        [
            "finetune",
            str(tiny_gpt2),
            "--data",
            str(small),
            "--max-length",
            "64",
            "--max-steps",
            "1",
            "--out",
            str(tmp_path / "o"),
        ],
    )
    assert out.exit_code == 2, out.output
    assert (
        "one window of 64 tokens" in out.output
        or "one training window of 64 tokens" in out.output
        and "Traceback" not in out.output
    )


# -- perplexity ----------------------------------------------------------------------------------


def test_sliding_window_perplexity_matches_a_direct_pytorch_computation(tiny_gpt2):
    """The Hugging Face recipe (labels masked to the new tokens of each window) gives the same number."""
    import torch
    from transformers import AutoModelForCausalLM

    from edgenlp.bench.runners import PytorchCausalLM
    from edgenlp.tasks.generation.scoring import fidelity

    runner_ = PytorchCausalLM(tiny_gpt2, 1)
    ids = runner_.encode(" ".join(["the movie was good and the plot was fun"] * 20))[:150]
    ours = fidelity(runner_, ids, window=64, stride=32)

    model = AutoModelForCausalLM.from_pretrained(str(tiny_gpt2)).eval()
    nll, count, prev_end = 0.0, 0, 0
    for begin in range(0, len(ids), 32):
        end = min(begin + 64, len(ids))
        target_len = end - prev_end
        x = torch.tensor([ids[begin:end]])
        labels = x.clone()
        labels[:, :-target_len] = -100
        with torch.no_grad():
            loss = model(x, labels=labels).loss
        scored = int((labels[:, 1:] != -100).sum())
        nll += float(loss) * scored
        count += scored
        prev_end = end
        if end == len(ids):
            break
    assert ours["tokens"] == count == len(ids) - 1
    assert ours["perplexity"] == pytest.approx(math.exp(nll / count), rel=1e-5)


def test_kl_and_agreement_of_a_model_with_itself(tiny_gpt2):
    from edgenlp.bench.runners import PytorchCausalLM
    from edgenlp.tasks.generation.scoring import fidelity, sliding_windows

    m = PytorchCausalLM(tiny_gpt2, 1)
    ids = m.encode("the film was great fun " * 30)
    same = fidelity(m, ids, 64, 32, reference=m)
    assert same["kl_mean"] == pytest.approx(0.0, abs=1e-9) and same["top1_agreement"] == 1.0
    windows = list(sliding_windows(100, 64, 32))
    assert windows[0] == (0, 64, 1) and windows[-1][1] == 100
    assert sum(end - first for _, end, first in windows) == 99  # every token after the first, once


# -- the pipeline ---------------------------------------------------------------------------------


def test_pipeline_builds_validates_and_measures_a_decoder(tiny_gpt2_run):
    results = tiny_gpt2_run.results
    assert results["schema"] == "edgenlp.results/3" and results["task"] == "text-generation"
    by = {v["name"]: v for v in results["variants"]}
    export_check = by["onnx-fp32"]["validation"]
    assert export_check["greedy_identical"] == 1.0 and export_check["cache_agrees"]
    assert export_check["max_abs_logit_diff"] < 1e-3
    for name in ("onnx-int8", "onnx-int4"):
        m = by[name]["metrics"]
        assert m["kl_mean"] >= 0 and 0 <= m["top1_agreement"] <= 1 and m["perplexity"] > 1
        assert by[name]["validation"]["check"] == "top1_agreement"
    assert by["onnx-fp32"]["metrics"]["perplexity"] == pytest.approx(
        by["pytorch-fp32"]["metrics"]["perplexity"], rel=1e-4
    )
    prof = by["onnx-int8"]["profiles"]["gen-1t"]
    assert prof["tokens_per_s"] > 0 and prof["new_tokens"] == 8 and prof["decode_weight_bytes"] > 0
    assert 0 < prof["bandwidth_share"] and prof["bandwidth_limit_tokens_per_s"] > 0
    assert by["pytorch-fp32"]["profiles"]["gen-1t"]["no_cache"]["tokens_per_s"] > 0  # the reference, uncached
    assert by["onnx-int8"]["profiles"]["gen-1t"]["no_cache"] is None
    lat = by["onnx-int4"]["latency_ms"]["gen-1t"]
    assert lat["decode"]["n"] == 2 * 7 and lat["ttft"]["n"] == 2
    assert results["selection"]["selected"] in by
    assert len(by["onnx-int4"]["continuations"]) == 3


def test_int8_covers_gpt2_projections_and_int4_leaves_no_float_projection(tiny_gpt2_run):
    from collections import Counter

    import onnx

    def ops(name):
        path = tiny_gpt2_run.variants[name].path / "model.onnx"
        return Counter(n.op_type for n in onnx.load(str(path), load_external_data=False).graph.node)

    fp32, int8, int4 = ops("onnx-fp32"), ops("onnx-int8"), ops("onnx-int4")
    assert fp32["Gemm"] > 0 and int8["Gemm"] == 0
    assert int8["MatMulInteger"] == fp32["Gemm"] + 1  # every projection and the LM head
    assert int4["Gemm"] == 0 and int4["MatMulNBits"] == fp32["Gemm"] + 1 and int4["GatherBlockQuantized"] == 2
    meta = tiny_gpt2_run.variants["onnx-int4"].meta["metadata"]
    assert meta["gemm_rewritten_to_matmul"] == fp32["Gemm"]
    sizes = {n: tiny_gpt2_run.variants[n].size_bytes for n in ("onnx-fp32", "onnx-int4")}
    assert sizes["onnx-int4"] < 0.5 * sizes["onnx-fp32"]  # biases and norms stay float: a tiny model shrinks less


def test_gemm_rewrite_is_exact():
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    from edgenlp.stages.quantize_int4 import gemm_to_matmul

    rng = np.random.default_rng(0)
    w, b = rng.standard_normal((8, 5)).astype(np.float32), rng.standard_normal(5).astype(np.float32)
    wt = w.T.copy()
    graph = helper.make_graph(
        [
            helper.make_node("Gemm", ["x", "w", "b"], ["y"], name="g1"),
            helper.make_node("Gemm", ["x", "wt", "b"], ["z"], name="g2", transB=1),
        ],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 8])],
        [
            helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, 5]),
            helper.make_tensor_value_info("z", TensorProto.FLOAT, [3, 5]),
        ],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b"), numpy_helper.from_array(wt, "wt")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    x = rng.standard_normal((3, 8)).astype(np.float32)
    before = ort.InferenceSession(model.SerializeToString()).run(None, {"x": x})
    assert gemm_to_matmul(model) == 2
    assert {n.op_type for n in model.graph.node} == {"MatMul", "Add"}
    after = ort.InferenceSession(model.SerializeToString()).run(None, {"x": x})
    for a, b_ in zip(before, after):
        np.testing.assert_allclose(a, b_, rtol=1e-6, atol=1e-6)


def test_report_renders_generation_sections(tiny_gpt2_run):
    out = tiny_gpt2_run.out_dir
    md = (out / "report.md").read_text()
    assert "## Generation speed: profile `gen-1t`" in md and "perplexity" in md and "Continuations" in md
    html = (out / "report.html").read_text()
    assert "Generation speed" in html and "data:image/png;base64," in html
    rerender = runner.invoke(app, ["report", str(out), "--fail-if", "perplexity_increase>1000 or ttft_ms>100000"])
    assert rerender.exit_code == 0, rerender.output
    bad_gate = runner.invoke(app, ["report", str(out), "--fail-if", "accuracy_drop>1"])
    assert bad_gate.exit_code == 2 and "unknown metric 'accuracy_drop'" in bad_gate.output


# -- the runtime ----------------------------------------------------------------------------------


def test_onnx_generation_matches_pytorch_and_cache_matches_no_cache(tiny_gpt2_run):
    from edgenlp.bench.runners import PytorchCausalLM
    from edgenlp.runtime import CausalLM

    onnx_model = CausalLM(tiny_gpt2_run.variants["onnx-fp32"].path)
    torch_model = PytorchCausalLM(tiny_gpt2_run.variants["pytorch-fp32"].path, 1)
    prompt = "the movie was"
    a = onnx_model.generate(prompt, 30)
    assert a.token_ids == torch_model.generate(prompt, 30).token_ids
    assert a.token_ids == onnx_model.generate(prompt, 30, use_cache=False).token_ids
    ids = np.asarray([onnx_model.encode("the plot was fun and the film was good")], dtype=np.int64)
    np.testing.assert_allclose(onnx_model.step(ids, None)[0], torch_model.step(ids, None)[0], atol=1e-4)


def test_a_prompt_computes_the_lm_head_only_where_generation_reads_it(tiny_gpt2_run):
    """`logits_to_keep`: an optional input of every exported decoder and its quantised children; the
    generation loop asks for the last position only, evaluation still gets every position. Dynamic
    INT8 scales the head's input by its range, which one row changes a little; the others are exact."""
    import onnxruntime as ort

    from edgenlp.runtime import CausalLM
    from edgenlp.runtime.generation import LOGITS_TO_KEEP, generation_step

    for name, atol in (("onnx-fp32", 1e-5), ("onnx-int4", 1e-5), ("onnx-int8", 0.05)):
        path = tiny_gpt2_run.variants[name].path / "model.onnx"
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        assert LOGITS_TO_KEEP not in [i.name for i in session.get_inputs()]  # callers that do not know it
        assert LOGITS_TO_KEEP in [i.name for i in session.get_overridable_initializers()], name
        model = CausalLM(tiny_gpt2_run.variants[name].path)
        ids = np.asarray([model.encode("the plot was fun and the film was good")], dtype=np.int64)
        every, past = model.step(ids, None)
        last, last_past = generation_step(model)(ids, None)
        assert every.shape[1] == ids.shape[1] and last.shape[1] == 1
        np.testing.assert_allclose(last[0, -1], every[0, -1], atol=atol, err_msg=name)
        assert last[0, -1].argmax() == every[0, -1].argmax()
        for a, b in zip(past, last_past):  # the cache does not depend on how many logits were kept
            np.testing.assert_array_equal(a, b)


def test_sampling_stop_sequences_and_streaming(tiny_gpt2_run):
    from edgenlp.errors import InputError
    from edgenlp.runtime import CausalLM, Sampling

    model = CausalLM(tiny_gpt2_run.variants["onnx-int8"].path)
    hot = Sampling(temperature=1.5, top_k=50, top_p=0.95, seed=7)
    first, again = model.generate("the film", 20, hot), model.generate("the film", 20, hot)
    assert first.token_ids == again.token_ids  # seeded
    assert model.generate("the film", 20, Sampling(temperature=1.5, seed=8)).token_ids != first.token_ids
    streamed = "".join(model.stream("the film", 20, hot))
    assert streamed == first.text
    word = first.text.split()[1] if len(first.text.split()) > 1 else first.text.strip()
    stopped = model.generate("the film", 20, hot, stop=[word])
    assert stopped.stopped_by == f"stop:{word}" and word not in stopped.text
    penalised = model.generate("the film", 20, Sampling(repetition_penalty=5.0))
    assert len(set(penalised.token_ids)) >= len(set(model.generate("the film", 20).token_ids))
    for bad, message in [
        (("", 5), "prompt is empty"),
        (("good", -1), "negative"),
        (("good " * 70, 5), "context is 64"),
    ]:
        with pytest.raises(InputError, match=message):
            model.generate(*bad)
    with pytest.raises(InputError, match="top_p"):
        Sampling(top_p=0)


def test_generate_command_and_its_refusals(tiny_gpt2_run, tiny_run):
    variant = str(tiny_gpt2_run.variants["onnx-int8"].path)
    ok = runner.invoke(app, ["generate", variant, "the movie", "-n", "5"])
    assert ok.exit_code == 0 and ok.output.strip()
    for args, needle in [
        ([variant, "   "], "prompt is empty"),
        ([variant, "good", "-n", "-2"], "negative"),
        ([variant, "good " * 80], "context is 64"),
        ([str(tiny_run.variants["onnx-int8-dynamic"].path), "hello"], "not a text generator"),
    ]:
        out = runner.invoke(app, ["generate", *args])
        assert out.exit_code == 2, out.output
        assert needle in out.output and "Traceback" not in out.output


GENERATE_WITHOUT_TORCH = (
    FORBID_TORCH
    + """
from edgenlp.runtime import CausalLM
print(CausalLM(sys.argv[1]).generate("the movie", 5).token_ids)
"""
)


def test_runtime_generates_where_torch_cannot_be_imported(tiny_gpt2_run):
    done = subprocess.run(
        [sys.executable, "-c", GENERATE_WITHOUT_TORCH, str(tiny_gpt2_run.variants["onnx-int4"].path)],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert len(json.loads(done.stdout.strip().splitlines()[-1])) == 5


def test_bench_command_measures_decoders_side_by_side(tiny_gpt2_run, tiny_corpus, tmp_path):
    profile = tmp_path / "p.yaml"
    profile.write_text("name: tiny-gen\nthreads: 1\nprompt_tokens: 8\nnew_tokens: 4\n")
    paths = [str(tiny_gpt2_run.variants[n].path) for n in ("onnx-fp32", "onnx-int4")]
    out = runner.invoke(
        app,
        [
            "bench",
            *paths,
            "--data",
            str(tiny_corpus),
            "--profile",
            str(profile),
            "--out",
            str(tmp_path / "b"),
            "--iterations",
            "10",
        ],
    )
    assert out.exit_code == 0, out.output
    results = json.loads((tmp_path / "b" / "results.json").read_text())
    assert results["task"] == "text-generation" and results["reference"] == "onnx-fp32"
    assert results["variants"][1]["metrics"]["top1_agreement"] > 0
    too_long = tmp_path / "long.yaml"
    too_long.write_text("name: long\nthreads: 1\nprompt_tokens: 60\nnew_tokens: 10\n")
    refused = runner.invoke(
        app, ["bench", *paths, "--data", str(tiny_corpus), "--profile", str(too_long), "--out", str(tmp_path / "c")]
    )
    assert refused.exit_code == 2 and "context of 64" in refused.output


def test_asking_an_encoder_to_generate_text_is_refused_before_any_work(tmp_path, tiny_bert, tiny_corpus):
    out = runner.invoke(
        app,
        [
            "optimize",
            str(tiny_bert),
            "--task",
            "text-generation",
            "--data",
            str(tiny_corpus),
            "--out",
            str(tmp_path / "o"),
            "--no-bench",
        ],
    )
    assert out.exit_code == 2, out.output
    assert "not a language model" in out.output and not (tmp_path / "o").exists()


def test_gpt2_short_hub_names_resolve_to_their_hub_ids(monkeypatch):
    from edgenlp import models
    from edgenlp.errors import ModelNotFoundError

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for name, hub_id in (("gpt2", "openai-community/gpt2"), ("distilgpt2", "distilbert/distilgpt2")):
        with pytest.raises(ModelNotFoundError, match=f"'{hub_id}' is a hub id but hub access is off"):
            models.resolve(name)


def test_hqq_int4_sets_the_asked_accuracy_level(tiny_gpt2_run, tmp_path):
    import onnx

    from edgenlp.stages import quantize_int4

    parent = tiny_gpt2_run.variants["onnx-fp32"]
    with pytest.raises(ValueError, match="hqq cannot quantise embedding tables"):
        quantize_int4.Config(algorithm="hqq")
    config = quantize_int4.Config(algorithm="hqq", block_size=16, accuracy_level=4, quantize_embeddings=False)
    out = quantize_int4.run(parent, config, tmp_path)
    nodes = [n for n in onnx.load(str(tmp_path / "model.onnx")).graph.node if n.op_type == "MatMulNBits"]
    assert out.precision == "int4" and len(nodes) == out.metadata["gemm_rewritten_to_matmul"] + 1
    assert all(a.i == 4 for n in nodes for a in n.attribute if a.name == "accuracy_level")
    from edgenlp.runtime import CausalLM

    assert len(CausalLM(tmp_path).generate("the movie", 4).token_ids) == 4


def test_a_kv_cache_that_forgets_the_past_is_caught():
    """Teacher-forced agreement between cached and uncached generation: exact for a sound cache, near chance otherwise."""
    from edgenlp.tasks.generation.scoring import agreement_with_cache as _cache_agreement

    class RunningSum:  # the next token is the sum of every token seen so far, mod 7
        def __init__(self, forgets: bool):
            self.forgets = forgets

        def step(self, ids, past):
            seen = [] if past is None or self.forgets else list(past)
            rows = []
            for token in ids[0].tolist():
                seen.append(token)
                row = np.zeros(7)
                row[sum(seen) % 7] = 1.0
                rows.append(row)
            return np.asarray([rows]), seen

    assert _cache_agreement(RunningSum(forgets=False), [1, 2, 3], 8) == 1.0
    assert _cache_agreement(RunningSum(forgets=True), [1, 2, 3], 8) < 0.5


def test_split_prefill_reads_prompts_with_int8_and_decodes_with_int4(tiny_gpt2_run, tmp_path):
    """Stage split-prefill: `model.onnx` (INT4, the decode graph) and `prefill.onnx` (INT8); a generation's
    prompt goes through the prefill graph, each later token through the decode graph, from one cache."""
    from collections import Counter

    import onnx

    from edgenlp.bundle import build
    from edgenlp.runtime import CausalLM, load
    from edgenlp.runtime.generation import decode, generation_step

    variant = tiny_gpt2_run.variants["onnx-int4-int8-prefill"]

    def ops(file):
        return Counter(n.op_type for n in onnx.load(str(variant.path / file), load_external_data=False).graph.node)

    assert ops("model.onnx")["MatMulNBits"] > 0 and ops("model.onnx")["MatMulInteger"] == 0
    assert ops("prefill.onnx")["MatMulInteger"] > 0 and ops("prefill.onnx")["MatMulNBits"] == 0
    assert {p.name for p in variant.model_files} == {"model.onnx", "prefill.onnx"}  # the size counts both
    meta = variant.meta["metadata"]
    assert meta["decode"]["block_size"] == 16 and meta["prefill"]["precision"] == "int8" and variant.precision == "int4"

    model, int4 = CausalLM(variant.path), CausalLM(tiny_gpt2_run.variants["onnx-int4"].path)
    prompt = model.encode("the plot was fun and the film was good")
    ids = np.asarray([prompt], dtype=np.int64)
    first, cache = generation_step(model)(ids, None)
    by_prefill = model.prefill.run_outputs(["logits"], model.feed(ids, None, last_only=True))[0]
    np.testing.assert_array_equal(first, by_prefill)
    np.testing.assert_allclose(model.step(ids, None)[0], int4.step(ids, None)[0], atol=1e-6)  # evaluation: decode graph
    # every token after the first comes from the decode graph, continuing the prefill graph's cache
    token = np.asarray([[int(first[0, -1].argmax())]], dtype=np.int64)
    np.testing.assert_allclose(
        model.step(token, cache, last_only=True)[0], int4.step(token, cache, last_only=True)[0], atol=1e-6
    )
    generated = model.generate("the movie was", 12).token_ids
    assert generated == list(decode(generation_step(model), model.encode("the movie was"), 12, eos_id=model.eos_id))

    result = {v["name"]: v for v in tiny_gpt2_run.results["variants"]}["onnx-int4-int8-prefill"]
    assert result["latency_ms"]["gen-1t"]["ttft"]["n"] > 0 and result["metrics"]["perplexity"] > 1

    out = build(variant.path, tmp_path / "bundle")  # edgenlp's runtime reads prompts with it from a bundle too
    assert (out / "onnx" / "prefill.onnx").is_file() and (out / "onnx" / "model_q4.onnx").is_file()
    assert load(out).generate("the movie was", max_new_tokens=12).token_ids == generated


def test_split_prefill_refusals(tiny_gpt2_run, tiny_run):
    from edgenlp import recipe
    from edgenlp.errors import ArtifactError, RecipeError
    from edgenlp.stages import split_prefill

    base = {"name": "r", "model": "minilm", "variants": [{"name": "a", "stage": "export"}]}
    for config, message in (
        ({"decode": {"stage": "prune"}}, "cannot make a graph here"),
        ({"prefill": {"stage": "quantize", "config": {"bits": 3}}}, "bits"),
    ):
        bad = {
            **base,
            "variants": [*base["variants"], {"name": "b", "stage": "split-prefill", "parent": "a", "config": config}],
        }
        with pytest.raises(RecipeError, match=message):
            recipe.parse(bad)
    with pytest.raises(ArtifactError, match="text-classification model"):
        split_prefill.check_parent(tiny_run.variants["onnx-fp32"])
    with pytest.raises(ArtifactError, match="FP32 ONNX decoder"):
        split_prefill.check_parent(tiny_gpt2_run.variants["onnx-int8"])


def test_a_trained_language_model_is_optimised_as_given_unless_asked_to_train(tiny_gpt2_recipe, tmp_path):
    """The default recipe's finetune says `train: if-needed`: a checkpoint given as MODEL is not trained
    again (the first line says so), and `--finetune` trains it."""
    import yaml

    spec = {
        **tiny_gpt2_recipe,
        "variants": [
            {
                **tiny_gpt2_recipe["variants"][0],
                "config": {**tiny_gpt2_recipe["variants"][0]["config"], "train": "if-needed"},
            },
            {"name": "onnx-fp32", "stage": "export", "parent": "pytorch-fp32"},
        ],
    }
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(spec))
    runner = CliRunner()
    given = runner.invoke(app, ["optimize", "--recipe", str(path), "--out", str(tmp_path / "as-given"), "--no-bench"])
    assert given.exit_code == 0, given.output
    first = given.output.strip().splitlines()[0]
    assert first.startswith("variant pytorch-fp32 (finetune): the model is used as given: a trained language model")
    assert not (tmp_path / "as-given" / "variants" / "pytorch-fp32").exists()
    assert (tmp_path / "as-given" / "variants" / "onnx-fp32" / "model.onnx").exists()
    trained = runner.invoke(
        app, ["optimize", "--recipe", str(path), "--out", str(tmp_path / "trained"), "--no-bench", "--finetune"]
    )
    assert trained.exit_code == 0, trained.output
    assert "used as given" not in trained.output
    assert (tmp_path / "trained" / "variants" / "pytorch-fp32" / "training_log.json").exists()


def test_the_bandwidth_limit_is_the_faster_of_two_readers(monkeypatch):
    """A share of the limit stays a share: the limit is what the faster reader measured, both recorded."""
    from edgenlp import hardware

    monkeypatch.setattr(hardware, "_BANDWIDTH", {})
    found = hardware.memory_bandwidth(1)
    readers = found["readers_bytes_per_s"]
    assert set(readers) == {"numpy_sum", "onnxruntime_int8_gemv"}
    assert all(v and 1e8 < v < 1e12 for v in readers.values())  # both ran, at a memory's speed
    assert found["bytes_per_s"] == max(readers.values()) and found["threads"] == 1
    monkeypatch.setattr(hardware, "_gemv_read", lambda threads: None)
    monkeypatch.setattr(hardware, "_BANDWIDTH", {})
    assert (
        hardware.memory_bandwidth(1)["bytes_per_s"] == hardware.memory_bandwidth(1)["readers_bytes_per_s"]["numpy_sum"]
    )
