"""The bundle and its torch-free runtime, measured against the bundle issue's targets.

    python benchmarks/runtime.py [--run runs/minilm-tweets] [--rounds 2]

Bundles the selected variant of the embedded default run (INT8 MiniLM on the tweets; `python
benchmarks/default_run.py` makes it) with `--target ort`, builds the `edgenlp-runtime` wheel and
installs it alone in a new virtual environment (no torch, no transformers), and there, each figure
in fresh processes, 1 thread:

- import: `import edgenlp.runtime` and the libraries it runs on (numpy, onnxruntime, tokenizers);
- cold start: `load(bundle)` with the sha256 check, then the first answer;
- peak memory (VmHWM) of a process that loads the bundle and classifies 50 texts one by one, beside
  a plain onnxruntime session + tokenizers on the same model, and Optimum's `ORTModel` (in the
  toolkit's environment, which has torch);
- batched throughput on the recipe's tweets test set (2,000 texts), batches of 32: consecutive
  batches padded to their longest text (naive) against length-sorted packing, interleaved rounds,
  with the labels of both compared with each other and with one-by-one answers (and, for naive
  padding, the exported mask value against the bundle's rewritten one); the same on 500 texts with
  the FP32 bundle, whose answers must not depend on batching.

Also reads the bundle's size and the ORT-format model's size. Saves `benchmarks/results/runtime.json`.
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
REPEATS = 7

PEAK = """
def peak_mib():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
"""

IMPORT_PROBE = """
import time, json
t0 = time.perf_counter()
import edgenlp.runtime
t1 = time.perf_counter()
import numpy, onnxruntime, tokenizers
from edgenlp.runtime import bundle, classifier, text, session
t2 = time.perf_counter()
print(json.dumps({"runtime_only_s": t1 - t0, "with_libraries_s": t2 - t0}))
"""

COLD_PROBE = """
import time, json, sys
t0 = time.perf_counter()
from edgenlp.runtime import load
import numpy, onnxruntime, tokenizers
t1 = time.perf_counter()
b = load(sys.argv[1], threads=1)
t2 = time.perf_counter()
answer = b.classify(["my flight was delayed again"])[0]
t3 = time.perf_counter()
print(json.dumps({"import_s": t1 - t0, "load_verified_s": t2 - t1, "first_answer_s": t3 - t2, "total_s": t3 - t0,
                  "label": answer["label"]}))
"""

MEMORY_PROBE = (
    PEAK
    + """
import json, sys
texts = json.load(open(sys.argv[2]))[:50]
how = sys.argv[3]
if how == "runtime":
    from edgenlp.runtime import load
    b = load(sys.argv[1], threads=1)
    labels = [b.classify([t])[0]["label"] for t in texts]
elif how == "runtime-no-arena":
    from edgenlp.runtime import load
    b = load(sys.argv[1], threads=1, memory_arena=False)
    labels = [b.classify([t])[0]["label"] for t in texts]
elif how == "plain-onnxruntime":
    import numpy as np, onnxruntime as ort
    from tokenizers import Tokenizer
    so = ort.SessionOptions(); so.intra_op_num_threads = 1; so.inter_op_num_threads = 1
    s = ort.InferenceSession(sys.argv[1] + "/onnx/model_quantized.onnx", so, providers=["CPUExecutionProvider"])
    tok = Tokenizer.from_file(sys.argv[1] + "/tokenizer.json"); tok.enable_truncation(128)
    labels = []
    for t in texts:
        e = tok.encode(t)
        ids = np.array([e.ids], dtype=np.int64)
        labels.append(int(s.run(None, {"input_ids": ids, "attention_mask": np.ones_like(ids),
                                       "token_type_ids": np.zeros_like(ids)})[0].argmax()))
print(json.dumps({"peak_mib": peak_mib(), "answers": len(labels)}))
"""
)

OPTIMUM_PROBE = (
    PEAK
    + """
import json, sys
import torch
torch.set_num_threads(1)
from optimum.onnxruntime import ORTModelForSequenceClassification
from transformers import AutoTokenizer
import onnxruntime as ort
so = ort.SessionOptions(); so.intra_op_num_threads = 1; so.inter_op_num_threads = 1
texts = json.load(open(sys.argv[2]))[:50]
model = ORTModelForSequenceClassification.from_pretrained(sys.argv[1], subfolder="onnx",
                                                          file_name="model_quantized.onnx", session_options=so)
