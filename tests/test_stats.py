from __future__ import annotations

import numpy as np

from edgenlp.bench import stats


def test_latency_summary_has_ordered_percentiles_and_intervals():
    rng = np.random.default_rng(0)
    s = stats.latency_summary(list(rng.gamma(4.0, 1.0, size=500)))
    assert s["n"] == 500 and s["p50"] <= s["p90"] <= s["p99"]
    for p in (50, 90, 99):
        lo, hi = s[f"p{p}_ci"]
        assert lo <= s[f"p{p}"] <= hi


def test_mcnemar_detects_a_real_drop_and_ignores_noise():
    ref = np.ones(400, dtype=bool)
    worse = ref.copy()
    worse[:40] = False
    assert stats.mcnemar(ref, worse)["significant"]
    same = ref.copy()
    same[:2] = False
    assert not stats.mcnemar(ref, same)["significant"]


def test_classification_metrics():
    m = stats.classification_metrics([0, 1, 1, 2], [0, 1, 2, 2], 3, n_boot=200)
    assert m["accuracy"] == 0.75 and m["confusion_matrix"][1] == [0, 1, 1]
    assert m["accuracy_ci"][0] <= 0.75 <= m["accuracy_ci"][1]
