"""Hyper-parameter search: trials, median pruning, the defaults as trial 0, resume, and refusals."""

from __future__ import annotations

import json
import sqlite3

import pytest

from edgenlp import models
from edgenlp.artifact import build
from edgenlp.data import DataSpec
from edgenlp.errors import EdgeNLPError, RecipeError
from edgenlp.search import tuning
from edgenlp.stages import finetune


def _config(tiny_csv, metric="accuracy", **search) -> finetune.Config:
    return finetune.Config(
        data=DataSpec(source=str(tiny_csv), text_column="review", label_column="sentiment"),
        metric=metric,
        max_steps=12,
        batch_size=16,
        eval_every=4,
        learning_rate=1e-3,
        max_length=32,
        max_eval_examples=24,
        search={
            "trials": 4,
            "startup_trials": 1,
            "warmup_evaluations": 1,
            "space": {"learning_rate": {"low": 1e-6, "high": 3e-3, "log": True}, "batch_size": {"choices": [8, 16]}},
            **search,
        },
    )


def _build(tiny_bert, config, out):
    stage = finetune
    return build(
        out / "variants" / "pytorch-fp32",
        models.resolve(str(tiny_bert)),
        "finetune",
        config,
        run=lambda work: stage.run(models.resolve(str(tiny_bert)), config, work),
    )


def test_search_keeps_the_best_trial_and_logs_every_trial(tiny_bert, tiny_csv, tmp_path):
    artifact, reused = _build(tiny_bert, _config(tiny_csv), tmp_path)
    assert not reused
    found = artifact.meta["metadata"]["search"]
    log = json.loads((artifact.path / "training_log.json").read_text())["search"]
    assert found["trials"] == 4 == len(log["trial_log"])
    assert log["trial_log"][0]["defaults"] and log["trial_log"][0]["params"] == {
        "learning_rate": 1e-3,
        "batch_size": 16,
    }
    complete = [t for t in log["trial_log"] if t["state"] == "complete"]
    best = max(complete, key=lambda t: t["value"])
    assert found["best_trial"] == best["number"] and found["best_value"] == best["value"]
    assert artifact.meta["metadata"]["validation_accuracy"] == best["value"]
    assert found["beat_defaults"] == (best["value"] > log["trial_log"][0]["value"])
    for trial in log["trial_log"]:
        assert trial["evals"] and all(step % 4 == 0 for step, _ in trial["evals"])
    assert (artifact.path / "model.safetensors").exists()
    # only the best trial's checkpoint stays in the study folder
    study = tmp_path / "variants" / "pytorch-fp32.tuning"
    assert [p.name for p in study.glob("*/trial-*")] == [f"trial-{best['number']}"]


def test_a_bad_trial_is_pruned_by_the_median_rule(tiny_csv, tmp_path):
    # a scripted training: the learning rate 1e-3 climbs to 0.9, 1e-9 stays at chance
    from edgenlp.artifact import StageOutput

    def train_one(cfg, folder, on_eval):
        best = 0.0
        for step in (4, 8, 12):
            best = 0.5 if cfg.learning_rate < 1e-6 else 0.5 + step / 30
            on_eval(step, {"accuracy": best})
        (folder / "model.safetensors").write_bytes(b"weights")
        (folder / "training_log.json").write_text("{}")
        return StageOutput("pytorch", "text-classification", "fp32", {"validation_accuracy": best, "steps": 12})

    config = _config(tiny_csv, trials=2, startup_trials=1, seed=1, space={"learning_rate": {"choices": [1e-3, 1e-9]}})
    workdir = tmp_path / "variants" / ".pytorch-fp32.partial-1"
    workdir.mkdir(parents=True)
    out = tuning.search(config, workdir, "parent-id", True, "accuracy", train_one)
    log = json.loads((workdir / "training_log.json").read_text())["search"]
    assert [t["params"]["learning_rate"] for t in log["trial_log"]] == [1e-3, 1e-9]
    assert [t["state"] for t in log["trial_log"]] == ["complete", "pruned"]
    assert log["trial_log"][1]["evals"] == [[4, 0.5], [8, 0.5]]  # stopped after its second evaluation
    assert out.metadata["search"]["best_trial"] == 0 and out.metadata["validation_accuracy"] == 0.9
    assert next((tmp_path / "variants" / "pytorch-fp32.tuning").glob("*/study.db"))


