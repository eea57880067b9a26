"""The harness side: the timed requests of a round, and the raw answers turned into figures.

The evaluation replays the test texts one by one; the timed workloads are batch-1 latency at real and
fixed lengths, end-to-end (tokenise + run + argmax) and batched throughput. Quality is accuracy with
its interval; its loss is counted in points.
"""

from __future__ import annotations

import numpy as np

from ..protocol import Workload


def check_profiles(candidates, profiles) -> None:
    """Refuse a profile length that a candidate cannot take, before any process starts."""
    from ...errors import BenchError
    from ...model_facts import max_tokens

    for c in candidates:
        limit = max_tokens(c.path)
        for p in profiles:
            too_long = [n for n in p.seq_lengths if n != "real" and n > limit]
            if too_long:
                raise BenchError(
                    f"profile '{p.name}' asks for {too_long[0]} tokens but {c.name} takes at most "
                    f"{limit}: lower the profile's seq_lengths"
                )


def truncated_input(profile) -> int | None:
    """The longest input a profile feeds, which a variant's `max_length` (its tokenizer's cut) must allow."""
    return max((n for n in profile.seq_lengths if n != "real"), default=None)


def speed_targets(profile: dict) -> list[tuple[str, str]]:
    """What selection ranks variants by in a profile: batch-1 p50 at each measured input length."""
    return [
        ("real lengths" if s == "real" else f"{s} tokens", "p50_ms" if s == "real" else f"p50_ms_len{s}")
        for s in profile["seq_lengths"]
    ]


def eval_request(candidate, reference) -> dict:
    return {}


def shape_key(shape) -> str:
    return "real" if shape == "real" else f"len{shape}"


