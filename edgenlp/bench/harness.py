"""Measure candidates side by side: accuracy, latency distributions, throughput, memory and size.

Each (candidate, profile) pair gets its own fresh worker process, so no variant warms caches or
allocators for another and peak memory is per model. The workers stay alive and the harness asks
them for measurements in rounds, rotating the order each round: machine noise (another tenant, a
frequency change) then hits every candidate alike, and the ratios between them stay honest even
when absolute times drift. Warm-up calls are never timed.

Results follow the `edgenlp.results/1` schema (see `results_schema` below and README).
"""

from __future__ import annotations

import json
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from .. import progress
from ..artifact import MODEL_SUFFIXES, library_versions
from ..errors import BenchError
from ..hardware import cpu_info
from . import stats
from .profiles import Profile
from .profiles import load as load_profile

RESULTS_SCHEMA = "edgenlp.results/1"


class BenchSettings(BaseModel):
    """How much to measure. Defaults give stable p50s at a few minutes for a handful of variants."""

    model_config = ConfigDict(extra="forbid")

    profiles: list[str | Profile] = ["edge-1t", "laptop-2t"]
    iterations: int = Field(200, ge=10)
    """Timed batch-1 inferences per candidate, profile and sequence length (spread over the rounds)."""
    rounds: int = Field(8, ge=1)
    """Interleaving rounds: each round visits every candidate in a rotated order. The confidence
    intervals resample rounds, so more rounds give intervals that hold across runs."""
    warmup: int = Field(10, ge=0)
    throughput_batches: int = Field(10, ge=1)
    max_eval_examples: int | None = Field(None, ge=1)
    reference: str | None = None
    """Candidate that ratios and paired tests compare with; default the first one."""
    seed: int = 0
    bootstrap: int = Field(1000, ge=100)


@dataclass
class Candidate:
    """Something to measure: a model folder (or .onnx file) and the runner that executes it.

    `info` is carried into the results untouched (lineage, validation, stage metadata): the
    harness does not interpret it.
    """

    name: str
    path: Path
    runner: str
    info: dict = field(default_factory=dict)


@dataclass
class EvalSet:
    texts: list[str]
    labels: list[int]
    label_names: list[str]
    name: str = "eval"


def model_size_bytes(path: Path) -> int:
    if path.is_file():
        siblings = [p for p in path.parent.iterdir() if p.suffix in (".onnx_data", ".data") and p.stem.startswith(path.stem)]
        return path.stat().st_size + sum(p.stat().st_size for p in siblings)
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and p.suffix in MODEL_SUFFIXES)


def parameter_count(path: Path) -> int | None:
    """Number of stored weights (an INT8 weight counts once, like its FP32 original)."""
    try:
        onnx_files = [path] if path.suffix == ".onnx" else sorted(path.glob("*.onnx"))
        if onnx_files:
            import onnx

            model = onnx.load(str(onnx_files[0]), load_external_data=False)
            float_or_int8 = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.INT8,
                             onnx.TensorProto.UINT8, onnx.TensorProto.BFLOAT16}
            return int(sum(int(np.prod(t.dims)) for t in model.graph.initializer
                           if t.data_type in float_or_int8 and len(t.dims) >= 1 and np.prod(t.dims) > 1))
        weights = path / "model.safetensors"
        if weights.exists():
            from safetensors import safe_open

            with safe_open(str(weights), "np") as f:
                return int(sum(int(np.prod(f.get_slice(k).get_shape())) for k in f.keys()))
    except Exception:  # a count is a nicety; a model that cannot be parsed fails later, loudly
        return None
    return None


def encoder_macs(path: Path, length: float) -> int | None:
    """Multiply-accumulates of one BERT-family classification pass over `length` tokens, from config.json.

    Counts the matrix products (projections, attention scores and context, feed-forward, pooler,
    classifier); element-wise work is left out. Pruned heads are honoured. None for other models.
    """
    folder = path if path.is_dir() else path.parent
    config_path = folder / "config.json"
    if not config_path.exists():
        return None
    config = json.loads(config_path.read_text())
    if config.get("model_type") not in ("bert", "roberta", "distilbert", "xlm-roberta", "electra"):
        return None
    h, layers = config["hidden_size"], config["num_hidden_layers"]
    heads, inter = config["num_attention_heads"], config["intermediate_size"]
    head_dim = h // heads
    pruned = {int(k): len(v) for k, v in (config.get("pruned_heads") or {}).items()}
    total = 0.0
    for layer in range(layers):
        a = (heads - pruned.get(layer, 0)) * head_dim
        total += 3 * length * h * a + 2 * length * length * a + length * a * h + 2 * length * h * inter
    total += h * h + h * max(1, len(config.get("id2label") or {}) or 2)
    return int(total)


