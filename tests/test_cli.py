"""Bad input ends as one clear line and exit code 2, and nothing finished is lost."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pytest
import typer
import yaml
from typer.testing import CliRunner

from edgenlp.cli import app

runner = CliRunner()


def _fails_cleanly(args, *needles):
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    text = " ".join(result.output.split())
    assert "Traceback" not in result.output
    for needle in needles:
        assert needle in text, text
    return text


def test_missing_model_path(tmp_path):
    _fails_cleanly(
        ["optimize", str(tmp_path / "nope"), "--no-bench", "--out", str(tmp_path / "o")],
        "not found",
        "checkpoint folder",
    )


def test_unknown_dataset(tmp_path):
    _fails_cleanly(
        ["optimize", "--data", "sst3", "--no-bench", "--out", str(tmp_path / "o")], "data 'sst3'", "fix the name"
    )


def test_recipe_with_a_typo(tmp_path, tiny_recipe):
    bad = json.loads(json.dumps(tiny_recipe))
    bad["variants"][0]["config"]["epcohs"] = 3
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(bad))
    _fails_cleanly(["optimize", "--recipe", str(path)], "unknown key 'epcohs'", "variants[0].config")
    bad = dict(tiny_recipe, bnech={})
    path.write_text(yaml.safe_dump(bad))
    _fails_cleanly(["optimize", "--recipe", str(path)], "unknown key 'bnech'")


def test_column_that_does_not_exist(tmp_path, tiny_recipe):
    bad = json.loads(json.dumps(tiny_recipe))
    bad["data"]["text_column"] = "body"
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(bad))
    _fails_cleanly(
        ["optimize", "--recipe", str(path), "--out", str(tmp_path / "o")],
        "column 'body' is not in",
        "review, sentiment",
    )


def test_empty_data_file(tmp_path, tiny_recipe):
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(json.loads(json.dumps(tiny_recipe))))
    _fails_cleanly(["optimize", "--recipe", str(path), "--data", str(empty), "--out", str(tmp_path / "o")], "is empty")


def test_failure_in_a_later_stage_keeps_finished_variants(tmp_path, tiny_recipe, tiny_run):
    import shutil

    out = tmp_path / "o"
    shutil.copytree(tiny_run.out_dir / "variants", out / "variants")
    bad = json.loads(json.dumps(tiny_recipe))
    bad["validation"]["atol"] = 1e-12  # no export is that exact: the export's validation must fail
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(bad))
    before = {p.name: (p / "artifact.json").read_text() for p in (out / "variants").iterdir()}
    _fails_cleanly(
        ["optimize", "--recipe", str(path), "--out", str(out), "--no-bench"],
        "variant onnx-fp32 (export) failed",
        "FP32 logits differ",
        "finished variants kept: pytorch-fp32",
    )
    assert (out / "variants" / "pytorch-fp32" / "artifact.json").read_text() == before["pytorch-fp32"]
    assert (
        json.loads((out / "variants" / "onnx-fp32" / "artifact.json").read_text())["files"]
        == json.loads(before["onnx-fp32"])["files"]
    )
    assert not [p for p in (out / "variants").iterdir() if p.name.startswith(".")]


@pytest.fixture()
def short_profile(tmp_path):
    path = tmp_path / "tiny-1t.yaml"
    path.write_text("threads: 1\nseq_lengths: [real, 16]\nmemory_budget_mb: 300\n")
    return str(path)


def test_bench_rejects_a_corrupt_onnx_file(tmp_path, tiny_run, short_profile):
    import shutil

    folder = tmp_path / "corrupt"
    shutil.copytree(tiny_run.variants["onnx-fp32"].path, folder)
    (folder / "model.onnx").write_bytes(b"not an onnx model")
    _fails_cleanly(
        ["bench", str(folder), "--profile", short_profile, "--data", str(tmp_path / "nonexistent.csv")],
        "data '" + str(tmp_path / "nonexistent.csv") + "' is neither a known set",
        "fix the name or the path",
    )
    csv_path = tmp_path / "d.csv"
    csv_path.write_text("text,label\n" + "".join(f"good movie {i},{'pos' if i % 2 else 'neg'}\n" for i in range(40)))
    _fails_cleanly(
        ["bench", str(folder), "--profile", short_profile, "--data", str(csv_path), "--out", str(tmp_path / "b")],
        "corrupt cannot be measured",
    )


def test_bench_rejects_data_with_other_labels(tmp_path, tiny_run, short_profile):
    csv_path = tmp_path / "d.csv"
    csv_path.write_text("text,label\n" + "".join(f"good movie {i},{i % 3}\n" for i in range(40)))
    _fails_cleanly(
        ["bench", str(tiny_run.variants["onnx-fp32"].path), "--profile", short_profile, "--data", str(csv_path)],
        "the model predicts ['neg', 'pos'] but the data has labels ['0', '1', '2']",
    )


def test_a_length_beyond_the_model_is_refused_before_measuring(tmp_path, tiny_run):
    _fails_cleanly(
        ["bench", str(tiny_run.variants["onnx-fp32"].path), "--out", str(tmp_path / "b")],
        "profile 'edge-1t' asks for 128 tokens but onnx-fp32 takes at most 32",
    )
    assert not (tmp_path / "b").exists()


def test_bench_rejects_a_path_that_is_not_a_model(tmp_path):
    (tmp_path / "empty").mkdir()
    _fails_cleanly(["bench", str(tmp_path / "empty")], "holds no model")


def test_profile_with_zero_threads(tmp_path, tiny_run):
    profile = tmp_path / "p.yaml"
    profile.write_text("threads: 0\n")
    _fails_cleanly(
        ["bench", str(tiny_run.variants["onnx-fp32"].path), "--profile", str(profile)],
        "threads",
        "greater than or equal to 1",
    )


def test_report_of_a_missing_run(tmp_path):
    _fails_cleanly(["report", str(tmp_path)], "results.json not found")


def test_bench_command_measures_any_folder(tmp_path, tiny_run, tiny_csv):
    profile = tmp_path / "tiny-1t.yaml"
    profile.write_text("threads: 1\nseq_lengths: [real, 16]\nmemory_budget_mb: 300\n")
    result = runner.invoke(
        app,
        [
            "bench",
            str(tiny_run.variants["onnx-int8-dynamic"].path),
            str(tiny_run.variants["onnx-fp32"].path / "model.onnx"),
            "--data",
            str(tiny_csv),
            "--text-column",
            "review",
            "--label-column",
            "sentiment",
            "--profile",
            str(profile),
            "--iterations",
            "10",
            "--out",
            str(tmp_path / "b"),
        ],
    )
    assert result.exit_code == 0, result.output
    results = json.loads((tmp_path / "b" / "results.json").read_text())
    assert [v["name"] for v in results["variants"]] == ["onnx-int8-dynamic", "model"]  # a bare .onnx file
    assert results["variants"][0]["latency_ms"]["tiny-1t"]["len16"]["n"] >= 10
    assert results["variants"][0]["profiles"]["tiny-1t"]["fits_memory_budget"] is not None


def test_finetune_command_writes_a_checkpoint_and_reuses_it(tmp_path, tiny_bert, tiny_csv):
    args = [
        "finetune",
        str(tiny_bert),
        "--data",
        str(tiny_csv),
        "--text-column",
        "review",
        "--label-column",
        "sentiment",
        "--max-steps",
        "4",
        "--eval-every",
        "2",
        "--batch-size",
        "8",
        "--max-length",
        "32",
        "--out",
        str(tmp_path / "ft"),
    ]
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    assert "fine-tuned" in first.output and (tmp_path / "ft" / "model.safetensors").exists()
    log = json.loads((tmp_path / "ft" / "training_log.json").read_text())
    assert [e["step"] for e in log["evals"]] == [2, 4]
    second = runner.invoke(app, args)
    assert second.exit_code == 0 and "reused" in second.output


def test_overriding_model_or_data_gets_its_own_run_folder():
    from edgenlp.cli import run_name as _run_name

    assert _run_name("minilm-tweets", None, None) == "minilm-tweets"
    assert _run_name("minilm-tweets", None, "sst2") == "minilm-tweets-sst2"
    assert _run_name("minilm-tweets", "/x/my bert/", "/d/reviews.csv") == "minilm-tweets-my_bert-reviews"


# --- clean refusals: one line, exit 2, no traceback --------------------------------------------


def test_finetune_never_overwrites_its_own_model_folder(tmp_path, tiny_bert, tiny_csv):
    import shutil

    ckpt = tmp_path / "ckpt"
    shutil.copytree(tiny_bert, ckpt)
    before = sorted(p.name for p in ckpt.iterdir())
    _fails_cleanly(
        [
            "finetune",
            str(ckpt),
            "--data",
            str(tiny_csv),
            "--text-column",
            "review",
            "--label-column",
            "sentiment",
            "--max-steps",
            "2",
            "--out",
            str(ckpt),
        ],
        "holds the model being read",
    )
    home = tmp_path / "home"
    home.mkdir()
    (home / "notes.md").write_text("keep me")
    _fails_cleanly(
        [
            "finetune",
            str(ckpt),
            "--data",
            str(tiny_csv),
            "--text-column",
            "review",
            "--label-column",
            "sentiment",
            "--max-steps",
            "2",
            "--out",
            str(home),
        ],
        "is not an edgenlp artifact",
    )
    assert sorted(p.name for p in ckpt.iterdir()) == before and (home / "notes.md").read_text() == "keep me"


@pytest.mark.parametrize(
    "args, needles",
    [
        (["--epochs", "0"], ["--epochs", "greater than 0"]),
        (["--batch-size", "0"], ["--batch-size", "greater than or equal to 1"]),
    ],
)
def test_finetune_settings_out_of_range(tmp_path, tiny_bert, tiny_csv, args, needles):
    _fails_cleanly(
        ["finetune", str(tiny_bert), "--data", str(tiny_csv), "--out", str(tmp_path / "ft"), *args], *needles
    )


def test_bench_with_too_few_iterations(tmp_path, tiny_run):
    _fails_cleanly(
        ["bench", str(tiny_run.variants["onnx-fp32"].path), "--iterations", "5"],
        "--iterations",
        "greater than or equal to 10",
    )


def test_a_negative_accuracy_budget_is_refused(tmp_path, tiny_run):
    _fails_cleanly(
        ["report", str(tiny_run.out_dir), "--max-accuracy-drop", "-1"],
        "--max-accuracy-drop",
        "greater than or equal to 0",
    )


def test_recipe_that_is_a_folder(tmp_path):
    _fails_cleanly(["optimize", "--recipe", str(tmp_path)], "is a folder", "pass a YAML file")


def test_profile_file_that_is_a_list(tmp_path, tiny_run):
    profile = tmp_path / "p.yaml"
    profile.write_text("- threads: 1\n")
    _fails_cleanly(
        ["bench", str(tiny_run.variants["onnx-fp32"].path), "--profile", str(profile)],
        "holds a YAML list, not a mapping",
    )


def test_results_that_are_not_an_object(tmp_path):
    (tmp_path / "results.json").write_text("[1, 2]")
    _fails_cleanly(["report", str(tmp_path)], "is a JSON list, not edgenlp results")


def test_recipe_errors_name_the_key_path_without_dumping_the_recipe(tmp_path, tiny_recipe):
    bad = json.loads(json.dumps(tiny_recipe))
    bad["variants"][2]["parent"] = "onnx-fp33"
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(bad))
    text = _fails_cleanly(["optimize", "--recipe", str(path)], "names parent 'onnx-fp33'")
    assert "'variants':" not in text and "tiny-1t" not in text and len(text) < 300


def test_unknown_profile_and_unmeasured_gates_are_refused_before_any_work(tmp_path, tiny_recipe):
    path = tmp_path / "r.yaml"
    out = tmp_path / "o"
    for bench, gate, needle in [
        ({"profiles": ["edge-9t"]}, None, "profile 'edge-9t' is neither built in"),
        (None, "p50_ms@laptop-2t>5", "names profile 'laptop-2t', which is not measured"),
        (None, "p90_ms_len64>5", "needs length 64, which profile 'tiny-1t' does not measure"),
        (None, "e2e_p50_ms_len32>5", "end-to-end latency is measured at real lengths only"),
        ({"profiles": [{"name": "long", "threads": 1, "seq_lengths": [4096]}]}, None, "asks for 4096 tokens"),
        (
            {"profiles": [{"name": "long", "threads": 1, "seq_lengths": [48]}]},
            None,
            "variant pytorch-fp32 is made for at most 32 (its max_length)",
        ),
    ]:
        recipe = json.loads(json.dumps(tiny_recipe))
        if bench:
            recipe["bench"].update(bench)
        if gate:
            recipe["selection"] = {"fail_if": gate}
        path.write_text(yaml.safe_dump(recipe))
        _fails_cleanly(["optimize", "--recipe", str(path), "--out", str(out)], needle)
        assert not out.exists(), "nothing may be built before the refusal"


def test_a_read_only_working_directory_is_a_user_error(tmp_path, monkeypatch):
    import os

    if os.geteuid() == 0:
        # root ignores permission bits; a read-only bind is what a user meets, simulated by the OS error
        def refuse(*a, **k):
            raise PermissionError(13, "Permission denied", str(tmp_path / "runs"))

        monkeypatch.setattr("edgenlp.pipeline.FolderLock.__enter__", refuse)
    else:
        tmp_path.chmod(0o500)
    monkeypatch.chdir(tmp_path)
    try:
        _fails_cleanly(["optimize", "--no-bench"], "Permission denied", "writable folder")
    finally:
        tmp_path.chmod(0o700)
    assert not (tmp_path / "edgenlp-error.log").exists()


def test_an_internal_error_log_goes_to_the_users_cache_never_through_a_planted_link(tmp_path, monkeypatch):
    """The traceback lands in a new file under EDGENLP_CACHE_DIR/errors, not in the working directory or a
    fixed name in the shared temp folder, and a link planted at any name there is never followed."""
    import os

    from edgenlp import cli

    cache = tmp_path / "cache"
    monkeypatch.setenv("EDGENLP_CACHE_DIR", str(cache))
    monkeypatch.chdir(tmp_path)
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    planted = []
    for shared in (tmp_path / "edgenlp-error.log", Path(tempfile.gettempdir()) / "edgenlp-error.log"):
        if not shared.exists() and not shared.is_symlink():
            os.symlink(victim, shared)
            planted.append(shared)

    @cli.guarded
    def buggy():
        raise KeyError("bug")

    with pytest.raises(typer.Exit) as exit_info:
        buggy()
    assert exit_info.value.exit_code == 1
    logs = list((cache / "errors").glob("edgenlp-error-*.log"))
    assert len(logs) == 1 and "KeyError" in logs[0].read_text() and not logs[0].is_symlink()
    assert (cache / "errors").stat().st_mode & 0o077 == 0
    assert victim.read_text() == "keep me"
    for link in planted:
        link.unlink()


def test_a_run_folder_in_use_is_refused_with_its_holder(tmp_path, tiny_run):
    import shutil
    import subprocess
    import sys

    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(tiny_run.out_dir / "results.json", run / "results.json")
    hold = (
        "import sys, time\nfrom pathlib import Path\nfrom edgenlp.fsio import FolderLock\n"
        "with FolderLock(Path(sys.argv[1])):\n    print('held', flush=True)\n    time.sleep(60)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", hold, str(run)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        _fails_cleanly(["report", str(run)], f"in use by another edgenlp process (PID {proc.pid}")
    finally:
        proc.kill()
        proc.wait()
    assert runner.invoke(app, ["report", str(run)]).exit_code == 0
