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


def test_encoder_macs_match_a_hand_count(tmp_path):
    import json

    from edgenlp.bench.harness import encoder_macs

    (tmp_path / "config.json").write_text(json.dumps({
        "model_type": "bert", "hidden_size": 4, "num_hidden_layers": 1, "num_attention_heads": 2,
        "intermediate_size": 8, "id2label": {"0": "a", "1": "b"}, "pruned_heads": {"0": [1]}}))
    # one head of dim 2 left: qkv 3*L*4*2, scores+context 2*L*L*2, out L*2*4, ffn 2*L*4*8, pooler 16, classifier 8
    L = 3
    assert encoder_macs(tmp_path, L) == 3 * L * 4 * 2 + 2 * L * L * 2 + L * 2 * 4 + 2 * L * 4 * 8 + 16 + 8
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    assert encoder_macs(tmp_path, L) is None


def test_round_bootstrap_widens_intervals_when_rounds_drift():
    rng = np.random.default_rng(1)
    rounds = [list(rng.normal(10.0 + shift, 0.05, size=40)) for shift in (0.0, 0.3, -0.2, 0.1, 0.25, -0.1)]
    flat = [x for r in rounds for x in r]
    iid, grouped = stats.latency_summary(flat), stats.latency_summary(rounds)
    assert grouped["n"] == iid["n"] == 240 and grouped["rounds"] == 6 and grouped["p50"] == iid["p50"]
    width = lambda s: s["p50_ci"][1] - s["p50_ci"][0]  # noqa: E731
    assert width(grouped) > 2 * width(iid)
