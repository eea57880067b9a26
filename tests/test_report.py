"""The HTML report is self-contained and its plots draw in a real (headless) browser."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest
from typer.testing import CliRunner

from edgenlp.cli import app

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


def test_html_report_is_self_contained(tiny_run):
    page = (tiny_run.out_dir / "report.html").read_text()
    assert page.count('<img class="plot"') >= 5
    assert not re.search(r'src="(?!data:)', page), "every image must be embedded"
    assert "http://" not in page and "https://" not in page
    for name in tiny_run.variants:
        assert name in page
    assert "avx" in page or "arm64" in page or "generic" in page


@pytest.mark.browser
@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (.ci/run installs it)")
def test_plots_render_in_headless_chromium(tiny_run, tmp_path):
    result = subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--virtual-time-budget=5000",
            "--dump-dom",
            (tiny_run.out_dir / "report.html").as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    match = re.search(r'data-plots="(\d+)/(\d+)"', result.stdout)
    assert match, result.stderr[-2000:]
    drawn, total = map(int, match.groups())
    assert total >= 5 and drawn == total


def test_report_command_reselects_and_gates(tiny_run, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(tiny_run.out_dir / "results.json", run / "results.json")
    runner = CliRunner()
    ok = runner.invoke(app, ["report", str(run), "--max-size-mb", "1000", "--fail-if", "size_mb>1000"])
    assert ok.exit_code == 0, ok.output
    assert "gate passed" in " ".join(ok.output.split())
    failed = runner.invoke(app, ["report", str(run), "--fail-if", "size_mb>0.001 or accuracy_drop>50"])
    assert failed.exit_code == 1
    assert "gate FAILED" in " ".join(failed.output.split()) and "TRIGGERED" in failed.output
    results = json.loads((run / "results.json").read_text())
    assert results["gates"]["failed"] and results["selection"]["selected"]
    assert (run / "report.html").exists() and "Gate FAILED" in (run / "report.md").read_text()
    typo = runner.invoke(app, ["report", str(run), "--fail-if", "sizemb>1"])
    assert typo.exit_code == 2 and "unknown metric 'sizemb'" in typo.output


def test_compare_command_runs_paired_tests(tiny_run):
    runner = CliRunner()
    done = runner.invoke(app, ["compare", str(tiny_run.out_dir), "pytorch-fp32", "onnx-int8-dynamic"])
    assert done.exit_code == 0, done.output
    text = " ".join(done.output.split())
    assert "McNemar p =" in text and "tiny-1t/real: onnx-int8-dynamic is" in text and "Wilcoxon p =" in text
    missing = runner.invoke(app, ["compare", str(tiny_run.out_dir), "pytorch-fp32", "nope"])
    assert missing.exit_code == 2 and "variant 'nope' is not in" in missing.output


def test_latencies_timed_on_different_node_kinds_are_not_compared_unless_asked(tiny_run, tmp_path):
    results = json.loads((tiny_run.out_dir / "results.json").read_text())
    assert {v["profiles"]["tiny-1t"]["node_kind"] for v in results["variants"]} == {
        results["environment"]["measured_on"]["tiny-1t"]["kind"]
    }
    assert "was timed on this machine" in (tiny_run.out_dir / "report.md").read_text()
    merged = tmp_path / "merged"
    merged.mkdir()
    other = next(v for v in results["variants"] if v["name"] == "onnx-int8-dynamic")
    other["profiles"]["tiny-1t"]["node_kind"] = "arm-edge"
    (merged / "results.json").write_text(json.dumps(results))
    runner = CliRunner()
    refused = runner.invoke(app, ["compare", str(merged), "pytorch-fp32", "onnx-int8-dynamic"])
    assert refused.exit_code == 2 and "compare machines, not variants" in " ".join(refused.output.split())
    told = runner.invoke(app, ["compare", str(merged), "pytorch-fp32", "onnx-int8-dynamic", "--across-node-kinds"])
    assert told.exit_code == 0 and "Wilcoxon p =" in " ".join(told.output.split())


def test_report_still_renders_a_results_1_document(tiny_run, tmp_path):
    """Older runs: flat timings, no intervals on ratios, throughput as one number."""
    old = json.loads((tiny_run.out_dir / "results.json").read_text())
    old["schema"] = "edgenlp.results/1"
    old.pop("task")  # versions before /3 name no task: they are classification
    for v in old["variants"]:
        v["latency_samples_ms"] = {
            p: {s: [x for r in rounds for x in r] for s, rounds in shapes.items()}
            for p, shapes in v["latency_samples_ms"].items()
        }
        v["ratios"].pop("speedup_p50_ci")
        for prof in v["profiles"].values():
            for key in ("throughput", "load_peak_rss_bytes", "steady_rss_bytes"):
                prof.pop(key)
    (tmp_path / "results.json").write_text(json.dumps(old))
    done = CliRunner().invoke(app, ["report", str(tmp_path)])
    assert done.exit_code == 0, done.output
    assert "onnx-int8-dynamic" in (tmp_path / "report.md").read_text()
    assert (tmp_path / "report.html").read_text().count('<img class="plot"') >= 5


def test_a_results_file_that_breaks_its_schema_is_one_line(tiny_run, tmp_path):
    broken = json.loads((tiny_run.out_dir / "results.json").read_text())
    del broken["variants"][0]["metrics"]
    (tmp_path / "results.json").write_text(json.dumps(broken))
    done = CliRunner().invoke(app, ["report", str(tmp_path)])
    assert done.exit_code == 2, done.output
    assert "does not hold what edgenlp.results/3 promises (variants.0.metrics" in " ".join(done.output.split())
    broken = json.loads((tiny_run.out_dir / "results.json").read_text())
    broken["task"] = "summarisation"
    (tmp_path / "results.json").write_text(json.dumps(broken))
    done = CliRunner().invoke(app, ["report", str(tmp_path)])
    assert done.exit_code == 2 and "unknown task 'summarisation'" in done.output
