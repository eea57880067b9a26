"""Measure candidates side by side: accuracy, latency distributions, throughput, memory and size.

Each (candidate, profile) pair gets its own fresh worker process, so no variant warms caches or
allocators for another and peak memory is per model. The workers stay alive and the harness asks
them for measurements in rounds, in a fresh random order each round (seeded and recorded): machine
noise (another tenant, a frequency change) then hits every candidate alike, and the ratios between
them stay honest even when absolute times drift. Warm-up calls are never timed.

Results follow the `edgenlp.results/2` schema (see README); `edgenlp report` still reads `/1`.
"""

from __future__ import annotations

import json
import os
import platform
import random
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from .. import progress
from ..artifact import library_versions, loaded_model_files, onnx_file
from ..errors import BenchError
from ..fsio import write_text_atomic
from ..hardware import cpu_info
from . import stats
from .profiles import Profile
from .profiles import load as load_profile

RESULTS_SCHEMA = "edgenlp.results/2"
READABLE_SCHEMAS = ("edgenlp.results/1", RESULTS_SCHEMA)


class BenchSettings(BaseModel):
    """How much to measure. Defaults give stable p50s at a few minutes for a handful of variants."""

    model_config = ConfigDict(extra="forbid")

    profiles: list[str | Profile] = ["edge-1t", "laptop-2t"]
    iterations: int = Field(200, ge=10)
    """Timed batch-1 inferences per candidate, profile and sequence length (spread over the rounds)."""
    rounds: int = Field(8, ge=1)
    """Interleaving rounds: each round visits every candidate in a seeded random order. The confidence
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
    """Bytes of the files the runner loads, each once (see `artifact.loaded_model_files`)."""
    return sum(p.stat().st_size for p in loaded_model_files(path))


def parameter_count(path: Path) -> int | None:
    """Number of stored weights (an INT8 weight counts once, like its FP32 original)."""
    try:
        if path.suffix == ".onnx" or any(path.glob("*.onnx")):
            import onnx

            model = onnx.load(str(onnx_file(path)), load_external_data=False)
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


_CONFIG_ALIASES = {  # BERT's field names, then what other encoders call the same thing
    "hidden_size": ("hidden_size", "dim"),
    "num_hidden_layers": ("num_hidden_layers", "n_layers"),
    "num_attention_heads": ("num_attention_heads", "n_heads"),
    "intermediate_size": ("intermediate_size", "hidden_dim"),
}
ENCODER_TYPES = ("bert", "roberta", "distilbert", "xlm-roberta", "electra")


def _read_config(path: Path) -> dict:
    folder = path if path.is_dir() else path.parent
    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError):
        return {}
    return config if isinstance(config, dict) else {}


def encoder_macs(path: Path, length: float) -> int | None:
    """Multiply-accumulates of one BERT-family classification pass over `length` tokens, from config.json.

    Counts the matrix products (projections, attention scores and context, feed-forward, pooler,
    classifier); element-wise work is left out. Pruned heads are honoured. None for other models,
    or when the config lacks a size it needs.
    """
    config = _read_config(path)
    if config.get("model_type") not in ENCODER_TYPES:
        return None
    sizes = {}
    for field_name, aliases in _CONFIG_ALIASES.items():
        value = next((config[a] for a in aliases if isinstance(config.get(a), int)), None)
        if value is None:
            return None
        sizes[field_name] = value
    h, layers = sizes["hidden_size"], sizes["num_hidden_layers"]
    heads, inter = sizes["num_attention_heads"], sizes["intermediate_size"]
    head_dim = h // heads
    pruned = {int(k): len(v) for k, v in (config.get("pruned_heads") or {}).items()}
    total = 0.0
    for layer in range(layers):
        a = (heads - pruned.get(layer, 0)) * head_dim
        total += 3 * length * h * a + 2 * length * length * a + length * a * h + 2 * length * h * inter
    total += h * h + h * max(1, len(config.get("id2label") or {}) or 2)
    return int(total)


def max_tokens(path: Path) -> int:
    """The longest input the candidate takes: its tokenizer's limit within its position embeddings."""
    from ..runtime import configured_max_length

    limit = configured_max_length(path if path.is_dir() else path.parent)
    config = _read_config(path)
    positions = config.get("max_position_embeddings") or config.get("n_positions")
    return min(limit, positions) if isinstance(positions, int) else limit


def check_lengths(candidates: list[Candidate], profiles: list[Profile]) -> None:
    """Refuse a profile length that a candidate cannot take, before any process starts."""
    for c in candidates:
        limit = max_tokens(c.path)
        for p in profiles:
            too_long = [n for n in p.seq_lengths if n != "real" and n > limit]
            if too_long:
                raise BenchError(f"profile '{p.name}' asks for {too_long[0]} tokens but {c.name} takes at most "
                                 f"{limit}: lower the profile's seq_lengths")


