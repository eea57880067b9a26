"""What checking a bundle from the bytes its loaders get costs, against hashing first and loading by path.

    python benchmarks/bundle_load.py [--variant runs/minilm-tweets/variants/onnx-int8-dynamic] [--rounds 7]

The runtime verifies what it loads: each file is read once, hashed, and those very bytes go to
onnxruntime and the tokenizer (docs/security.md). Before, it hashed every file, then let onnxruntime
open the model by path (mapping its weights file), a window in which a swapped file slipped in.
This bundles the variant (INT8 MiniLM of the embedded default run: `python benchmarks/default_run.py`
makes it; any classifier variant will do) and times, in a fresh process each, 1 thread, rounds
interleaved:

- `verified`: `edgenlp.runtime.load(bundle)`, as apps and the server open a bundle now;
- `hash-then-path`: the manifest checked, every file hashed, then the classifier opened by path
  (what the runtime did before);
- `unchecked`: the classifier opened by path with no check at all (the floor).

Each: cold start (load, then the first answer) and peak memory (VmHWM) after classifying 50 texts
one by one. Saves `benchmarks/results/bundle_load.json`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import record  # noqa: E402

MIB = 1 << 20
TEXTS = ["the flight was great", "lost my bag again", "ok I guess", "worst service ever", "love this airline"] * 10

PROBE = r"""
import json, sys, time
started = time.perf_counter()
from pathlib import Path
from edgenlp.runtime import bundle as rt
from edgenlp.runtime.classifier import TextClassifier
folder, how = Path(sys.argv[1]), sys.argv[2]
if how == "verified":
    model = rt.load(folder)
else:
    manifest = rt.read_manifest(folder)
    if how == "hash-then-path":
        rt.check_layout(folder, manifest)
        for name, entry in sorted(manifest["files"].items()):
            assert rt.sha256_file(folder / name) == entry["sha256"], name
    model = TextClassifier(folder, model_file=folder / manifest["model"]["file"], max_length=manifest.get("max_length"))
model.classify(["warm"])
cold = time.perf_counter() - started
for text in json.loads(sys.argv[3]):
    model.classify([text])
hwm = next(int(line.split()[1]) * 1024 for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(json.dumps({"cold_start_s": cold, "peak_rss_bytes": hwm}))
"""

WAYS = ("verified", "hash-then-path", "unchecked")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", default=str(ROOT / "runs" / "minilm-tweets" / "variants" / "onnx-int8-dynamic"))
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    from edgenlp.bundle import build

    work = Path(tempfile.mkdtemp(prefix="edgenlp-bundle-load-"))
    folder = build(Path(args.variant), work / "bundle")
    sizes = {p.relative_to(folder).as_posix(): p.stat().st_size for p in folder.rglob("*") if p.is_file()}
    measured: dict[str, list[dict]] = {way: [] for way in WAYS}
    for r in range(args.rounds):
        order = WAYS[r % 3 :] + WAYS[: r % 3]  # each way first in a third of the rounds
        for way in order:
            done = subprocess.run(
                [sys.executable, "-c", PROBE, str(folder), way, json.dumps(TEXTS)],
                capture_output=True,
                text=True,
                check=True,
                cwd=work,
            )
            measured[way].append(json.loads(done.stdout.strip().splitlines()[-1]))
    summary = {
        "variant": str(Path(args.variant).resolve().relative_to(ROOT))
        if ROOT in Path(args.variant).resolve().parents
        else args.variant,
        "rounds": args.rounds,
        "threads": 1,
        "bundle_bytes": sum(sizes.values()),
        "files": sizes,
        "ways": {},
    }
    for way in WAYS:
        cold = [m["cold_start_s"] for m in measured[way]]
        peak = [m["peak_rss_bytes"] for m in measured[way]]
        summary["ways"][way] = {
            "cold_start_s_median": round(statistics.median(cold), 4),
            "cold_start_s": [round(c, 4) for c in cold],
            "peak_rss_mib_median": round(statistics.median(peak) / MIB, 1),
        }
    base = summary["ways"]["hash-then-path"]
    now = summary["ways"]["verified"]
    summary["verified_vs_hash_then_path"] = {
        "cold_start_ratio": round(now["cold_start_s_median"] / base["cold_start_s_median"], 3),
        "peak_rss_mib_difference": round(now["peak_rss_mib_median"] - base["peak_rss_mib_median"], 1),
    }
    for way, row in summary["ways"].items():
        print(f"{way:<15} cold start {row['cold_start_s_median']:.3f} s   peak {row['peak_rss_mib_median']:.1f} MiB")
    print("verified / hash-then-path:", summary["verified_vs_hash_then_path"])
    record.save("bundle_load", summary)


if __name__ == "__main__":
    main()
