"""The typed shape of `results.json` (`edgenlp.results/3`), and reading the older versions.

The harness validates what it writes and `report` / `compare` validate what they read, so a
results file that is not what it claims fails with one line instead of a KeyError deep in a
renderer. Task-specific parts (metrics, latency kinds) stay mappings: the task defines them.
Versions: /1 kept latencies flat, /2 per round; neither names its task (both are classification);
/3 records the task and lets it define metrics and workloads.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from ..errors import BenchError, EdgeNLPError, dotted_path, validation_detail

SCHEMA = "edgenlp.results/3"
READABLE = ("edgenlp.results/1", "edgenlp.results/2", SCHEMA)
WITH_ROUNDS = ("edgenlp.results/2", SCHEMA)
"""Versions that keep per-round timings (what paired comparisons need)."""


class VariantResult(BaseModel):
    model_config = ConfigDict(extra="allow")

    name: str
    path: str
    runner: str
    size_bytes: int
    metrics: dict[str, Any]
    latency_ms: dict[str, dict[str, Any]]
    profiles: dict[str, dict[str, Any]]
    peak_rss_bytes: int
    ratios: dict[str, Any]


class Results(BaseModel):
    model_config = ConfigDict(extra="allow")

    schema_: str
    task: str = "text-classification"
    created: str
    reference: str
    eval: dict[str, Any]
    profiles: list[dict[str, Any]]
    settings: dict[str, Any]
    environment: dict[str, Any]
    variants: list[VariantResult]


def check(document: dict, origin: str = "results") -> dict:
    """The document with its task filled in (older versions are classification), or a one-line error."""
    if not isinstance(document, dict) or document.get("schema") not in READABLE:
        what = (
            f"schema {document.get('schema')!r}" if isinstance(document, dict) else f"a JSON {type(document).__name__}"
        )
        raise EdgeNLPError(
            f"{origin} is {what}, not edgenlp results ({', '.join(READABLE)}): "
            "pass a run folder written by `edgenlp optimize` or `edgenlp bench`"
        )
    try:
        Results(schema_=document["schema"], **{k: v for k, v in document.items() if k != "schema"})
    except ValidationError as exc:
        raise EdgeNLPError(
            f"{origin} does not hold what {document['schema']} promises "
            f"({validation_detail(exc, name=dotted_path)}): rerun the benchmark"
        ) from exc
    document.setdefault("task", "text-classification")
    return document


def relative_variant_path(run_dir: Path, path: str | Path) -> str:
    """How results.json records a variant's folder: relative to the run folder when inside it, so a run
    folder can be moved, copied or read from any working directory. `path` may be absolute, relative to
    the working directory (a fresh measurement) or already recorded (a report rendered again)."""
    run_dir, path = Path(run_dir), Path(path)
    if not path.is_absolute() and (run_dir / path).exists():
        return path.as_posix()  # already the recorded form
    folder = path if path.exists() else variant_folder(run_dir, path)
    try:
        return folder.resolve().relative_to(run_dir.resolve()).as_posix()
    except ValueError:
        return str(folder.resolve())


def variant_folder(run_dir: Path, recorded: str | Path) -> Path:
    """A variant's folder from its results record: relative to the run folder (how runs record it now), an
    absolute path, or, in results written before, relative to the directory the run was started in
    (`runs/<run>/variants/<name>`), which is looked up as `<run folder>/variants/<name>`."""
    run_dir, recorded = Path(run_dir), Path(recorded)
    if recorded.is_absolute():
        return recorded
    inside = run_dir / recorded
    if inside.exists():
        return inside
    parts = recorded.parts
    if "variants" in parts:
        moved = run_dir.joinpath(*parts[parts.index("variants") :])
        if moved.exists():
            return moved
    return inside


# -- reading one figure: the accessors that selection, gates and the reports share -----------------

MB = 1e6
MIB = 2**20
LATENCY_METRIC = re.compile(r"^(e2e_)?p(50|90|99)_ms(?:_len(\d+))?$")
PLAIN_METRICS = ("size_mb", "peak_rss_mb", "speedup")


def primary_profile(results: dict) -> str:
    """The first profile: the one latency means when a name gives none."""
    return results["profiles"][0]["name"]


def task_of(results: dict):
    """The task that defines a results file's metrics (classification for versions that name none)."""
    from ..tasks import get

    return get(results.get("task", "text-classification"))


def known_metrics(task) -> tuple[str, ...]:
    """The metric names gates and selection take for `task` (its own, then the plain ones)."""
    return (*task.GATE_METRICS, *PLAIN_METRICS)


def metric(results: dict, variant: dict, name: str, profile: str | None = None) -> float:
    """One number of one variant, by the names that gates and selection use."""
    profile = profile or primary_profile(results)
    if profile not in variant["latency_ms"]:
        raise BenchError(f"profile '{profile}' was not measured (measured: {', '.join(variant['latency_ms'])})")
    task = task_of(results)
    value = task.metric(results, variant, name, profile)
    if value is not None:
        return value
    if name == "size_mb":
        return variant["size_bytes"] / MB
    if name == "peak_rss_mb":
        return variant["profiles"][profile]["peak_rss_bytes"] / MIB
    if name == "speedup":
        return variant["ratios"]["speedup_p50"].get(f"{profile}/real", float("nan"))
    match = LATENCY_METRIC.match(name)
    if match:
        e2e, pct, length = match.groups()
        if e2e:
            if length:
                raise BenchError(f"{name}: end-to-end latency is measured at real lengths only: use e2e_p{pct}_ms")
            return variant["profiles"][profile]["e2e_ms"][f"p{pct}"]
        shape = f"len{length}" if length else "real"
        if shape not in variant["latency_ms"][profile]:
            raise BenchError(f"{name}: length {length} was not measured under profile {profile}")
        return variant["latency_ms"][profile][shape][f"p{pct}"]
    raise BenchError(
        f"unknown metric '{name}' for {task.NAME}: use one of {', '.join(known_metrics(task))}"
        + (", p50_ms, p90_ms, p99_ms, p90_ms_len128, e2e_p50_ms" if "p50_ms" == task.SPEED[0] else "")
    )


def engine_of(variant: dict) -> str:
    """The engine a variant runs on: its format (`pytorch`, `onnx`, `openvino`, `ctranslate2`)."""
    return variant.get("format") or "?"