class _WorkerProcess:
    def __init__(self, candidate: Candidate, threads: int, label: str, texts_file: Path, log_dir: Path):
        self.candidate, self.threads = candidate, threads
        log_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = log_dir / f"{candidate.name}.{label}.log"
        self._log = open(self.log_path, "w")
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "TOKENIZERS_PARALLELISM": "false"}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "edgenlp.bench.worker", str(candidate.path), candidate.runner,
             str(threads), str(texts_file)],
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


def preflight(candidates: list[Candidate], settings: BenchSettings) -> tuple[str, list[Profile]]:
    """Everything that can be refused before a process starts: names, reference, profiles, lengths."""
    if not candidates:
        raise BenchError("nothing to measure: give at least one model")
    names = [c.name for c in candidates]
    if len(set(names)) != len(names):
        raise BenchError(f"candidate names must be unique, got {names}")
    reference = settings.reference or names[0]
    if reference not in names:
        raise BenchError(f"reference '{reference}' is not among the measured variants ({', '.join(names)})")
    profiles = [load_profile(p) for p in settings.profiles]
    if len({p.name for p in profiles}) != len(profiles):
        raise BenchError(f"profile names must be unique, got {[p.name for p in profiles]}")
    check_lengths(candidates, profiles)
    return reference, profiles


