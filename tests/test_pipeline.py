"""The whole classification path on the tiny model: variants, benchmark, results and report."""

from __future__ import annotations

import json

import pytest

from edgenlp import pipeline, recipe


def test_results_follow_the_documented_schema(tiny_run):
    results = json.loads((tiny_run.out_dir / "results.json").read_text())
    assert (
        results["schema"] == "edgenlp.results/3"
        and results["task"] == "text-classification"
        and results["reference"] == "pytorch-fp32"
    )
    names = [v["name"] for v in results["variants"]]
    assert names == ["pytorch-fp32", "onnx-fp32", "onnx-fp32-opt", "onnx-int8-dynamic"]
    for v in results["variants"]:
        assert v["size_bytes"] > 0 and v["peak_rss_bytes"] > 0
        assert 0 <= v["metrics"]["accuracy"] <= 1 and "macro_f1" in v["metrics"]
        for shape in ("real", "len32"):
            summary = v["latency_ms"]["tiny-1t"][shape]
            assert summary["n"] >= 10 and summary["p50_ci"][0] <= summary["p50"] <= summary["p50_ci"][1]
            assert summary["p50"] <= summary["p90"] <= summary["p99"]
        prof = v["profiles"]["tiny-1t"]
        assert prof["throughput_seq_per_s"] > 0 and 0 <= prof["throughput"]["padding_share"] < 1
        assert prof["throughput"]["sequences"] > 0
        assert prof["load_peak_rss_bytes"] <= prof["peak_rss_bytes"] and prof["steady_rss_bytes"] > 0
        rounds = v["latency_samples_ms"]["tiny-1t"]["real"]
        assert len(rounds) == 2 and sum(map(len, rounds)) >= 10  # iterations asked, kept per round
        assert len(v["predictions"]) == results["eval"]["examples"]
        assert "speedup_p50" in v["ratios"] and "accuracy_delta_points" in v["ratios"]
        assert v["params"] > 0 and 0 < v["macs"]["real_mean"] < v["macs"]["len32"]
    int8 = results["variants"][-1]
    lo, hi = int8["ratios"]["speedup_p50_ci"]["tiny-1t/real"]
    assert lo <= int8["ratios"]["speedup_p50"]["tiny-1t/real"] <= hi
    orders = results["visiting_order"]["rounds"]
    assert len(orders) == 2 and sorted(orders[0]) == sorted(f"{v}@tiny-1t" for v in names)
    assert int8["ratios"]["size"] == int8["size_bytes"] / results["variants"][0]["size_bytes"]
    assert "mcnemar_vs_reference" in int8["metrics"]
    assert results["environment"]["cpu"]["isa"]
    assert 3 < results["eval"]["mean_tokens"] < 32


def test_accuracy_runs_in_its_own_process_so_every_profile_measures_the_same_work(tiny_run):
    logs = {p.name for p in (tiny_run.out_dir / "bench" / "logs").iterdir()}
    for name in tiny_run.variants:
        assert {f"{name}.eval.log", f"{name}.tiny-1t.log"} <= logs


def test_onnx_workers_do_not_pay_for_torch(tiny_run):
    results = json.loads((tiny_run.out_dir / "results.json").read_text())
    rss = {v["name"]: v["peak_rss_bytes"] for v in results["variants"]}
    assert rss["onnx-int8-dynamic"] < rss["pytorch-fp32"] / 2


def test_report_renders_every_variant(tiny_run):
    report = (tiny_run.out_dir / "report.md").read_text()
    for name in ("pytorch-fp32", "onnx-fp32-opt", "onnx-int8-dynamic"):
        assert name in report
    assert "speed-up" in report and "quantised for" in report and "fusions applied" in report
    assert "† rests on fewer than 10 timings" in report  # 10 timings per cell: every p99 is indicative


def test_rerun_reuses_finished_variants(tiny_run, tiny_recipe):
    again = pipeline.run(recipe.parse(tiny_recipe), tiny_run.out_dir, bench=False)
    assert set(again.reused) == set(tiny_run.variants)
    assert {n: a.id for n, a in again.variants.items()} == {n: a.id for n, a in tiny_run.variants.items()}


