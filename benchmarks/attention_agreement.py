"""Did compression keep what the model attends to? Rollout rank agreement over many test texts.

    python benchmarks/attention_agreement.py [--run runs/minilm-tweets] [--texts 20]

For every variant of a finished run whose attention can be read (PyTorch, unfused ONNX, INT8
included), the attention rollout of each of the first N test texts is compared with the run's
reference by Spearman rank correlation (what `edgenlp explain` reports for one text). Saves the
mean, median and minimum per variant to `benchmarks/results/attention_agreement.json`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import record  # noqa: E402

from edgenlp import data, explain  # noqa: E402
from edgenlp.bench.results import variant_folder  # noqa: E402
from edgenlp.errors import EdgeNLPError  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--run", action="append", help="run folders (default: runs/minilm-tweets and runs/minilm-medical)"
    )
    parser.add_argument("--texts", type=int, default=20)
    args = parser.parse_args()
    runs = [Path(r) for r in (args.run or [ROOT / "runs" / "minilm-tweets", ROOT / "runs" / "minilm-medical"])]
    summary = {"texts_per_run": args.texts, "runs": {}}
    for run in runs:
        results = json.loads((run / "results.json").read_text())
        source = results["run"]["data"]["name"]
        texts = data.load(data.DataSpec(source=source)).test.texts[: args.texts]
        reference = results["reference"]
        paths = {v["name"]: variant_folder(run, v["path"]) for v in results["variants"]}
        per_variant, skipped = {}, {}
        ref_maps = [explain.attention_maps(paths[reference], t) for t in texts]
        for name, path in paths.items():
            if name == reference:
                continue
            try:
                rhos = [
                    explain.compare(r, explain.attention_maps(path, t))["rollout_spearman"]
                    for r, t in zip(ref_maps, texts)
                ]
            except EdgeNLPError as exc:
                skipped[name] = str(exc)
                continue
            per_variant[name] = {
                "mean": round(float(np.mean(rhos)), 4),
                "median": round(float(np.median(rhos)), 4),
                "min": round(float(np.min(rhos)), 4),
                "texts": len(rhos),
            }
            print(
                f"{run.name:<16} {name:<20} rollout Spearman vs {reference}: mean {per_variant[name]['mean']:.4f}, "
                f"min {per_variant[name]['min']:.4f} over {len(rhos)} texts"
            )
        summary["runs"][run.name] = {
            "data": source,
            "reference": reference,
            "variants": per_variant,
            "skipped": skipped,
            "mean_tokens": round(float(np.mean([len(m.tokens) for m in ref_maps])), 1),
        }
    record.save("attention_agreement", summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
