"""The stage commands' options are their stage Configs' fields: same names, defaults and help."""

from __future__ import annotations

import pytest
from typer.main import get_command
from typer.testing import CliRunner

from edgenlp.cli import app
from edgenlp.stages import distill, finetune, prune

COMMANDS = get_command(app).commands


@pytest.mark.parametrize(
    ("command", "stage", "nested"),
    [("finetune", finetune, ("data", "search")), ("prune", prune, ("data",)), ("distill", distill, ("data", "search"))],
)
def test_every_config_field_is_an_option_with_the_configs_default(command, stage, nested):
    options = {p.name: p for p in COMMANDS[command].params}
    for name, info in stage.Config.model_fields.items():
        if name in nested:
            continue
        option = options[f"config__{name}"]
        assert f"--{name.replace('_', '-')}" in option.opts
        if info.is_required():
            assert option.required
        else:
            assert option.default == info.default, f"{command} --{name}"
        if info.description:
            assert option.help == " ".join(info.description.split())


def test_distill_trains_as_long_as_its_config_says_by_default():
    epochs = next(p for p in COMMANDS["distill"].params if p.name == "config__epochs")
    assert epochs.default == distill.Config.model_fields["epochs"].default == 2.0


def test_a_bad_option_value_is_one_line_naming_the_option(tmp_path):
    done = CliRunner().invoke(app, ["distill", "some-model", "--out", str(tmp_path / "x"), "--epochs", "-1"])
    assert done.exit_code == 2
    assert "distill: --epochs input should be greater than 0 (got -1.0): fix that value" in " ".join(
        done.output.split()
    )
    done = CliRunner().invoke(app, ["finetune", "some-model", "--max-train-examples", "0"])
    assert done.exit_code == 2
    assert "--max-train-examples input should be greater than or equal to 1" in " ".join(done.output.split())


def test_bench_options_are_the_bench_settings_fields():
    from edgenlp.bench.profiles import BenchSettings

    options = {p.name: p for p in COMMANDS["bench"].params}
    for name in ("reference", "iterations", "max_eval_examples"):
        assert options[f"measuring__{name}"].default == BenchSettings.model_fields[name].default
    assert options["profile"].default == BenchSettings.model_fields["profiles"].default
