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

    from edgenlp.model_facts import encoder_macs

    (tmp_path / "config.json").write_text(
        json.dumps(
            {
                "model_type": "bert",
                "hidden_size": 4,
                "num_hidden_layers": 1,
                "num_attention_heads": 2,
                "intermediate_size": 8,
                "id2label": {"0": "a", "1": "b"},
                "pruned_heads": {"0": [1]},
            }
        )
    )
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


def test_round_bootstrap_does_not_count_within_round_spread_twice():
    """No drift between rounds: resampling whole rounds gives about the iid interval, not a wider one."""
    width = lambda s: s["p50_ci"][1] - s["p50_ci"][0]  # noqa: E731
    ratios = []
    for seed in range(12):
        rng = np.random.default_rng(seed)
        rounds = [list(rng.normal(10.0, 1.0, size=50)) for _ in range(8)]
        flat = [x for r in rounds for x in r]
        ratios.append(width(stats.latency_summary(rounds)) / width(stats.latency_summary(flat)))
    assert 0.8 < np.mean(ratios) < 1.15, ratios  # resampling inside the rounds as well gave 1.35


def test_unequal_rounds_are_kept_as_they_are():
    rounds = [[1.0] * 3, [2.0] * 30]
    s = stats.latency_summary(rounds, n_boot=300)
    assert s["n"] == 33 and s["rounds"] == 2
    # a replicate of two copies of the short round has p50 1.0: only possible when sizes are kept
    assert s["p50_ci"][0] == 1.0 and s["p50_ci"][1] == 2.0


def test_speedup_interval_is_paired_by_round():
    """Both variants slowed by the same machine drift: the ratio stays sharp because rounds are paired."""
    rng = np.random.default_rng(3)
    drift = [1.0, 1.6, 0.8, 1.3, 0.9, 1.5, 1.1, 0.7]
    ref = [list(10.0 * d + rng.normal(0, 0.05, 40)) for d in drift]
    var = [list(5.0 * d + rng.normal(0, 0.025, 40)) for d in drift]
    paired = stats.speedup(ref, var, n_boot=1000)
    assert paired["paired_by_round"] and 1.9 < paired["ci"][0] <= paired["ratio"] <= paired["ci"][1] < 2.1
    unpaired = stats.speedup([x for r in ref for x in r], [x for r in var for x in r], n_boot=1000)
    assert unpaired["ci"][1] - unpaired["ci"][0] > 3 * (paired["ci"][1] - paired["ci"][0])


def test_paired_latency_test_between_two_variants():
    rng = np.random.default_rng(4)
    drift = [1.0, 1.4, 0.9, 1.2, 1.0, 1.3, 0.8, 1.1]
    a = [list(10.0 * d + rng.normal(0, 0.1, 30)) for d in drift]
    slower = [list(11.0 * d + rng.normal(0, 0.1, 30)) for d in drift]
    same = [list(10.0 * d + rng.normal(0, 0.1, 30)) for d in drift]
    verdict = stats.paired_latency_test(slower, a)
    assert verdict["significant"] and verdict["rounds_a_slower"] == 8 and 1.05 < verdict["p50_ratio_a_over_b"] < 1.15
    assert not stats.paired_latency_test(same, a)["significant"]


def test_a_percentile_on_too_few_timings_is_flagged():
    s = stats.latency_summary(list(np.linspace(1, 2, 200)))
    assert any(w.startswith("p99 rests on 2 of 200") for w in s["warnings"])
    assert not any(w.startswith("p50 ") or w.startswith("p90 ") for w in s["warnings"])
    assert stats.latency_summary(list(np.linspace(1, 2, 1000)))["warnings"] == []


def test_encoder_macs_read_distilbert_field_names(tmp_path):
    import json

    from edgenlp.model_facts import encoder_macs

    (tmp_path / "config.json").write_text(
        json.dumps(
            {
                "model_type": "distilbert",
                "dim": 4,
                "n_layers": 1,
                "n_heads": 2,
                "hidden_dim": 8,
                "id2label": {"0": "a", "1": "b"},
            }
        )
    )
    L = 3
    assert encoder_macs(tmp_path, L) == 3 * L * 4 * 4 + 2 * L * L * 4 + L * 4 * 4 + 2 * L * 4 * 8 + 16 + 8
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert", "hidden_size": 4}))
    assert encoder_macs(tmp_path, L) is None  # incomplete config: no figure rather than a crash