tok = AutoTokenizer.from_pretrained(sys.argv[1])
labels = [int(model(**tok([t], return_tensors="pt", truncation=True)).logits.argmax()) for t in texts]
print(json.dumps({"peak_mib": peak_mib(), "answers": len(labels)}))
"""
)

THROUGHPUT_PROBE = """
import json, sys, time
import numpy as np
from edgenlp.runtime import load, TextClassifier, length_batches
data = json.load(open(sys.argv[2]))
texts, truth = data["texts"][: int(sys.argv[5])], data["labels"]
rounds = int(sys.argv[4])
bundle = load(sys.argv[1], threads=1)
ways = {"naive": lambda: bundle.classify(texts, batch_size=32, sort_by_length=False),
        "bucketed": lambda: bundle.classify(texts, batch_size=32)}
if sys.argv[3] != "-":
    exported = TextClassifier(sys.argv[1], model_file=sys.argv[3], threads=1, max_length=bundle.manifest["max_length"])
    ways["naive_exported_mask"] = lambda: exported.classify(texts, batch_size=32, sort_by_length=False)
for f in ways.values():  # warm-up: the arena grows to the largest batch once, outside the timings
    f()
seconds = {k: [] for k in ways}
answers = {}
for r in range(rounds):
    for k, f in ways.items():
        t0 = time.perf_counter(); answers[k] = f(); seconds[k].append(time.perf_counter() - t0)
single = [bundle.classify([t])[0] for t in texts]
lengths = bundle.model.tokenizer.lengths(texts)
naive_positions = sum(32 * max(lengths[i:i + 32]) if i + 32 <= len(texts) else (len(texts) - i) * max(lengths[i:])
                      for i in range(0, len(texts), 32))
packed_positions = sum(len(b) * max(lengths[j] for j in b) for b in length_batches(lengths, 32))
def labels(a): return [x["label"] for x in a]
def agree(a, b): return float(np.mean([x == y for x, y in zip(labels(a), labels(b))]))
def maxdiff(a, b): return float(max(abs(x["score"] - y["probabilities"][x["label"]]) for x, y in zip(a, b)))
def accuracy(a): return float(np.mean([x == y for x, y in zip(labels(a), truth)]))
out = {"texts": len(texts), "rounds": rounds, "seconds": seconds,
       "texts_per_s": {k: len(texts) / min(v) for k, v in seconds.items()},
       "padding_share": {"naive": 1 - sum(lengths) / naive_positions, "bucketed": 1 - sum(lengths) / packed_positions},
       "label_agreement_bucketed_vs_naive": agree(answers["bucketed"], answers["naive"]),
       "max_probability_difference_bucketed_vs_naive": maxdiff(answers["bucketed"], answers["naive"]),
       "label_agreement_vs_one_by_one": {k: agree(answers[k], single) for k in ("naive", "bucketed")},
       "accuracy": {"one_by_one": accuracy(single), **{k: accuracy(answers[k]) for k in ("naive", "bucketed")}}}
if "naive_exported_mask" in answers:
    out["label_agreement_rewritten_vs_exported_mask"] = agree(answers["naive"], answers["naive_exported_mask"])
