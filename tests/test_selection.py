"""Pareto front, constraint-based selection and CI gates on a hand-made results document."""

from __future__ import annotations

import pytest

from edgenlp.bench import selection
from edgenlp.errors import BenchError


def _variant(name, acc, p50, size_mb, p90=None):
    lat = {"p50": p50, "p90": p90 or p50 * 1.2, "p99": p50 * 1.5, "p50_ci": [p50, p50]}
    return {
        "name": name,
        "metrics": {"accuracy": acc, "macro_f1": acc},
        "size_bytes": size_mb * 1e6,
        "latency_ms": {
            "edge-1t": {"real": lat, "len128": {k: 4 * v if not isinstance(v, list) else v for k, v in lat.items()}}
        },
        "profiles": {"edge-1t": {"peak_rss_bytes": 100 * 2**20, "e2e_ms": lat}},
        "ratios": {"speedup_p50": {"edge-1t/real": 10.0 / p50}},
    }


@pytest.fixture()
def results():
    return {
        "reference": "torch",
        "profiles": [{"name": "edge-1t"}],
        "variants": [
            _variant("torch", 0.870, 10.0, 90),
            _variant("fp32", 0.870, 6.0, 91),
            _variant("int8", 0.866, 2.0, 23),
            _variant("int8-bad", 0.800, 1.9, 22),
            _variant("slow-big", 0.86, 12.0, 95),
        ],
    }


def test_pareto_front(results):
    assert selection.pareto_front(results) == ["torch", "fp32", "int8", "int8-bad"]


def test_selection_respects_limits(results):
    chosen = selection.select(results, max_accuracy_drop=1.0)
    assert chosen["selected"] == "int8" and "int8-bad" in chosen["rejected"]
    assert selection.select(results)["selected"] == "int8-bad"
    assert selection.select(results, max_accuracy_drop=0.1, max_size_mb=50)["selected"] is None
    assert selection.select(results, max_latency_ms=5, max_size_mb=22.5)["selected"] == "int8-bad"


def test_gates_pass_and_fail_with_a_readable_verdict(results):
    results["selection"] = selection.select(results, max_accuracy_drop=1.0)
    ok = selection.evaluate_gates(results, "accuracy_drop>1.0 or p90_ms>20 or size_mb>30")
    assert not ok["failed"] and ok["variant"] == "int8"
    bad = selection.evaluate_gates(results, "accuracy_drop > 0.2 and size_mb>20 or p50_ms_len128>100")
    assert bad["failed"]
    line = selection.verdict_line(bad)
    assert line.startswith("gate FAILED for int8") and "TRIGGERED" in line
    assert selection.evaluate_gates(results, "speedup<4")["failed"] is False
    assert selection.evaluate_gates(results, "peak_rss_mb@edge-1t>=100")["failed"] is True


@pytest.mark.parametrize(
    "expression, message",
    [
        ("acuracy_drop>1", "unknown metric 'acuracy_drop'"),
        ("p90_ms >> 20", "is not METRIC OP NUMBER"),
        ("size_mb>", "is not METRIC OP NUMBER"),
    ],
)
def test_gate_typos_are_clear(results, expression, message):
    with pytest.raises(BenchError, match=message):
        selection.parse_gates(expression)


def test_unknown_profile_in_a_gate(results):
    with pytest.raises(BenchError, match="profile 'laptop-2t' was not measured"):
        selection.evaluate_gates(results, "p50_ms@laptop-2t>1")


def test_the_gate_fails_when_no_variant_meets_the_limits(results):
    results["selection"] = selection.select(results, max_accuracy_drop=0.0, max_size_mb=50)
    assert results["selection"]["selected"] is None
    gates = selection.evaluate_gates(results, "p50_ms>1000")
    assert gates["failed"] and gates["variant"] is None
    assert selection.verdict_line(gates).startswith("gate FAILED: no variant meets the selection limits")


def test_macro_f1_is_in_percent_like_accuracy(results):
    results["selection"] = selection.select(results)
    v = results["variants"][0]
    assert selection.metric(results, v, "macro_f1") == pytest.approx(selection.metric(results, v, "accuracy"))
    assert selection.evaluate_gates(results, "macro_f1<50")["failed"] is False


def test_end_to_end_latency_has_no_fixed_lengths(results):
    with pytest.raises(BenchError, match="end-to-end latency is measured at real lengths only"):
        selection.parse_gates("e2e_p50_ms_len128>5")
    with pytest.raises(BenchError, match="real lengths only"):
        selection.metric(results, results["variants"][0], "e2e_p50_ms_len128")


def test_gates_are_checked_against_the_profiles_before_measuring():
    from edgenlp.bench.profiles import Profile

    profiles = [Profile(name="edge-1t", threads=1, seq_lengths=["real", 128])]
    selection.check_gates("p90_ms_len128>20 or p50_ms@edge-1t>3", profiles)
    with pytest.raises(BenchError, match="needs length 64"):
        selection.check_gates("p90_ms_len64>20", profiles)
    with pytest.raises(BenchError, match="names profile 'phone'"):
        selection.check_gates("p90_ms@phone>20", profiles)