class _WorkerProcess:
    def __init__(self, candidate: Candidate, profile: Profile, texts_file: Path, log_dir: Path):
        self.candidate, self.profile = candidate, profile
        log_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = log_dir / f"{candidate.name}.{profile.name}.log"
        self._log = open(self.log_path, "w")
        env = {**os.environ, "OMP_NUM_THREADS": str(profile.threads), "TOKENIZERS_PARALLELISM": "false"}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "edgenlp.bench.worker", str(candidate.path), candidate.runner,
             str(profile.threads), str(texts_file)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log, text=True, env=env)
        self._read()  # waits for "ready"

    def _read(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait(timeout=10)
            tail = self.log_path.read_text(errors="replace").strip().splitlines()[-1:] or ["no output"]
            raise BenchError(f"{self.candidate.name}: the measuring process died ({tail[0][:200]}); "
                             f"full log in {self.log_path}")
        reply = json.loads(line)
        if "error" in reply:
            raise BenchError(f"{self.candidate.name} cannot be measured: {reply['error'][:300]}")
        return reply

    def ask(self, **request) -> dict:
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        return self._read()

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write('{"op": "quit"}\n')
                self.proc.stdin.flush()
                self.proc.wait(timeout=10)
            except (BrokenPipeError, subprocess.TimeoutExpired):
                self.proc.kill()
        self._log.close()


def environment() -> dict:
    return {"cpu": cpu_info().summary(), "python": platform.python_version(), "platform": platform.platform(),
            "versions": library_versions(),
            "threads_note": "intra-op threads per profile, inter-op 1, sequential execution"}


def _shape_key(shape) -> str:
    return "real" if shape == "real" else f"len{shape}"


def measure(candidates: list[Candidate], eval_set: EvalSet, settings: BenchSettings, work_dir: Path) -> dict:
    """Measure every candidate under every profile; returns an `edgenlp.results/1` document."""
    if not candidates:
        raise BenchError("nothing to measure: give at least one model")
    names = [c.name for c in candidates]
    if len(set(names)) != len(names):
        raise BenchError(f"candidate names must be unique, got {names}")
    reference = settings.reference or names[0]
    if reference not in names:
        raise BenchError(f"reference '{reference}' is not among the measured variants ({', '.join(names)})")
    profiles = [load_profile(p) for p in settings.profiles]

    order = list(range(len(eval_set.texts)))
    random.Random(settings.seed).shuffle(order)
    if settings.max_eval_examples:
        order = order[:settings.max_eval_examples]
    texts = [eval_set.texts[i] for i in order]
    labels = [eval_set.labels[i] for i in order]

    work_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", suffix=".jsonl", dir=work_dir, delete=False, encoding="utf-8") as f:
        for t in texts:
            f.write(json.dumps({"text": t}, ensure_ascii=False) + "\n")
        texts_file = Path(f.name)

    workers: dict[tuple[str, str], _WorkerProcess] = {}
    raw: dict[str, dict] = {c.name: {"profiles": {p.name: {"latency": {}, "e2e": [], "throughput": []}
                                                  for p in profiles}} for c in candidates}
    try:
        with progress.task("starting workers", len(candidates) * len(profiles)) as advance:
            for c in candidates:
                for p in profiles:
                    workers[(c.name, p.name)] = _WorkerProcess(c, p, texts_file, work_dir / "logs")
                    advance(1)
        with progress.task("accuracy", len(candidates)) as advance:
            for c in candidates:
                reply = workers[(c.name, profiles[0].name)].ask(op="eval")
                raw[c.name]["preds"], raw[c.name]["probs"] = reply["preds"], reply["probs"]
                advance(1)
        per_round = -(-settings.iterations // settings.rounds)  # ceil: at least `iterations` in all
        visits = list(workers.items())
        with progress.task("latency rounds", settings.rounds * len(visits)) as advance:
            for r in range(settings.rounds):
                shift = r % len(visits)
                for (cname, pname), w in visits[shift:] + visits[:shift]:
                    slot = raw[cname]["profiles"][pname]
                    start = r * per_round
                    warm = settings.warmup if r == 0 else 2
                    for shape in w.profile.seq_lengths:
                        ms = w.ask(op="latency", shape=shape, batch=w.profile.batch_size, n=per_round,
                                   start=start, warmup=warm)["ms"]
                        slot["latency"].setdefault(_shape_key(shape), []).append(ms)
                    slot["e2e"].append(w.ask(op="e2e", n=max(1, per_round // 2), start=start, warmup=2)["ms"])
                    if w.profile.throughput_batch:
                        n_batches = -(-settings.throughput_batches // settings.rounds)
                        slot["throughput"].extend(w.ask(op="latency", shape="real", batch=w.profile.throughput_batch,
                                                        n=n_batches, start=r * n_batches, warmup=1)["ms"])
                    advance(1)
        for (cname, pname), w in workers.items():
            raw[cname]["profiles"][pname]["process"] = w.ask(op="stats")
    finally:
        for w in workers.values():
            w.close()
        texts_file.unlink(missing_ok=True)

    return _assemble(candidates, profiles, raw, texts, labels, eval_set, reference, settings)


def _assemble(candidates, profiles, raw, texts, labels, eval_set, reference, settings) -> dict:
    n_classes = len(eval_set.label_names)
    variants = []
    ref_correct = np.asarray(raw[reference]["preds"]) == np.asarray(labels)
    for c in candidates:
        r = raw[c.name]
        preds = r["preds"]
        metrics = stats.classification_metrics(labels, preds, n_classes, settings.bootstrap)
        metrics["pr_curves"] = stats.pr_curves(labels, np.asarray(r["probs"]))
        correct = np.asarray(preds) == np.asarray(labels)
        if c.name != reference:
            metrics["mcnemar_vs_reference"] = stats.mcnemar(ref_correct, correct)
            metrics["label_agreement_with_reference"] = float(np.mean(np.asarray(preds) == np.asarray(raw[reference]["preds"])))
        latency, per_profile = {}, {}
        for p in profiles:
            slot = r["profiles"][p.name]
            latency[p.name] = {k: stats.latency_summary(v, settings.bootstrap) for k, v in slot["latency"].items()}
            batch_ms = np.asarray(slot["throughput"]) if slot["throughput"] else None
            process = slot["process"]
            per_profile[p.name] = {
                "threads": p.threads,
                "e2e_ms": stats.latency_summary(slot["e2e"], settings.bootstrap),
                "throughput_seq_per_s": (float(p.throughput_batch * 1000.0 / np.median(batch_ms))
                                         if batch_ms is not None else None),
                "throughput_batch": p.throughput_batch,
                "peak_rss_bytes": process["peak_rss_bytes"],
                "rss_after_load_bytes": process["rss_after_load_bytes"],
                "load_seconds": process["load_seconds"],
                "memory_budget_mb": p.memory_budget_mb,
                "fits_memory_budget": (None if p.memory_budget_mb is None
                                       else process["peak_rss_bytes"] <= p.memory_budget_mb * 2**20),
            }
        variants.append({
            "name": c.name,
            "path": str(c.path),
            "runner": c.runner,
            **c.info,
            "size_bytes": model_size_bytes(c.path),
            "params": parameter_count(c.path),
            "macs": {"real_mean": encoder_macs(c.path, r["profiles"][profiles[0].name]["process"]["mean_tokens"]),
                     **{f"len{L}": encoder_macs(c.path, L) for p in profiles for L in p.seq_lengths if L != "real"}},
            "metrics": metrics,
            "latency_ms": latency,
            "latency_samples_ms": {p.name: {k: [round(x, 4) for one_round in v for x in one_round]
                                            for k, v in r["profiles"][p.name]["latency"].items()} for p in profiles},
            "profiles": per_profile,
            "peak_rss_bytes": per_profile[profiles[0].name]["peak_rss_bytes"],
        })
    ref = next(v for v in variants if v["name"] == reference)
    for v in variants:
        v["ratios"] = _ratios(v, ref)
    return {
        "schema": RESULTS_SCHEMA,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "reference": reference,
        "eval": {"name": eval_set.name, "examples": len(texts), "labels": eval_set.label_names,
                 "mean_tokens": raw[reference]["profiles"][profiles[0].name]["process"]["mean_tokens"]},
        "profiles": [p.model_dump() for p in profiles],
        "settings": settings.model_dump(mode="json", exclude={"profiles"}),
        "environment": environment(),
        "variants": variants,
    }


def _ratios(v: dict, ref: dict) -> dict:
    speedup = {}
    for pname, shapes in v["latency_ms"].items():
        for shape, summary in shapes.items():
            base = ref["latency_ms"].get(pname, {}).get(shape, {}).get("p50")
            if base and summary.get("p50"):
                speedup[f"{pname}/{shape}"] = base / summary["p50"]
    return {
        "speedup_p50": speedup,
        "size": v["size_bytes"] / ref["size_bytes"] if ref["size_bytes"] else None,
        "accuracy_delta_points": 100.0 * (v["metrics"]["accuracy"] - ref["metrics"]["accuracy"]),
        "macro_f1_delta_points": 100.0 * (v["metrics"]["macro_f1"] - ref["metrics"]["macro_f1"]),
        "peak_rss": v["peak_rss_bytes"] / ref["peak_rss_bytes"] if ref["peak_rss_bytes"] else None,
    }
