"""Measure candidates side by side: accuracy, latency distributions, throughput, memory and size.

Each (candidate, profile) pair gets its own fresh worker process, so no variant warms caches or
allocators for another and peak memory is per model. The workers stay alive and the harness asks
them for measurements in rounds, in a fresh random order each round (seeded and recorded): machine
noise (another tenant, a frequency change) then hits every candidate alike, and the ratios between
them stay honest even when absolute times drift. Warm-up calls are never timed.

Results follow the `edgenlp.results/3` schema (`bench/results.py`); `edgenlp report` still reads /1 and /2.
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

from .. import executors, progress, tasks
from ..artifact import ENGINE_LIBRARIES, TRACKED_LIBRARIES, library_versions, loaded_model_files
from ..errors import BenchError
from ..hardware import cpu_info
from ..model_facts import model_size_bytes, parameter_count
from .profiles import BenchSettings, Profile
from .profiles import load as load_profile
from .results import SCHEMA as RESULTS_SCHEMA  # noqa: E402
from .results import check as check_results  # noqa: E402


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


class _WorkerProcess:
    def __init__(self, candidate: Candidate, task: str, threads: int, label: str, payload_file: Path, log_dir: Path):
        self.candidate, self.threads = candidate, threads
        log_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = log_dir / f"{candidate.name}.{label}.log"
        self._log = open(self.log_path, "w")
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "TOKENIZERS_PARALLELISM": "false"}
        # this interpreter running edgenlp's own worker module with fixed arguments, no shell
        self.proc = subprocess.Popen(  # nosec B603
            [
                sys.executable,
                "-m",
                "edgenlp.bench.worker",
                task,
                str(candidate.path),
                candidate.runner,
                str(threads),
                str(payload_file),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
            env=env,
        )
        self._read()  # waits for "ready"

    def _read(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait(timeout=10)
            tail = self.log_path.read_text(errors="replace").strip().splitlines()[-1:] or ["no output"]
            raise BenchError(
                f"{self.candidate.name}: the measuring process died ({tail[0][:200]}); full log in {self.log_path}"
            )
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
    return {
        "cpu": cpu_info().summary(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": library_versions(TRACKED_LIBRARIES + ENGINE_LIBRARIES),
        "threads_note": "intra-op threads per profile, inter-op 1, sequential execution",
    }


def check_lengths(candidates: list[Candidate], profiles: list[Profile], task: str = "text-classification") -> None:
    """Refuse what a candidate cannot take under a profile (the task says what that is)."""
    tasks.get(task).check_profiles(candidates, profiles)


def preflight(
    candidates: list[Candidate], settings: BenchSettings, task: str = "text-classification"
) -> tuple[str, list[Profile]]:
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
    check_lengths(candidates, profiles, task)
    return reference, profiles


def measure(
    candidates: list[Candidate],
    eval_set,
    settings: BenchSettings,
    work_dir: Path,
    measure_on: dict[str, str] | None = None,
) -> dict:
    """Measure every candidate under every profile; returns an `edgenlp.results/3` document.

    The eval set says its task, and the task says what to evaluate and which workloads to time.
    The quality evaluation runs in one process per candidate that does nothing else and is closed
    before the timing starts; latency and memory come from one fresh process per candidate and
    profile, so every profile's memory figures describe the same work.

    The run's executor (`executors.current()`) says where: evaluations may run anywhere, several at once; the timing of each group
    of profiles (`measure_on`: profile -> node kind) runs on one measuring node of that kind, alone
    there, and the results say which node measured what.
    """
    executor = executors.current()
    task = tasks.get(eval_set.task)
    reference, profiles = preflight(candidates, settings, task.NAME)
    unknown = sorted(set(measure_on or {}) - {p.name for p in profiles})
    if unknown:
        raise BenchError(
            f"executor.measure_on names profile '{unknown[0]}', which is not measured "
            f"({', '.join(p.name for p in profiles)}): fix the name"
        )
    payload = task.payload(eval_set, settings)
    work_dir.mkdir(parents=True, exist_ok=True)
    shipped = {c.name: executors.Shipped.of(c.path) for c in candidates}
    log_dir = work_dir / "logs"

    raw: dict[str, dict] = {c.name: {"profiles": {p.name: {} for p in profiles}} for c in candidates}
    for name, reply in evaluate(
        candidates, task.NAME, payload, reference, profiles[0].threads, log_dir, shipped
    ).items():
        raw[name]["eval"] = reply

    groups: dict[str | None, list[Profile]] = {}
    for p in profiles:
        groups.setdefault((measure_on or {}).get(p.name), []).append(p)

    def time_group(item) -> dict:
        kind, group = item
        needs = executors.Needs(
            cpus=max(p.threads for p in group),
            measure=True,
            kind=kind,
            what=f"timing {', '.join(p.name for p in group)}",
        )
        return executor.call(
            _time_rounds,
            task.NAME,
            [_portable(c) for c in candidates],
            [shipped[c.name] for c in candidates],
            group,
            settings,
            payload,
            reference,
            log_dir,
            needs=needs,
        )

    visiting_orders: list[list[str]] = [[] for _ in range(settings.rounds)]
    measured_on = {}
    for timed in executors.run_all(executor, time_group, list(groups.items()), executors.Needs(measure=True)):
        for cname, by_profile in timed["raw"].items():
            raw[cname]["profiles"].update(by_profile)
        for r, order in enumerate(timed["rounds"]):
            visiting_orders[r] += order
        measured_on.update({p: timed["where"] for p in timed["profiles"]})

    results = _assemble(task, candidates, profiles, raw, payload, reference, settings)
    results["visiting_order"] = {"seed": settings.seed, "rounds": visiting_orders}
    results["environment"]["measured_on"] = measured_on
    results["environment"]["cpu"] = measured_on[profiles[0].name]["cpu"]
    for v in results["variants"]:
        for pname, slot in v["profiles"].items():
            slot["node_kind"] = measured_on[pname]["kind"]
    return check_results(results, "the measured results")


def evaluate(
    candidates: list[Candidate],
    task_name: str,
    payload: dict,
    reference: str,
    threads: int,
    log_dir: Path,
    shipped: dict | None = None,
) -> dict[str, dict]:
    """The quality evaluation of every candidate, each in its own process, as many at once as the
    run's executor runs (anywhere: quality does not depend on the node). Returns each one's reply."""
    executor = executors.current()
    shipped = shipped or {c.name: executors.Shipped.of(c.path) for c in candidates}
    ref = next(c for c in candidates if c.name == reference)
    memory = executor.settings.eval_memory_gb
    with progress.task("quality", len(candidates)) as advance:

        def one(c: Candidate) -> dict:
            needs = executors.Needs(cpus=threads, memory_gb=memory, what=f"evaluating {c.name}")
            reply = executor.call(
                _evaluate,
                task_name,
                _portable(c),
                shipped[c.name],
                _portable(ref),
                shipped[reference],
                threads,
                payload,
                log_dir,
                needs=needs,
            )
            advance(1)
            return reply

        replies = executors.run_all(executor, one, candidates, executors.Needs(cpus=threads, memory_gb=memory))
    return {c.name: reply for c, reply in zip(candidates, replies)}


def _portable(c: Candidate) -> Candidate:
    """The candidate without its lineage (what a node needs to run it)."""
    return Candidate(c.name, c.path, c.runner)


def _payload_file(payload: dict) -> Path:
    import tempfile

    fd, name = tempfile.mkstemp(prefix="edgenlp-eval-", suffix=".json")
    with os.fdopen(fd, "w") as f:
        json.dump(payload, f)
    return Path(name)


def _logs_here(log_dir: Path) -> Path:
    """The run's log folder where this node sees it, else a temporary one."""
    import tempfile

    return log_dir if log_dir.parent.is_dir() else Path(tempfile.mkdtemp(prefix="edgenlp-logs-"))