print(json.dumps(out))
"""


def run_json(python: Path, script: str, *args: str, cwd: Path) -> dict:
    done = subprocess.run([str(python), "-c", script, *args], capture_output=True, text=True, cwd=cwd, check=False)
    if done.returncode != 0:
        raise SystemExit(f"probe failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def repeated(python: Path, script: str, *args: str, cwd: Path, n: int = REPEATS) -> dict:
    runs = [run_json(python, script, *args, cwd=cwd) for _ in range(n)]
    keys = [k for k, v in runs[0].items() if isinstance(v, float)]
    return {
        k: {
            "median": statistics.median(r[k] for r in runs),
            "min": min(r[k] for r in runs),
            "max": max(r[k] for r in runs),
        }
        for k in keys
    } | {"runs": n}


def runtime_venv(where: Path) -> Path:
    wheels = where / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(wheels), str(ROOT / "runtime-wheel")],
        check=True,
    )
    subprocess.run([sys.executable, "-m", "venv", str(where / "venv")], check=True)
    python = where / "venv" / "bin" / "python"
    subprocess.run([str(python), "-m", "pip", "install", "-q", *map(str, wheels.glob("*.whl"))], check=True)
    listed = json.loads(
        subprocess.run(
            [str(python), "-m", "pip", "list", "--format=json"], capture_output=True, text=True, check=True
        ).stdout
    )
    return python, {p["name"]: p["version"] for p in listed}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", default=str(ROOT / "runs" / "minilm-tweets"))
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    run_dir = Path(args.run)
    if not (run_dir / "results.json").is_file():
        raise SystemExit(f"{run_dir} has no results.json: run `python benchmarks/default_run.py` first")

    from edgenlp import data
    from edgenlp import recipe as recipe_module
    from edgenlp.bundle import build

    bundle = build(run_dir, run_dir / "bundle", targets=["ort"])
    fp32 = build(run_dir / "variants" / "onnx-fp32", run_dir / "bundle-fp32")
    manifest = json.loads((bundle / "manifest.json").read_text())
    variant_model = run_dir / "variants" / manifest["model"]["variant"] / "model.onnx"
    dataset = data.load(recipe_module.default().data)
    test, names = dataset.test, dataset.labels
    texts = test.texts
    default_files = {k: v["bytes"] for k, v in manifest["files"].items() if not k.startswith("ort/")}
    summary = {
        "bundle": {
            "source": f"{run_dir.name} selected variant {manifest['model']['variant']}",
            "default_layout_mb": sum(default_files.values()) / 1e6,
            "files": default_files,
            "onnx_model_bytes": manifest["model"]["bytes"],
            "ort_model_bytes": manifest["targets"]["ort"]["bytes"],
            "ort_names": manifest["targets"]["ort"]["names"],
            "mobile_usability": manifest["targets"]["ort"]["mobile_usability"]["recommendation"],
            "padding_probe": manifest["batching"],
        },
    }
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        python, installed = runtime_venv(tmp)
        summary["runtime_environment"] = {
            "packages": installed,
            "torch_installed": "torch" in installed,
            "transformers_installed": "transformers" in installed,
        }
        texts_file = tmp / "texts.json"
        texts_file.write_text(json.dumps(texts))
        labelled = tmp / "labelled.json"
        labelled.write_text(json.dumps({"texts": texts, "labels": [names[y] for y in test.labels]}))
        print("import and cold start ...", flush=True)
        summary["import"] = repeated(python, IMPORT_PROBE, cwd=tmp)
        summary["cold_start"] = repeated(python, COLD_PROBE, str(bundle), cwd=tmp)
        print("memory ...", flush=True)
        memory = {
            how: run_json(python, MEMORY_PROBE, str(bundle), str(texts_file), how, cwd=tmp)["peak_mib"]
            for how in ("runtime", "runtime-no-arena", "plain-onnxruntime")
        }
        memory["optimum-ortmodel (toolkit env, torch)"] = run_json(
            Path(sys.executable), OPTIMUM_PROBE, str(bundle), str(texts_file), cwd=tmp
        )["peak_mib"]
        summary["peak_memory_mib_load_and_50_texts"] = memory
        print(f"throughput on {len(texts)} texts, {args.rounds} rounds ...", flush=True)
        summary["throughput_batch32"] = run_json(
            python,
            THROUGHPUT_PROBE,
            str(bundle),
            str(labelled),
            str(variant_model),
            str(args.rounds),
            str(len(texts)),
            cwd=tmp,
        )
        print("FP32 bundle: same outputs in any batching ...", flush=True)
        summary["fp32_same_outputs"] = run_json(
            python, THROUGHPUT_PROBE, str(fp32), str(labelled), "-", "1", "500", cwd=tmp
        )
    t = summary["throughput_batch32"]["texts_per_s"]
    summary["throughput_batch32"]["bucketed_over_naive"] = t["bucketed"] / t["naive"]
    summary["throughput_batch32"]["rewritten_over_exported_mask_naive"] = t["naive"] / t["naive_exported_mask"]
    summary["targets"] = {
        "import_s<=0.3": summary["import"]["with_libraries_s"]["median"] <= 0.3,
        "cold_start_s<=0.5": summary["cold_start"]["load_verified_s"]["median"]
        + summary["cold_start"]["first_answer_s"]["median"]
        <= 0.5,
        "peak_mib<=100": memory["runtime"] <= 100,
        "bundle_mb<=25": summary["bundle"]["default_layout_mb"] <= 25,
        "ort_not_larger": summary["bundle"]["ort_model_bytes"] <= summary["bundle"]["onnx_model_bytes"],
        "bucketed>=2x_naive": summary["throughput_batch32"]["bucketed_over_naive"] >= 2,
    }
    print(json.dumps(summary, indent=1, default=str)[:6000])
    record.save("runtime", summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
