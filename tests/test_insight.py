"""Error analysis per classification variant: calibration, changed predictions, per-class deltas, plots."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest

from edgenlp.bench import stats


def png_size(encoded: str) -> tuple[int, int]:
    """(width, height) of a base64 PNG, after checking it is a real, non-blank image."""
    from PIL import Image

    image = Image.open(io.BytesIO(base64.b64decode(encoded)))
    image.load()
    pixels = np.asarray(image.convert("L"))
    assert pixels.std() > 5, "the plot is blank"
    return image.size


def test_ece_of_a_calibrated_and_an_overconfident_model():
    labels = [0] * 8 + [1] * 2  # a model 80% sure of class 0 on every text, right 80% of the time
    calibrated = np.tile([0.8, 0.2], (10, 1))
    assert stats.calibration(labels, calibrated)["ece"] == pytest.approx(0.0)
    overconfident = np.tile([0.99, 0.01], (10, 1))
    cal = stats.calibration(labels, overconfident)
    assert cal["ece"] == pytest.approx(0.19)
    assert sum(b["count"] for b in cal["bins"]) == 10 and cal["bins"][-1]["accuracy"] == pytest.approx(0.8)


def test_changed_predictions_carry_both_probabilities_and_their_effect():
    labels = [0, 1, 1, 0]
    ref = np.array([[0.9, 0.1], [0.4, 0.6], [0.7, 0.3], [0.6, 0.4]])
    var = np.array([[0.8, 0.2], [0.55, 0.45], [0.2, 0.8], [0.6, 0.4]])
    changed = stats.changed_predictions(labels, ref, var, ["a", "b", "c" * 300, "d"], excerpt=10)
    assert [c["index"] for c in changed] == [2, 1]  # moved most first
    first = changed[0]
    assert first["effect"] == "fixed" and first["reference_label"] == 0 and first["reference_probability"] == 0.7
    assert first["variant_label"] == 1 and first["variant_probability"] == 0.8 and first["text"] == "c" * 10 + "…"
    assert changed[1]["effect"] == "broke"


def test_per_class_deltas_in_points():
    delta = stats.per_class_deltas([0, 0, 1, 1], [0, 0, 0, 1], [0, 0, 1, 1], 2)
    assert delta["recall"] == [0.0, -50.0] and delta["predicted"] == [1, -1]


def test_every_classification_variant_has_its_error_analysis_in_the_reports(tiny_run):
    from edgenlp.report import plots

    results = tiny_run.results
    ref = results["reference"]
    for v in results["variants"]:
        m = v["metrics"]
        assert 0 <= m["calibration"]["ece"] <= 1
        if v["name"] != ref:
            assert "changed_vs_reference" in m and len(m["per_class_delta"]["f1"]) == len(results["eval"]["labels"])
            disagree = round((1 - m["label_agreement_with_reference"]) * results["eval"]["examples"])
            assert len(m["changed_vs_reference"]) == disagree
    md = (tiny_run.out_dir / "report.md").read_text()
    assert "## What compression changed" in md and "ECE %" in md
    html = (tiny_run.out_dir / "report.html").read_text()
    assert "What compression changed" in html and "Reliability diagrams" in html
    width, height = png_size(plots.reliability_diagrams(results))
    cols = min(3, len(results["variants"]))
    assert (width, height) == (round(3.4 * cols * 100), round(3.0 * -(-len(results["variants"]) // cols) * 100))