def workloads(profile, settings, round_index: int, candidate: str, reference: str) -> list[Workload]:
    per_round = -(-settings.iterations // settings.rounds)  # ceil: at least `iterations` in all
    batches_per_round = -(-settings.throughput_batches // settings.rounds)
    start, warm = round_index * per_round, settings.warmup if round_index == 0 else 2
    out = [
        Workload(
            f"latency/{shape_key(s)}",
            {"op": "latency", "shape": s, "batch": profile.batch_size, "n": per_round, "start": start, "warmup": warm},
        )
        for s in profile.seq_lengths
    ]
    out.append(Workload("e2e", {"op": "e2e", "n": max(1, per_round // 2), "start": start, "warmup": 2}))
    if profile.throughput_batch:
        out.append(
            Workload(
                "throughput",
                {
                    "op": "throughput",
                    "batch": profile.throughput_batch,
                    "n": batches_per_round,
                    "start": round_index * batches_per_round,
                    "warmup": 1,
                },
            )
        )
    return out


def throughput_figures(rounds: list[dict], batch: int) -> dict | None:
    """Sequences and real tokens per second over all timed batches; padding stated, not hidden."""
    if not rounds:
        return None
    ms = sum(sum(r["ms"]) for r in rounds)
    sequences = sum(sum(r["sequences"]) for r in rounds)
    tokens = sum(sum(r["tokens"]) for r in rounds)
    positions = sum(sum(r["positions"]) for r in rounds)
    return {
        "batch": batch,
        "batches": sum(len(r["ms"]) for r in rounds),
        "sequences": sequences,
        "seq_per_s": 1000.0 * sequences / ms,
        "real_tokens_per_s": 1000.0 * tokens / ms,
        "padding_share": 1.0 - tokens / positions if positions else 0.0,
        "how": "consecutive batches of the evaluation texts, each padded to its longest text",
    }


def summarise(candidate, raw: dict, reference_raw: dict, payload: dict, profiles, settings) -> dict:
    """Accuracy with its interval and paired test, and the latency, end-to-end and throughput figures."""
    from ...bench import stats

    labels = payload["labels"]
    preds = raw["eval"]["preds"]
    metrics = stats.classification_metrics(labels, preds, len(payload["label_names"]), settings.bootstrap)
    probs = np.asarray(raw["eval"]["probs"])
    metrics["pr_curves"] = stats.pr_curves(labels, probs)
    metrics["calibration"] = stats.calibration(labels, probs)
    if raw is not reference_raw:
        ref_preds = np.asarray(reference_raw["eval"]["preds"])
        metrics["mcnemar_vs_reference"] = stats.mcnemar(
            ref_preds == np.asarray(labels), np.asarray(preds) == np.asarray(labels)
        )
        metrics["label_agreement_with_reference"] = float(np.mean(np.asarray(preds) == ref_preds))
        metrics["changed_vs_reference"] = stats.changed_predictions(
            labels, np.asarray(reference_raw["eval"]["probs"]), probs, payload["texts"]
        )
        metrics["per_class_delta"] = stats.per_class_deltas(
            labels, preds, reference_raw["eval"]["preds"], len(payload["label_names"])
        )
    return {
        "metrics": metrics,
        "predictions": [int(x) for x in preds],
        **encoder_timings(candidate, raw, profiles, settings),
    }


def encoder_timings(candidate, raw: dict, profiles, settings) -> dict:
    """An encoder's MACs, latency summaries and samples per profile and shape, end-to-end and throughput."""
    from ...bench import stats
    from ...model_facts import encoder_macs

    latency, samples, per_profile = {}, {}, {}
    for p in profiles:
        slot = raw["profiles"][p.name]
        timed = {k.split("/", 1)[1]: [r["ms"] for r in v] for k, v in slot.items() if k.startswith("latency/")}
        latency[p.name] = {k: stats.latency_summary(v, settings.bootstrap) for k, v in timed.items()}
        samples[p.name] = {k: [[round(x, 4) for x in one] for one in v] for k, v in timed.items()}
        throughput = throughput_figures(slot.get("throughput", []), p.throughput_batch)
        per_profile[p.name] = {
            "threads": p.threads,
            "e2e_ms": stats.latency_summary([r["ms"] for r in slot["e2e"]], settings.bootstrap),
            "throughput": throughput,
            "throughput_seq_per_s": throughput["seq_per_s"] if throughput else None,
            "throughput_batch": p.throughput_batch,
        }
    mean_tokens = raw["profiles"][profiles[0].name]["process"]["mean_tokens"]
    return {
        "macs": {
            "real_mean": encoder_macs(candidate.path, mean_tokens),
            **{f"len{L}": encoder_macs(candidate.path, L) for p in profiles for L in p.seq_lengths if L != "real"},
        },
        "latency_ms": latency,
        "latency_samples_ms": samples,
        "profiles": per_profile,
    }


def eval_section(payload: dict, reference_raw: dict, profiles) -> dict:
    return {
        "name": payload["name"],
        "examples": len(payload["texts"]),
        "labels": payload["label_names"],
        "labels_true": [int(y) for y in payload["labels"]],
        "mean_tokens": reference_raw["profiles"][profiles[0].name]["process"]["mean_tokens"],
    }


def ratios(v: dict, ref: dict, settings) -> dict:
    """Speed-ups against the reference with a 95% interval paired by round, and the accuracy deltas."""
    return {
        **speedups(v, ref, settings),
        "accuracy_delta_points": 100.0 * (v["metrics"]["accuracy"] - ref["metrics"]["accuracy"]),
        "macro_f1_delta_points": 100.0 * (v["metrics"]["macro_f1"] - ref["metrics"]["macro_f1"]),
    }


def speedups(v: dict, ref: dict, settings) -> dict:
    """Reference p50 / variant p50 per profile and shape, with a 95% interval paired by round."""
    from ...bench import stats

    speedup, speedup_ci = {}, {}
    for pname, shapes in v["latency_samples_ms"].items():
        for shape, rounds in shapes.items():
            base = ref["latency_samples_ms"].get(pname, {}).get(shape)
            if base and rounds:
                one = stats.speedup(base, rounds, settings.bootstrap)
                speedup[f"{pname}/{shape}"] = one["ratio"]
                speedup_ci[f"{pname}/{shape}"] = one["ci"]
    return {"speedup_p50": speedup, "speedup_p50_ci": speedup_ci}


def metric(results: dict, variant: dict, name: str, profile: str) -> float | None:
    """accuracy / accuracy_drop / macro_f1 in %, or None for a name this task does not define."""
    ref = next(v for v in results["variants"] if v["name"] == results["reference"])
    if name == "accuracy":
        return 100.0 * variant["metrics"]["accuracy"]
    if name == "accuracy_drop":
        return 100.0 * (ref["metrics"]["accuracy"] - variant["metrics"]["accuracy"])
    if name == "macro_f1":
        return 100.0 * variant["metrics"]["macro_f1"]
    return None
