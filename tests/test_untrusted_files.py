"""Files a stranger shaped: hostile strings in reports, links given as --out, run folders that moved."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edgenlp.cli import app
from edgenlp.report import html

HOSTILE = '<script>alert("x")</script><img src=x onerror=alert(1)>'


def test_the_html_report_escapes_every_string_from_the_run(tiny_run):
    results = json.loads((tiny_run.out_dir / "results.json").read_text())
    results["run"]["recipe"] = HOSTILE
    results["run"].setdefault("data", {})["notes"] = [HOSTILE]
    results["skipped"] = {HOSTILE: HOSTILE}
    page = html.render(results)
    assert HOSTILE not in page and "onerror=alert" not in page.replace("onerror=alert(1)&gt;", "")
    assert "&lt;script&gt;alert(" in page


def test_a_generation_report_escapes_prompts_and_continuations(tiny_gpt2_run):
    results = json.loads((tiny_gpt2_run.out_dir / "results.json").read_text())
    for v in results["variants"]:
        v["continuations"] = [{"prompt": HOSTILE, "text": HOSTILE}]
    page = html.render(results)
    assert HOSTILE not in page and page.count("&lt;script&gt;") >= 2


def test_an_out_given_as_a_link_is_refused_before_any_work(tiny_run, tmp_path):
    real = tmp_path / "real"
    real.mkdir()
    link = tmp_path / "link"
    os.symlink(real, link)
    variant = tiny_run.variants["onnx-int8-dynamic"].path
    for args in (
        ["bundle", str(variant), "--out", str(link)],
        ["prune", str(tiny_run.variants["pytorch-fp32"].path), "--ratio", "0.5", "--out", str(link)],
    ):
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 2, result.output
        assert "symbolic link" in result.output and "internal error" not in result.output
        assert link.is_symlink() and real.is_dir() and not any(real.iterdir())


@pytest.fixture
def moved_run(tiny_run, tmp_path, monkeypatch) -> Path:
    """The run folder copied elsewhere and read from another working directory."""
    moved = tmp_path / "elsewhere" / "my-run"
    shutil.copytree(tiny_run.out_dir, moved)
    away = tmp_path / "away"
    away.mkdir()
    monkeypatch.chdir(away)
    return moved


def test_results_record_variant_folders_relative_to_the_run(tiny_run):
    results = json.loads((tiny_run.out_dir / "results.json").read_text())
    assert all(v["path"].startswith("variants/") for v in results["variants"])


@pytest.mark.parametrize("legacy", [False, True], ids=["current", "relative-to-the-old-working-directory"])
def test_a_moved_run_bundles_reports_compares_and_explains(moved_run, tmp_path, legacy):
    if legacy:  # what runs wrote before: paths relative to where `edgenlp optimize` was started
        results = json.loads((moved_run / "results.json").read_text())
        for v in results["variants"]:
            v["path"] = f"runs/old-name/{v['path']}"
        (moved_run / "results.json").write_text(json.dumps(results))
    runner = CliRunner()
    bundled = runner.invoke(app, ["bundle", str(moved_run), "--out", str(tmp_path / "bundle")])
    assert bundled.exit_code == 0, bundled.output
    assert runner.invoke(app, ["report", str(moved_run)]).exit_code == 0
    results = json.loads((moved_run / "results.json").read_text())
    a, b = results["variants"][0]["name"], results["variants"][-1]["name"]
    compared = runner.invoke(app, ["compare", str(moved_run), a, b])
    assert compared.exit_code == 0, compared.output
    explained = runner.invoke(app, ["explain", str(moved_run), "the movie was fun", "--out", str(tmp_path / "x")])
    assert explained.exit_code == 0, explained.output
    assert (tmp_path / "x" / "explain.json").is_file()


def test_a_study_file_under_a_folder_with_query_characters_stays_there(tmp_path):
    from edgenlp.search.tuning import study_url

    folder = tmp_path / "odd?name%2F&x"
    folder.mkdir()
    import optuna

    optuna.create_study(storage=study_url(folder / "study.db"), study_name="s")
    assert (folder / "study.db").is_file()
    assert [p.name for p in tmp_path.iterdir()] == [folder.name]


def test_shipped_links_travel_as_the_files_they_name(tmp_path):
    """A hub snapshot (snapshots/rev/x -> ../../blobs/...) packs as plain files."""
    from edgenlp.executors import transport

    snapshot = tmp_path / "snapshots" / "rev"
    snapshot.mkdir(parents=True)
    (tmp_path / "blobs").mkdir()
    (tmp_path / "blobs" / "abc").write_text('{"model_type": "bert"}')
    os.symlink("../../blobs/abc", snapshot / "config.json")
    got = transport.unpack(transport.pack(snapshot), tmp_path / "arrived", "the snapshot")
    arrived = tmp_path / "arrived" / "config.json"
    assert set(got) == {"config.json"} and arrived.is_file() and not arrived.is_symlink()
    assert arrived.read_text() == '{"model_type": "bert"}'


def test_a_node_cache_copy_is_checked_on_reuse_and_the_cache_is_private(tmp_path):
    from edgenlp.artifact import hash_tree, stable_id
    from edgenlp.errors import ArtifactError
    from edgenlp.executors import transport

    source = tmp_path / "source"
    source.mkdir()
    (source / "weights.bin").write_bytes(b"the real weights")
    key = stable_id(hash_tree(source))
    cache = transport.private_folder(tmp_path / "cache")
    assert cache.stat().st_mode & 0o077 == 0
    planted = cache / key
    planted.mkdir()
    (planted / "weights.bin").write_bytes(b"planted weights!")  # what someone who made the folder first left
    folder = transport.unpack_once(lambda: transport.pack(source), key, cache, "the model")
    assert (folder / "weights.bin").read_bytes() == b"the real weights"
    assert transport.unpack_once(lambda: pytest.fail("a good copy is reused"), key, cache, "the model") == folder
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o777)
    shared.chmod(0o777)
    with pytest.raises(ArtifactError, match="not a private folder"):
        transport.private_folder(shared)
    os.symlink(cache, tmp_path / "link")
    with pytest.raises(ArtifactError, match="not a private folder"):
        transport.private_folder(tmp_path / "link")


def test_the_study_proxy_of_a_ray_instance_started_here_listens_on_loopback():
    """The tuning study's gRPC proxy (unauthenticated) binds to what the cluster needs: loopback for a local one."""
    from types import SimpleNamespace

    pytest.importorskip("ray")
    from edgenlp.executors.ray import RayExecutor

    assert RayExecutor.reachable_host(SimpleNamespace(settings=SimpleNamespace(address=None))) == "127.0.0.1"