def measure(candidates: list[Candidate], eval_set: EvalSet, settings: BenchSettings, work_dir: Path) -> dict:
    """Measure every candidate under every profile; returns an `edgenlp.results/2` document.

    Accuracy comes from one process per candidate that does nothing else and is closed before the
    timing starts; latency, throughput and memory from one fresh process per candidate and
    profile, so every profile's memory figures describe the same work.
    """
    reference, profiles = preflight(candidates, settings)
    order = list(range(len(eval_set.texts)))
    random.Random(settings.seed).shuffle(order)
    if settings.max_eval_examples:
        order = order[:settings.max_eval_examples]
    texts = [eval_set.texts[i] for i in order]
    labels = [eval_set.labels[i] for i in order]

    work_dir.mkdir(parents=True, exist_ok=True)
    texts_file = work_dir / "texts.jsonl"  # one fixed name: a killed run leaves nothing a rerun does not overwrite
    write_text_atomic(texts_file, "".join(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in texts))

    workers: dict[tuple[str, str], _WorkerProcess] = {}
    raw: dict[str, dict] = {c.name: {"profiles": {p.name: {"latency": {}, "e2e": [], "throughput": []}
                                                  for p in profiles}} for c in candidates}
    visiting_orders = []
    try:
        with progress.task("accuracy", len(candidates)) as advance:
            for c in candidates:
                evaluator = _WorkerProcess(c, profiles[0].threads, "eval", texts_file, work_dir / "logs")
                try:
                    reply = evaluator.ask(op="eval")
                finally:
                    evaluator.close()
                raw[c.name]["preds"], raw[c.name]["probs"] = reply["preds"], reply["probs"]
                advance(1)
        with progress.task("starting workers", len(candidates) * len(profiles)) as advance:
            for c in candidates:
                for p in profiles:
                    workers[(c.name, p.name)] = _WorkerProcess(c, p.threads, p.name, texts_file, work_dir / "logs")
                    advance(1)
        per_round = -(-settings.iterations // settings.rounds)  # ceil: at least `iterations` in all
        batches_per_round = -(-settings.throughput_batches // settings.rounds)
        visits = list(workers)
        rng = random.Random(settings.seed)
        with progress.task("latency rounds", settings.rounds * len(visits)) as advance:
            for r in range(settings.rounds):
                rng.shuffle(visits)  # a fresh random order each round, so no variant always follows another
                visiting_orders.append([f"{c}@{p}" for c, p in visits])
                for cname, pname in visits:
                    w, profile = workers[(cname, pname)], next(p for p in profiles if p.name == pname)
                    slot = raw[cname]["profiles"][pname]
                    start = r * per_round
                    warm = settings.warmup if r == 0 else 2
                    for shape in profile.seq_lengths:
                        ms = w.ask(op="latency", shape=shape, batch=profile.batch_size, n=per_round,
                                   start=start, warmup=warm)["ms"]
                        slot["latency"].setdefault(_shape_key(shape), []).append(ms)
                    slot["e2e"].append(w.ask(op="e2e", n=max(1, per_round // 2), start=start, warmup=2)["ms"])
                    if profile.throughput_batch:
                        slot["throughput"].append(w.ask(op="throughput", batch=profile.throughput_batch,
                                                        n=batches_per_round, start=r * batches_per_round, warmup=1))
                    advance(1)
        for (cname, pname), w in workers.items():
            raw[cname]["profiles"][pname]["process"] = w.ask(op="stats")
    finally:
        for w in workers.values():
            w.close()
        texts_file.unlink(missing_ok=True)

    results = _assemble(candidates, profiles, raw, texts, labels, eval_set, reference, settings)
    results["visiting_order"] = {"seed": settings.seed, "rounds": visiting_orders}
    return results


def _throughput(rounds: list[dict], batch: int) -> dict | None:
    """Sequences and real tokens per second over all timed batches; padding stated, not hidden."""
    if not rounds:
        return None
    ms = sum(sum(r["ms"]) for r in rounds)
    sequences = sum(sum(r["sequences"]) for r in rounds)
    tokens = sum(sum(r["tokens"]) for r in rounds)
    positions = sum(sum(r["positions"]) for r in rounds)
    return {"batch": batch, "batches": sum(len(r["ms"]) for r in rounds), "sequences": sequences,
            "seq_per_s": 1000.0 * sequences / ms, "real_tokens_per_s": 1000.0 * tokens / ms,
            "padding_share": 1.0 - tokens / positions if positions else 0.0,
            "how": "consecutive batches of the evaluation texts, each padded to its longest text"}


def _process_memory(process: dict) -> dict:
    return {"peak_rss_bytes": process["peak_rss_bytes"], "load_peak_rss_bytes": process.get("load_peak_rss_bytes"),
            "rss_after_load_bytes": process.get("rss_after_load_bytes"),
            "steady_rss_bytes": process.get("steady_rss_bytes"), "load_seconds": process["load_seconds"]}


def _assemble(candidates, profiles, raw, texts, labels, eval_set, reference, settings) -> dict:
    n_classes = len(eval_set.label_names)
    variants = []
    ref_correct = np.asarray(raw[reference]["preds"]) == np.asarray(labels)
    primary = profiles[0].name
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
            throughput = _throughput(slot["throughput"], p.throughput_batch)
            memory = _process_memory(slot["process"])
            per_profile[p.name] = {
                "threads": p.threads,
                "e2e_ms": stats.latency_summary(slot["e2e"], settings.bootstrap),
                "throughput": throughput,
                "throughput_seq_per_s": throughput["seq_per_s"] if throughput else None,
                "throughput_batch": p.throughput_batch,
                **memory,
                "memory_budget_mb": p.memory_budget_mb,
                "fits_memory_budget": (None if p.memory_budget_mb is None
                                       else memory["peak_rss_bytes"] <= p.memory_budget_mb * 2**20),
            }
        variants.append({
            "name": c.name,
            "path": str(c.path),
            "runner": c.runner,
            **c.info,
            "size_bytes": model_size_bytes(c.path),
            "size_files": [str(f.name) for f in loaded_model_files(c.path)],
            "params": parameter_count(c.path),
            "macs": {"real_mean": encoder_macs(c.path, r["profiles"][primary]["process"]["mean_tokens"]),
                     **{f"len{L}": encoder_macs(c.path, L) for p in profiles for L in p.seq_lengths if L != "real"}},
            "metrics": metrics,
            "predictions": [int(x) for x in preds],
            "latency_ms": latency,
            "latency_samples_ms": {p.name: {k: [[round(x, 4) for x in one_round] for one_round in v]
                                            for k, v in r["profiles"][p.name]["latency"].items()} for p in profiles},
            "profiles": per_profile,
            "peak_rss_bytes": per_profile[primary]["peak_rss_bytes"],
        })
    ref = next(v for v in variants if v["name"] == reference)
    for v in variants:
        v["ratios"] = _ratios(v, ref, settings.bootstrap)
    return {
        "schema": RESULTS_SCHEMA,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "reference": reference,
        "eval": {"name": eval_set.name, "examples": len(texts), "labels": eval_set.label_names,
                 "labels_true": [int(y) for y in labels],
                 "mean_tokens": raw[reference]["profiles"][primary]["process"]["mean_tokens"]},
        "profiles": [p.model_dump() for p in profiles],
        "settings": settings.model_dump(mode="json", exclude={"profiles"}),
        "environment": environment(),
        "variants": variants,
    }


def _ratios(v: dict, ref: dict, n_boot: int) -> dict:
    """Every ratio against the reference; speed-ups carry a 95% interval paired by round."""
    speedup, speedup_ci = {}, {}
    for pname, shapes in v["latency_samples_ms"].items():
        for shape, rounds in shapes.items():
            base = ref["latency_samples_ms"].get(pname, {}).get(shape)
            if base and rounds:
                one = stats.speedup(base, rounds, n_boot)
                speedup[f"{pname}/{shape}"] = one["ratio"]
                speedup_ci[f"{pname}/{shape}"] = one["ci"]
    return {
        "speedup_p50": speedup,
        "speedup_p50_ci": speedup_ci,
        "size": v["size_bytes"] / ref["size_bytes"] if ref["size_bytes"] else None,
        "accuracy_delta_points": 100.0 * (v["metrics"]["accuracy"] - ref["metrics"]["accuracy"]),
        "macro_f1_delta_points": 100.0 * (v["metrics"]["macro_f1"] - ref["metrics"]["macro_f1"]),
        "peak_rss": v["peak_rss_bytes"] / ref["peak_rss_bytes"] if ref["peak_rss_bytes"] else None,
    }