def _evaluate(
    task_name: str,
    candidate: Candidate,
    path: Path,
    ref: Candidate,
    ref_path: Path,
    threads: int,
    payload: dict,
    log_dir: Path,
) -> dict:
    """The quality evaluation of one candidate in its own process (on whichever node runs this)."""
    task = tasks.get(task_name)
    here, ref_here = Candidate(candidate.name, path, candidate.runner), Candidate(ref.name, ref_path, ref.runner)
    payload_file = _payload_file(payload)
    try:
        evaluator = _WorkerProcess(here, task_name, threads, "eval", payload_file, _logs_here(log_dir))
        try:
            return evaluator.ask(op="eval", **task.eval_request(here, ref_here))
        finally:
            evaluator.close()
    finally:
        payload_file.unlink(missing_ok=True)


def _time_rounds(
    task_name: str,
    candidates: list[Candidate],
    paths: list[Path],
    profiles: list[Profile],
    settings: BenchSettings,
    payload: dict,
    reference: str,
    log_dir: Path,
) -> dict:
    """Every candidate under every profile of one group, interleaved in seeded random rounds, on this node."""
    task = tasks.get(task_name)
    here = [Candidate(c.name, path, c.runner) for c, path in zip(candidates, paths)]
    payload_file = _payload_file(payload)
    workers: dict[tuple[str, str], _WorkerProcess] = {}
    raw = {c.name: {p.name: {} for p in profiles} for c in here}
    orders = []
    logs = _logs_here(log_dir)
    try:
        with progress.task("starting workers", len(here) * len(profiles)) as advance:
            for c in here:
                for p in profiles:
                    workers[(c.name, p.name)] = _WorkerProcess(c, task_name, p.threads, p.name, payload_file, logs)
                    advance(1)
        visits = list(workers)
        rng = random.Random(settings.seed)
        by_name = {p.name: p for p in profiles}
        with progress.task("latency rounds", settings.rounds * len(visits)) as advance:
            for r in range(settings.rounds):
                rng.shuffle(visits)  # a fresh random order each round, so no variant always follows another
                orders.append([f"{c}@{p}" for c, p in visits])
                for cname, pname in visits:
                    slot = raw[cname][pname]
                    for workload in task.workloads(by_name[pname], settings, r, cname, reference):
                        slot.setdefault(workload.key, []).append(workers[(cname, pname)].ask(**workload.request))
                    advance(1)
        for (cname, pname), w in workers.items():
            raw[cname][pname]["process"] = w.ask(op="stats")
    finally:
        for w in workers.values():
            w.close()
        payload_file.unlink(missing_ok=True)
    return {"raw": raw, "rounds": orders, "profiles": [p.name for p in profiles], "where": executors.here()}


