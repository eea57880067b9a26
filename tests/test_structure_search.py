"""Pruning to a latency target: structures timed on this CPU, a fitted latency model, candidates built
and measured, the most accurate one that meets the target kept."""

from __future__ import annotations

import json

import pytest

from edgenlp import pipeline, recipe
from edgenlp.errors import RecipeError
from edgenlp.search import structure
from edgenlp.search.settings import StructureSearchSettings

BASE = structure.Shape(layers=4, heads=4, width=1024)


@pytest.fixture(scope="module")
def mid_bert(tmp_path_factory, tiny_bert):
    """A 4-layer, 256-wide classifier: big enough that depth and width, not call overhead, set its speed
    (at 128 wide, a 3-layer candidate predicted at 1.17 ms measured 1.58 on a busy AVX2 machine)."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    folder = tmp_path_factory.mktemp("mid-bert")
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=64,
        hidden_size=256,
        num_hidden_layers=BASE.layers,
        num_attention_heads=BASE.heads,
        intermediate_size=BASE.width,
        max_position_embeddings=128,
        num_labels=2,
        id2label={0: "neg", 1: "pos"},
        label2id={"neg": 0, "pos": 1},
    )
    BertForSequenceClassification(config).save_pretrained(folder)
    AutoTokenizer.from_pretrained(str(tiny_bert)).save_pretrained(folder)
    return folder


def test_the_choice_keeps_the_most_per_depth_and_an_impossible_target_names_the_closest():
    model = structure.LatencyModel([1.0, 0.5, 0.1, 0.002], [], 64, 1)  # ms: fixed + per layer + per head + per channel
    base_ms = model.predict(BASE)
    chosen = structure.choose(model, BASE, hidden=128, head_size=32, target_ms=base_ms / 2, count=3)
    assert len(chosen) == 3 and len({c["shape"]["layers"] for c in chosen}) == 3
    assert all(c["predicted_ms"] <= base_ms / 2 for c in chosen)
    params = [c["parameters"] for c in chosen]
    assert params == sorted(params, reverse=True)
    for c in chosen:  # nothing of the same depth that also meets the target keeps more
        for shape, _, _ in structure.grid(BASE):
            if shape.layers == c["shape"]["layers"] and model.predict(shape) <= base_ms / 2:
                assert shape.parameters(128, 32) <= c["parameters"]
    with pytest.raises(RecipeError, match=r"no structure is predicted to reach 0\.50 ms: the closest, 1 layer"):
        structure.choose(model, BASE, hidden=128, head_size=32, target_ms=0.5, count=3)
    # with a margin, nothing is planned in the last 20% below the target
    spared = structure.choose(model, BASE, hidden=128, head_size=32, target_ms=base_ms / 2, count=3, margin=0.2)
    assert all(c["predicted_ms"] <= 0.8 * base_ms / 2 for c in spared)
    assert spared[0]["parameters"] < chosen[0]["parameters"]
    with pytest.raises(RecipeError, match=r"with 20% to spare"):
        structure.choose(
            model,
            BASE,
            hidden=128,
            head_size=32,
            target_ms=model.predict(structure.Shape(1, 1, 1)),
            count=1,
            margin=0.2,
        )


def test_an_unmet_speedup_names_the_measured_speedup_not_the_predicted_milliseconds(tmp_path):
    # the run's own unpruned variant can be faster than the latency model predicts: a candidate under the
    # predicted target_ms can still be short of the speed-up (a CI run printed "4.50 ms ... took 3.67 ms")
    verdict = {
        "target_ms": 4.5,
        "target_speedup": 1.5,
        "base_predicted_ms": 6.75,
        "against": "onnx-int8",
        "against_ms": 5.4,
        "candidates": [
            {"variant": "int8-l3h4w768", "measured_ms": 3.67, "predicted_ms": 4.42, "speedup": 1.4714},
            {"variant": "int8-l2h4w1024", "measured_ms": None, "predicted_ms": 4.1, "speedup": None},
        ],
    }
    message = str(structure.unmet(verdict, tmp_path))
    assert "1.5x over onnx-int8" in message and "was 1.47x (3.67 against 5.40 ms" in message
    assert "structure.margin" in message
    by_time = str(structure.unmet({**verdict, "target_speedup": None}, tmp_path))
    assert "latency target (4.50 ms)" in by_time and "took 3.67 ms (predicted 4.42)" in by_time


def test_macs_count_projections_feed_forward_and_attention_per_layer():
    # MiniLM-L6 at 128 tokens: 6 x (128 x (4 x 384 x 384 + 2 x 384 x 1536) + 2 x 128^2 x 384), about 1.43 G
    minilm = structure.Shape(layers=6, heads=12, width=1536)
    assert minilm.macs(384, 32, 128) == 1_434_451_968
    halved = structure.Shape(layers=3, heads=12, width=1536)
    assert halved.macs(384, 32, 128) * 2 == minilm.macs(384, 32, 128)
    # at one token attention is a rounding error; at 512 it is a large share
    narrow = structure.Shape(layers=6, heads=6, width=1536)
    assert minilm.macs(384, 32, 512) - narrow.macs(384, 32, 512) == 6 * 512 * (4 * 384 * 6 * 32 + 2 * 512 * 6 * 32)


def test_settings_take_one_target_and_refuse_a_length_the_bench_does_not_measure(mid_bert, tmp_path):
    with pytest.raises(ValueError, match="not both"):
        StructureSearchSettings(target_speedup=2.0, target_ms=1.0)
    with pytest.raises(ValueError):
        StructureSearchSettings(target_speedup=0.5)
    r = recipe.parse(
        {
            "name": "t",
            "model": str(mid_bert),
            "variants": [{"name": "onnx", "stage": "export"}],
            "structure": {"target_speedup": 2.0, "length": 48},
            "bench": {"profiles": [{"name": "p", "threads": 1, "seq_lengths": [64]}]},
        }
    )
    from edgenlp import models

    with pytest.raises(RecipeError, match="add 48 to its seq_lengths"):
        structure.extend(r, tmp_path, models.resolve(str(mid_bert)))


def test_latencies_measured_here_fit_and_order_the_structures(mid_bert, tmp_path):
    """The probes are built and timed for real; the model fitted to them ranks depth and width as the CPU does."""
    config = json.loads((mid_bert / "config.json").read_text())
    measured = structure.measure(config, mid_bert, structure.probe_shapes(BASE), 64, 1, tmp_path, rounds=3)
    assert len(measured) >= 5 and all(m["p50_ms"] > 0 for m in measured)
    model = structure.LatencyModel.fit(measured, 64, 1)
    full = next(m["p50_ms"] for m in measured if m["shape"] == {"layers": 4, "heads": 4, "width": 1024})
    one = next(m["p50_ms"] for m in measured if m["shape"] == {"layers": 1, "heads": 4, "width": 1024})
    assert one < full  # a quarter of the layers takes less time, measured
    assert model.predict(structure.Shape(1, 4, 1024)) < model.predict(BASE)
    # timed for real on a shared machine: one probe's p50 can swing by half, so the typical error is what is held
    errors = sorted(abs(m["predicted_ms"] - m["p50_ms"]) / m["p50_ms"] for m in model.measured)
    assert errors[len(errors) // 2] < 0.25 and model.fit_error() == errors[-1] < 1.5


@pytest.mark.slow
def test_a_latency_target_builds_measures_and_keeps_the_most_accurate_candidate(mid_bert, tiny_csv, tmp_path):
    spec = {
        "name": "target",
        "model": str(mid_bert),
        "data": {"source": str(tiny_csv), "text_column": "review", "label_column": "sentiment"},
        "variants": [
            {
                "name": "pytorch-fp32",
                "stage": "finetune",
                "config": {"max_steps": 20, "batch_size": 16, "eval_every": 10, "max_length": 64},
            },
            {"name": "onnx-fp32", "stage": "export", "parent": "pytorch-fp32"},
            {"name": "onnx-int8", "stage": "quantize", "parent": "onnx-fp32"},
        ],
        "structure": {
            "target_speedup": 1.5,
            "margin": 0.15,  # a tiny model's timings drift between the plan and the harness: plan well under
            "length": 64,
            "candidates": 2,
            "prune": {"importance": "magnitude"},
            "distill": {"max_steps": 4, "batch_size": 16, "eval_every": 2, "max_length": 64, "hidden_weight": 1.0},
        },
        "validation": {"examples": 16, "min_label_agreement": 0.0},
        "bench": {
            "profiles": [{"name": "t-1t", "threads": 1, "seq_lengths": ["real", 64], "memory_budget_mb": 512}],
            "iterations": 40,
            "rounds": 4,
            "warmup": 2,
            "throughput_batches": 2,
            "bootstrap": 200,
            "reference": "pytorch-fp32",
        },
    }
    outcome = pipeline.run(recipe.parse(spec), tmp_path / "run")
    found = outcome.results["structure_search"]
    table = json.loads((tmp_path / "run" / "structure" / structure.TABLE_FILE).read_text())
    assert len(found["latency_model"]["measured"]) >= 5 and table["key"]["cpu"]["model"]  # timed on this CPU
    assert len(found["candidates"]) == 2 and found["margin"] == 0.15
    assert all(row["predicted_ms"] <= 0.85 * found["target_ms"] for row in found["candidates"])  # planned with room
    for row in found["candidates"]:
        assert row["variant"] in outcome.variants and row["measured_ms"] > 0 and row["predicted_ms"] > 0
        pruned = outcome.variants[row["variant"].replace("int8-", "pruned-")].meta["metadata"]
        assert len(pruned["kept_layers"]) == row["shape"]["layers"]
        assert row["macs"] == structure.Shape(**row["shape"]).macs(256, 64, 64)
        by_name = {v["name"]: v for v in outcome.results["variants"]}
        # the task's quality metric, as `quality` is given: accuracy in percent
        assert row["after_pruning"] == pytest.approx(100 * by_name[row["pruned"]]["metrics"]["accuracy"])
        assert row["after_recovery"] == pytest.approx(100 * by_name[row["recovered"]]["metrics"]["accuracy"])
    met = [r for r in found["candidates"] if r["meets"]]
    assert found["chosen"] == max(met, key=lambda r: r["quality"])["variant"]
    assert found["against"] in ("onnx-fp32", "onnx-int8")
    report = (tmp_path / "run" / "report.md").read_text()
    assert "## Latency-target search" in report and found["chosen"] in report and "after recovery" in report