def test_a_changed_stage_config_rebuilds_only_that_branch(tiny_run, tiny_recipe, tmp_path):
    import shutil

    out = tmp_path / "copy"
    shutil.copytree(tiny_run.out_dir / "variants", out / "variants")
    changed = json.loads(json.dumps(tiny_recipe))
    changed["variants"][3]["config"] = {"per_channel": True}
    again = pipeline.run(recipe.parse(changed), out, bench=False)
    assert set(again.reused) == {"pytorch-fp32", "onnx-fp32", "onnx-fp32-opt"}
    assert again.variants["onnx-int8-dynamic"].meta["metadata"]["per_channel"] is True


def test_an_already_finetuned_model_is_used_as_is(tiny_run, tiny_recipe, tmp_path):
    given = dict(tiny_recipe, model=str(tiny_run.variants["pytorch-fp32"].path))
    given["variants"] = tiny_recipe["variants"][:2]
    again = pipeline.run(recipe.parse(given), tmp_path / "r", bench=False)
    assert again.variants["pytorch-fp32"].path == tiny_run.variants["pytorch-fp32"].path


def test_a_model_trained_with_another_label_order_is_scored_right(tiny_run, tiny_recipe, tmp_path):
    """The same classifier with its labels stored in the other order must get the same accuracy."""
    import shutil

    from safetensors.torch import load_file, save_file

    flipped = tmp_path / "flipped"
    shutil.copytree(tiny_run.variants["pytorch-fp32"].path, flipped)
    (flipped / "artifact.json").unlink()
    weights = load_file(str(flipped / "model.safetensors"))
    for key in ("classifier.weight", "classifier.bias"):
        weights[key] = weights[key].flip(0).contiguous()
    save_file(weights, str(flipped / "model.safetensors"), metadata={"format": "pt"})
    config = json.loads((flipped / "config.json").read_text())
    config["id2label"], config["label2id"] = {"0": "pos", "1": "neg"}, {"pos": 0, "neg": 1}
    (flipped / "config.json").write_text(json.dumps(config))

    given = dict(tiny_recipe, model=str(flipped))
    given["variants"] = [{"name": "onnx-fp32", "stage": "export"}]
    given["bench"] = dict(tiny_recipe["bench"], reference="onnx-fp32")
    again = pipeline.run(recipe.parse(given), tmp_path / "r")
    before = json.loads((tiny_run.out_dir / "results.json").read_text())
    expected = next(v for v in before["variants"] if v["name"] == "onnx-fp32")["metrics"]["accuracy"]
    assert again.results["eval"]["labels"] == ["pos", "neg"]
    assert again.results["variants"][0]["metrics"]["accuracy"] == pytest.approx(expected)


def test_measurements_are_written_before_selection_can_fail(tiny_run, tmp_path, monkeypatch):
    from edgenlp.bench import selection

    results = json.loads((tiny_run.out_dir / "results.json").read_text())
    results.pop("selection"), results.pop("gates")

    def broken(*a, **k):
        raise RuntimeError("selection broke")

    monkeypatch.setattr(selection, "select", broken)
    with pytest.raises(RuntimeError):
        pipeline.publish(results, tmp_path)
    saved = json.loads((tmp_path / "results.json").read_text())
    assert [v["name"] for v in saved["variants"]] == [v["name"] for v in results["variants"]]


def test_models_with_different_label_orders_are_not_measured_together(tmp_path):
    from edgenlp.errors import BenchError

    for name, labels in (("a", {"0": "neg", "1": "pos"}), ("b", {"0": "pos", "1": "neg"})):
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.json").write_text(json.dumps({"id2label": labels}))
    assert pipeline.model_labels([tmp_path / "a", tmp_path / "a"]) == ["neg", "pos"]
    with pytest.raises(BenchError, match="predict labels in different orders"):
        pipeline.model_labels([tmp_path / "a", tmp_path / "b"])