def _process_memory(process: dict) -> dict:
    return {
        "peak_rss_bytes": process["peak_rss_bytes"],
        "load_peak_rss_bytes": process.get("load_peak_rss_bytes"),
        "rss_after_load_bytes": process.get("rss_after_load_bytes"),
        "steady_rss_bytes": process.get("steady_rss_bytes"),
        "load_seconds": process["load_seconds"],
    }


def _assemble(task, candidates, profiles, raw, payload, reference, settings) -> dict:
    """What every task has (size, memory, lineage) around what the task summarises."""
    variants = []
    primary = profiles[0].name
    for c in candidates:
        v = {
            "name": c.name,
            "path": str(c.path),
            "runner": c.runner,
            **c.info,
            "size_bytes": model_size_bytes(c.path),
            "size_files": [str(f.name) for f in loaded_model_files(c.path)],
            "params": parameter_count(c.path),
        }
        v.update(task.summarise(c, raw[c.name], raw[reference], payload, profiles, settings))
        for p in profiles:
            memory = _process_memory(raw[c.name]["profiles"][p.name]["process"])
            v["profiles"][p.name].update(
                {
                    **memory,
                    "memory_budget_mb": p.memory_budget_mb,
                    "fits_memory_budget": (
                        None if p.memory_budget_mb is None else memory["peak_rss_bytes"] <= p.memory_budget_mb * 2**20
                    ),
                }
            )
        v["peak_rss_bytes"] = v["profiles"][primary]["peak_rss_bytes"]
        variants.append(v)
    ref = next(v for v in variants if v["name"] == reference)
    for v in variants:
        v["ratios"] = {
            **task.ratios(v, ref, settings),
            "size": v["size_bytes"] / ref["size_bytes"] if ref["size_bytes"] else None,
            "peak_rss": v["peak_rss_bytes"] / ref["peak_rss_bytes"] if ref["peak_rss_bytes"] else None,
        }
    return {
        "schema": RESULTS_SCHEMA,
        "task": task.NAME,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "reference": reference,
        "eval": task.eval_section(payload, raw[reference], profiles),
        "profiles": [p.model_dump() for p in profiles],
        "settings": settings.model_dump(mode="json", exclude={"profiles"}),
        "environment": environment(),
        "variants": variants,
    }
