"""The accuracy-budget search: sensitivity, fallback to float, shortlisting, selection on the tuning split."""

from __future__ import annotations

import json
import threading

import pytest

from edgenlp import pipeline, recipe
from edgenlp.bench import selection
from edgenlp.quantization import sensitivity, tables
from edgenlp.search import budget as search


@pytest.fixture(scope="module")
def searched(tiny_recipe, tmp_path_factory):
    """A tiny run with a 5-point budget and a small search space (its own cache, for this module only)."""
    patch = pytest.MonkeyPatch()
    patch.setenv("EDGENLP_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
    spec = {
        **tiny_recipe,
        "selection": {"max_accuracy_drop": 5.0},
        "search": {
            "modes": ["dynamic", "static"],
            "calibrators": ["minmax", "percentile"],
            "per_channel": [True],
            "embeddings": [True, False],
            "calibration_samples": 16,
            "tuning_examples": 24,
            "sensitivity_examples": 12,
            "probe_samples": 8,
            "measure_top": 2,
            "min_tuning_examples": 8,
        },
    }
    out = tmp_path_factory.mktemp("searched")
    yield pipeline.run(recipe.parse(spec), out), out, spec
    patch.undo()


def test_search_scores_every_setting_on_the_tuning_split_and_measures_the_fastest(searched):
    outcome, out, _ = searched
    found = outcome.results["search"]
    trials = found["trials"]
    labels = {t["label"] for t in trials}
    assert {
        "dynamic-per-channel",
        "static-minmax-per-channel",
        "static-percentile-per-channel-float-embeddings",
        "dynamic-per-channel-float-embeddings",
        "dynamic-per-channel-attention",
    } <= labels
    assert not any("static" in label and "attention" in label for label in labels)  # static takes them anyway
    assert found["tuning"]["split"].startswith("validation") and found["tuning"]["examples"] > 0
    assert all(t["tuning_quality"] is not None and t["latency_look_ms"] > 0 for t in trials if t["status"] != "failed")
    assert len(found["shortlist"]) == 2
    measured = {v["name"] for v in outcome.results["variants"]}
    assert set(found["shortlist"]) <= measured  # built as ordinary variants and measured by the harness
    sel = outcome.results["selection"]
    assert sel["selected"] in found["shortlist"] and "tuning split" in sel["quality_judged_on"]
    assert sel["rejected"]["onnx-int8-dynamic"] == "not a candidate of the accuracy-budget search"
    fastest = min(
        found["shortlist"],
        key=lambda n: selection.metric(
            outcome.results, next(v for v in outcome.results["variants"] if v["name"] == n), "p50_ms"
        ),
    )
    assert sel["selected"] == fastest  # by the harness's measurement, not the latency look
    for t in trials:  # calibrators that leave the same nodes quantised share one graph
        if t["status"] == "same-graph":
            assert "only the scales differ" in t["reason"]
    assert json.loads((out / "search" / "trials.json").read_text())


@pytest.fixture(scope="module")
def wide_vocab_bert(tiny_bert, tmp_path_factory):
    """The tiny BERT with a 4,096-row word table (rows past its tokenizer's are never read): a table large
    enough that packing it at 4 bits outweighs the nodes that unpack it."""
    import shutil

    from transformers import BertConfig, BertModel

    folder = tmp_path_factory.mktemp("wide-vocab-bert")
    config = BertConfig.from_pretrained(str(tiny_bert))
    config.vocab_size = 4096
    BertModel(config).save_pretrained(folder)
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        if (tiny_bert / name).is_file():
            shutil.copy2(tiny_bert / name, folder / name)
    return folder


def test_four_bit_tables_are_a_setting_of_the_search_that_a_size_limit_selects(
    tiny_recipe, wide_vocab_bert, tmp_path, monkeypatch
):
    """`embedding_bits: [8, 4]`: both widths are tried, shortlisted as distinct graphs and measured; where
    `max_size_mb` sits between their sizes, selection ships the 4-bit tables."""
    import onnx

    monkeypatch.setenv("EDGENLP_CACHE_DIR", str(tmp_path / "cache"))
    spec = {
        **tiny_recipe,
        "model": str(wide_vocab_bert),
        "selection": {"max_accuracy_drop": 50.0},
        "search": {
            "modes": ["dynamic"],
            "per_channel": [False],
            "embeddings": [True],
            "attention_matmuls": [False],
            "embedding_bits": [8, 4],
            "tuning_examples": 16,
            "sensitivity": "needed",
            "measure_top": 2,
            "min_tuning_examples": 8,
        },
    }
    outcome = pipeline.run(recipe.parse(spec), tmp_path / "run")
    found = outcome.results["search"]
    assert [t["label"] for t in found["trials"]] == ["dynamic", "dynamic-4bit-embeddings"]
    assert sorted(found["shortlist"]) == ["onnx-fp32.dynamic", "onnx-fp32.dynamic-4bit-embeddings"]
    four = outcome.variants["onnx-fp32.dynamic-4bit-embeddings"]
    assert four.meta["stage_config"]["embedding_bits"] == 4
    assert four.meta["metadata"]["four_bit_tables"]  # the large tables, packed at 4 bits
    gathered = {n.input[0] for n in onnx.load(str(four.onnx_path)).graph.node if n.op_type == "Gather"}
    assert any(name.endswith(tables.SUFFIX) for name in gathered)
    sizes = {v["name"]: v["size_bytes"] for v in outcome.results["variants"]}
    small, large = sizes["onnx-fp32.dynamic-4bit-embeddings"], sizes["onnx-fp32.dynamic"]
    assert small < large
    limit = (small + large) / 2 / selection.MB
    assert selection.select(outcome.results, max_accuracy_drop=50.0, max_size_mb=limit)["selected"] == (
        "onnx-fp32.dynamic-4bit-embeddings"
    )


def test_sensitivity_ranks_every_quantisable_node_of_the_reference(searched):
    from edgenlp.quantization.calibration import quantisable_nodes

    outcome, _, _ = searched
    ranked = outcome.results["search"]["sensitivity"]["onnx-fp32"]
    nodes = quantisable_nodes(outcome.variants["onnx-fp32"].onnx_path, ["MatMul", "Gemm", "Gather"])
    assert len(nodes) >= 2 * 8 + 3  # per layer 6 weight + 2 attention MatMuls; the embedding tables
    for mode in ("dynamic", "static"):
        rows = ranked[mode]["rows"]
        assert sorted(r["node"] for r in rows) == sorted(nodes)
        assert [r["rank"] for r in rows] == list(range(1, len(rows) + 1))
        assert all(a["kl_mean"] >= b["kl_mean"] for a, b in zip(rows, rows[1:]))
        assert {"max_abs_diff", "tuning_quality", "quality_drop", "op_type"} <= set(rows[0])


def test_a_rerun_scores_nothing_again(searched, monkeypatch):
    outcome, out, spec = searched
    calls = []
    monkeypatch.setattr("edgenlp.tasks.classification.tuning_quality", lambda *a, **k: calls.append(a) or 0.0)
    monkeypatch.setattr("edgenlp.tasks.classification.screen_latency", lambda *a, **k: calls.append(a) or 0.0)
    again = pipeline.run(recipe.parse(spec), out)
    assert calls == [] and again.results["search"]["shortlist"] == outcome.results["search"]["shortlist"]
    assert set(again.results["search"]["shortlist"]) <= set(again.reused)


def test_fallback_returns_the_fewest_nodes_to_float(monkeypatch, tmp_path):
    """Doubling until the budget holds, then bisecting: the fewest most-sensitive nodes in float."""
    s = search.Search.__new__(search.Search)
    s.settings = search.SearchSettings(max_float_nodes=None)
    s.variants = {"base": type("A", (), {"onnx_path": tmp_path / "m.onnx"})()}
    s.outcome = search.Outcome(1.0, "points", {}, 90.0)
    order = [f"n{i}" for i in range(10)]
    monkeypatch.setattr(s, "sensitivity", lambda base, mode: [{"node": n} for n in order], raising=False)
    monkeypatch.setattr("edgenlp.stages.quantize.quantisable_nodes", lambda path, ops: order)
    tried = []

    def fake_trial(base, mode, calibrator, per_channel, embeddings, attention, bits, float_nodes):
        tried.append(len(float_nodes))
        drop = max(0, 3 - len(float_nodes)) * 1.0  # needs 3 nodes in float to lose at most 0 points
        t = search.Trial(
            base,
            mode,
            "quantize",
            {"calibrator": calibrator, "per_channel": per_channel, "embeddings": embeddings},
            list(float_nodes),
            f"k{len(float_nodes)}",
        )
        t.tuning_drop, t.status = drop, ("candidate" if drop <= 0.0 else "over-budget")
        s.outcome.trials.append(t)
        return t

    monkeypatch.setattr(s, "_trial", fake_trial, raising=False)
    first = fake_trial("base", "dynamic", None, False, True, False, 8, [])
    best = s._fall_back("base", first)
    assert best.float_nodes == order[:3] and tried == [0, 1, 2, 4, 3]
    assert next(t for t in s.outcome.trials if t.label == "k4").status == "superseded"


def test_on_a_fused_base_the_search_ranks_a_fused_attention_and_may_keep_it_float(tiny_recipe, tmp_path, monkeypatch):
    """Dynamic INT8 quantises a fused Attention (QAttention) with the MatMuls, so the per-node sensitivity
    ranks it and the fall-back can return it to float; it used to list nodes by op type and never offered it."""
    import onnx

    from edgenlp import stages

    monkeypatch.setenv("EDGENLP_CACHE_DIR", str(tmp_path / "cache"))

    def ops(folder):
        return {n.op_type for n in onnx.load(str(folder / "model.onnx"), load_external_data=False).graph.node}

    def quality(folder, tuning, threads=1):  # only a graph that keeps some fused attention in float is exact
        found = ops(folder)
        return 90.0 if "Attention" in found or "QAttention" not in found else 40.0

    monkeypatch.setattr("edgenlp.tasks.classification.tuning_quality", quality)
    spec = {
        **tiny_recipe,
        "selection": {"max_accuracy_drop": 1.0},
        "search": {
            "bases": ["onnx-fp32-opt"],
            "modes": ["dynamic"],
            "per_channel": [False],
            "embeddings": [False],
            "attention_matmuls": [False],
            "tuning_examples": 8,
            "sensitivity": "needed",
            "sensitivity_examples": 4,
            "probe_samples": 8,
            "min_tuning_examples": 4,
            "measure_top": 1,
        },
    }
    outcome = pipeline.run(recipe.parse(spec), tmp_path / "run")
    base = outcome.variants["onnx-fp32-opt"].onnx_path
    attentions = {n.name for n in onnx.load(str(base), load_external_data=False).graph.node if n.op_type == "Attention"}
    assert len(attentions) == 2
    rows = outcome.results["search"]["sensitivity"]["onnx-fp32-opt"]["dynamic"]["rows"]
    assert attentions <= {r["node"] for r in rows}  # ranked with the embeddings, fused ones included
    assert {r["op_type"] for r in rows} == {"MatMul", "Gemm", "Attention", "EmbedLayerNormalization"}
    kept = [t for t in outcome.results["search"]["trials"] if t["status"] in ("candidate", "shortlisted")]
    assert kept and all(attentions & set(t["float_nodes"]) for t in kept)
    assert outcome.results["selection"]["selected"] == outcome.results["search"]["shortlist"][0]
    # QDQ has no fused attention: the static stage never lists one as quantisable
    assert not attentions & set(stages.get("quantize-static").quantisable_nodes(base, ["MatMul", "Gemm"]))


def test_divergence_is_zero_for_equal_outputs_and_grows_with_error():
    import numpy as np

    a = [np.array([[1.0, 2.0, 3.0]])]
    assert sensitivity.divergence(a, a)["kl_mean"] == 0.0
    small = sensitivity.divergence(a, [a[0] + [0.0, 0.0, 0.1]])
    big = sensitivity.divergence(a, [a[0] + [0.0, 0.0, 1.0]])
    assert 0 < small["kl_mean"] < big["kl_mean"] and big["max_abs_diff"] == pytest.approx(1.0)


def test_a_budget_no_variant_meets_names_the_closest_and_exits_one(tiny_recipe, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from edgenlp.cli import app

    monkeypatch.setenv("EDGENLP_CACHE_DIR", str(tmp_path / "cache"))

    def quality(folder, tuning, threads=1):  # every quantised model loses 50 points; the FP32 exports none
        return 90.0 if (folder / "artifact.json").exists() else 40.0

    monkeypatch.setattr("edgenlp.tasks.classification.tuning_quality", quality)
    spec = {
        **tiny_recipe,
        "search": {
            "modes": ["dynamic"],
            "per_channel": [False],
            "embeddings": [True],
            "attention_matmuls": [False],
            "tuning_examples": 8,
            "sensitivity": "needed",
            "max_float_nodes": 2,
            "sensitivity_examples": 4,
            "probe_samples": 8,
            "min_tuning_examples": 4,
        },
    }
    (tmp_path / "r.yaml").write_text(json.dumps(spec))
    result = CliRunner().invoke(
        app,
        ["optimize", "--recipe", str(tmp_path / "r.yaml"), "--out", str(tmp_path / "run"), "--max-accuracy-drop", "1"],
    )
    assert result.exit_code == 1, result.output
    assert "no variant keeps the quality budget of 1 points (closest: onnx-fp32.dynamic" in " ".join(
        result.output.split()
    )
    trials = json.loads((tmp_path / "run" / "results.json").read_text())["search"]["trials"]
    assert [len(t["float_nodes"]) for t in trials] == [0, 1, 2] and all(t["status"] == "over-budget" for t in trials)
    assert (tmp_path / "run" / "variants" / "onnx-int8-dynamic" / "model.onnx").exists()  # finished variants kept


def test_report_shows_every_trial_and_the_sensitivity_ranking(searched):
    outcome, out, _ = searched
    md = (out / "report.md").read_text()
    assert "## Accuracy-budget search" in md and "### Sensitivity: `onnx-fp32`, static minmax" in md
    assert md.count("| `onnx-fp32` | ") >= len(outcome.results["search"]["trials"])
    assert "(selected)" in md and "judged on the tuning split" in md
    html = (out / "report.html").read_text()
    assert "Quantisation sensitivity: the most damaging nodes" in html and "Accuracy-budget search" in html


@pytest.mark.slow
def test_the_search_is_task_generic_a_language_model_within_a_perplexity_budget(
    tiny_gpt2_recipe, tmp_path, monkeypatch
):
    monkeypatch.setenv("EDGENLP_CACHE_DIR", str(tmp_path / "cache"))
    spec = {
        **tiny_gpt2_recipe,
        "selection": {"max_accuracy_drop": 50.0},
        "search": {
            "modes": ["dynamic", "static"],
            "calibrators": ["minmax"],
            "per_channel": [True],
            "embeddings": [True],
            "calibration_samples": 8,
            "probe_samples": 8,
            "measure_top": 1,
        },
    }
    spec["variants"] = [v for v in spec["variants"] if v["stage"] != "quantize-int4"]
    outcome = pipeline.run(recipe.parse(spec), tmp_path / "run")
    found = outcome.results["search"]
    assert found["drop_unit"] == "%" and found["tuning"]["split"].startswith("validation")
    assert {t["label"] for t in found["trials"]} >= {"dynamic-per-channel", "static-minmax-per-channel"}
    assert outcome.results["selection"]["selected"] == found["shortlist"][0]
    assert set(found["sensitivity"]["onnx-fp32"]) == {"dynamic", "static"}


def test_the_reference_export_and_the_bases_are_found_by_lineage_ids(tmp_path):
    """A finetune the source already satisfies is the source artifact: its export names `source` as parent."""
    from edgenlp.artifact import Artifact

    def art(name, fmt, precision, parent=None):
        return Artifact(
            tmp_path / name,
            {
                "id": f"id-{name}",
                "name": name,
                "format": fmt,
                "precision": precision,
                "parent": {"id": f"id-{parent}", "name": "source"} if parent else None,
            },
        )

    variants = {
        "pytorch-fp32": art("src", "pytorch", "fp32"),
        "onnx-fp32": art("onnx-fp32", "onnx", "fp32", "src"),
        "int8": art("int8", "onnx", "int8", "onnx-fp32"),
        "opt": art("opt", "onnx", "fp32", "onnx-fp32"),
        "pruned": art("pruned", "pytorch", "fp32", "src"),
        "onnx-pruned": art("onnx-pruned", "onnx", "fp32", "pruned"),
    }
    spec = type("R", (), {"bench": type("B", (), {"reference": "pytorch-fp32"})()})()
    assert search._reference_export(spec, variants) == "onnx-fp32"
    assert search._bases(search.SearchSettings(), variants) == ["onnx-fp32", "onnx-pruned"]


def test_a_setting_the_quantiser_refuses_is_a_failed_trial_not_a_failed_search(monkeypatch, tmp_path):
    from edgenlp.stages import quantize

    s = search.Search.__new__(search.Search)
    s.settings, s.budget, s.reference_quality = search.SearchSettings(), 1.0, 90.0
    s.variants = {"base": type("A", (), {"id": "abc", "path": tmp_path, "meta": {"id": "abc"}})()}
    s.dir, s.memo, s.memo_file, s.data_id = tmp_path, {}, tmp_path / "trials.json", "d"
    s.outcome = search.Outcome(1.0, "points", {}, 90.0)
    s.task, s.tuning, s.threads, s.look_threads = type("T", (), {"NAME": "text-classification"})(), None, 1, 1
    s._lock, s._local = threading.RLock(), threading.local()
    s._local.tried = []

    def refuse(*args, **kwargs):
        raise ValueError("Quantization parameters are not specified for param x")

    monkeypatch.setattr(quantize, "quantize_file", refuse)
    trial = s._trial("base", "dynamic", None, False, True, False, 8, [])
    assert trial.status == "failed" and "ValueError: Quantization parameters" in trial.reason
    assert json.loads((tmp_path / "trials.json").read_text())[trial.id]["failed"]