def test_an_interrupted_search_resumes_with_its_finished_trials(tiny_bert, tiny_csv, tmp_path, monkeypatch):
    config = _config(tiny_csv, trials=3)
    calls = []
    real_train = finetune.train

    def dying_train(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt  # the machine stops during the second trial
        return real_train(*args, **kwargs)

    monkeypatch.setattr(finetune, "train", dying_train)
    with pytest.raises(KeyboardInterrupt):
        _build(tiny_bert, config, tmp_path)
    assert not (tmp_path / "variants" / "pytorch-fp32").exists()
    db = next((tmp_path / "variants" / "pytorch-fp32.tuning").glob("*/study.db"))
    with sqlite3.connect(db) as con:
        states = [row[0] for row in con.execute("select state from trials order by number")]
    assert states[0] == "COMPLETE"
    calls.clear()
    monkeypatch.setattr(finetune, "train", real_train)
    counted = []
    monkeypatch.setattr(finetune, "train", lambda *a, **k: counted.append(1) or real_train(*a, **k))
    artifact, _ = _build(tiny_bert, config, tmp_path)
    log = json.loads((artifact.path / "training_log.json").read_text())["search"]
    assert len(counted) == 2  # the finished trial 0 was not trained again
    assert [t["state"] for t in log["trial_log"]][:2] == ["complete", "fail"]
    assert sum(t["state"] in ("complete", "pruned") for t in log["trial_log"]) == 3


@pytest.mark.parametrize(
    "search, message",
    [
        ({"trials": 0}, "budget of 0 trials"),
        ({"space": {"learning_rate": {"low": 1e-3, "high": 1e-5}}}, "holds no value"),
        ({"space": {"batch_size": {"choices": []}}}, "no value to try"),
        ({"space": {"learning_rate": {"low": 0.0, "high": 1e-3, "log": True}}}, "start above 0"),
        ({"space": {"dropout": {"low": 0.0, "high": 0.3}}}, "not a setting a trial can change"),
        ({"space": {"batch_size": {"choices": [8, 64]}}}, "not among the choices"),
        ({"space": {}}, "space is empty"),
    ],
)
def test_a_search_that_cannot_run_is_refused_in_one_line(tiny_csv, search, message):
    with pytest.raises(ValueError) as err:
        finetune.Config(data=DataSpec(source=str(tiny_csv)), batch_size=16, search=search)
    assert message in str(err.value)


def test_recipe_search_errors_name_the_key(tiny_recipe):
    from edgenlp import recipe

    data = json.loads(json.dumps(tiny_recipe))
    data["variants"][0]["config"]["search"] = {"trials": 0}
    with pytest.raises(RecipeError) as err:
        recipe.parse(data)
    assert "variants[0].config.search" in str(err.value) and "budget of 0 trials" in str(err.value)
    assert "\n" not in str(err.value) and isinstance(err.value, EdgeNLPError)


def test_default_space_is_filled_per_stage(tiny_csv):
    from edgenlp.stages import distill

    spec = DataSpec(source=str(tiny_csv))
    assert set(finetune.Config(data=spec, search={}).search.space) == {
        "learning_rate",
        "batch_size",
        "warmup_ratio",
        "weight_decay",
    }
    assert {"temperature", "alpha"} <= set(distill.Config(data=spec, search={}).search.space)
    assert tuning.trial_config(distill.Config(data=spec, search={}), {"alpha": 0.3}).search is None


def test_the_report_shows_the_trials_the_verdict_and_the_importances(tiny_run, tiny_csv, tmp_path):
    import copy

    from test_insight import png_size

    from edgenlp.artifact import StageOutput
    from edgenlp.report import html, markdown
    from edgenlp.report import tuning as tuning_report

    def train_one(cfg, folder, on_eval):  # a scripted training whose score peaks near lr 1e-3
        import math

        score = 0.9 - abs(math.log10(cfg.learning_rate) + 3) / 10 - cfg.warmup_ratio / 10
        for step in (4, 8):
            on_eval(step, {"accuracy": score * step / 8})
        (folder / "training_log.json").write_text("{}")
        return StageOutput("pytorch", "text-classification", "fp32", {"validation_accuracy": score, "steps": 8})

    config = _config(
        tiny_csv,
        trials=6,
        startup_trials=6,
        space={"learning_rate": {"low": 1e-5, "high": 1e-2, "log": True}, "warmup_ratio": {"low": 0.0, "high": 0.2}},
    )
    workdir = tmp_path / "variants" / ".pytorch-fp32.partial-1"
    workdir.mkdir(parents=True)
    tuning.search(config, workdir, "parent", True, "accuracy", train_one)
    results = copy.deepcopy(tiny_run.results)
    results["training"]["pytorch-fp32"]["search"] = json.loads((workdir / "training_log.json").read_text())["search"]
    found = results["training"]["pytorch-fp32"]["search"]
    assert set(found["importances"]) == {"learning_rate", "warmup_ratio"}
    md = markdown.render(results)
    assert "## Hyper-parameter search: `pytorch-fp32`" in md and "Trial 0 is the given settings" in md
    assert tuning_report.verdict(found) in md and "(given)" in md
    page = html.render(results)
    assert "Hyper-parameter search: <code>pytorch-fp32</code>" in page and "trials and parameter importances" in page
    assert png_size(tuning_report.figure(results)) == (1200, 380)


def test_cli_search_flags_give_one_line_errors(tiny_bert, tiny_csv, tmp_path):
    from typer.testing import CliRunner

    from edgenlp.cli import app

    result = CliRunner().invoke(
        app,
        [
            "finetune",
            str(tiny_bert),
            "--data",
            str(tiny_csv),
            "--out",
            str(tmp_path / "o"),
            "--search",
            "--trials",
            "0",
        ],
    )
    assert result.exit_code == 2 and "budget of 0 trials" in result.output
    assert "\n" not in result.output.strip() and "Traceback" not in result.output


def test_more_trials_continue_the_same_study(tiny_csv, tmp_path):
    from edgenlp.artifact import StageOutput

    def train_one(cfg, folder, on_eval):
        on_eval(4, {"accuracy": cfg.learning_rate * 100})
        (folder / "training_log.json").write_text("{}")
        return StageOutput("pytorch", "text-classification", "fp32", {"validation_accuracy": cfg.learning_rate * 100})

    workdir = tmp_path / "variants" / ".v.partial-1"
    workdir.mkdir(parents=True)
    tuning.search(_config(tiny_csv, trials=2), workdir, "p", True, "accuracy", train_one)
    log = tuning.search(_config(tiny_csv, trials=4), workdir, "p", True, "accuracy", train_one)
    assert log.metadata["search"]["trials"] == 4
    assert len(list((tmp_path / "variants" / "v.tuning").iterdir())) == 1
    trials = json.loads((workdir / "training_log.json").read_text())["search"]["trial_log"]
    assert [t["defaults"] for t in trials] == [True, False, False, False]


def test_distill_searches_its_temperature_and_weight_through_the_same_study(tiny_bert, tiny_csv, tmp_path, monkeypatch):
    from edgenlp.artifact import StageOutput
    from edgenlp.stages import distill

    seen = []

    def scripted_train(parent, cfg, folder, objective=None, stage="finetune", evaluate_first=False, on_eval=None):
        assert (
            objective.config is cfg and stage == "distill" and evaluate_first
        )  # each trial distils with its own settings
        seen.append((cfg.temperature, cfg.alpha))
        on_eval(4, {"accuracy": cfg.alpha})
        (folder / "training_log.json").write_text("{}")
        return StageOutput("pytorch", "text-classification", "fp32", {"validation_accuracy": cfg.alpha})

    monkeypatch.setattr(finetune, "train", scripted_train)
    config = distill.Config(
        data=DataSpec(source=str(tiny_csv), text_column="review", label_column="sentiment"),
        teacher=str(tiny_bert),
        search={"trials": 3, "space": {"temperature": {"low": 1.0, "high": 8.0}, "alpha": {"low": 0.1, "high": 0.9}}},
    )
    workdir = tmp_path / "variants" / ".recovered.partial-1"
    workdir.mkdir(parents=True)
    out = distill.run(models.resolve(str(tiny_bert)), config, workdir)
    assert seen[0] == (2.0, 0.5) and len(set(seen)) == 3  # trial 0: the stage's own settings
    assert out.metadata["distillation"]["alpha"] == max(a for _, a in seen) == out.metadata["search"]["best_value"]
