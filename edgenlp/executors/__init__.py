"""Where work runs: on this machine (`local`, the default) or as tasks on a Ray cluster (`ray`).

The pipeline, the harness and the searches describe work as calls of plain functions with what
each call needs (`Needs`: CPUs, memory, a measuring node) and the folders it reads (`Shipped`);
an executor decides where each call runs and how many run at once. Nothing else in edgenlp knows
which executor is in use, and nothing about a variant (its id, its files, its figures) depends on it.

    executor = executors.open(recipe.executor)       # or executors.open("ray:10.0.0.5:6379")
    result = executor.call(fn, arg, Shipped.of(folder), needs=Needs(cpus=1))

Measurement calls (`Needs(measure=True)`) run only on nodes that offer the measuring resource,
one at a time per node, holding all of that node's CPUs, so no other work disturbs a timing.
"""

from __future__ import annotations

import contextlib
import contextvars
import platform
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Callable, Iterator, Literal

from pydantic import BaseModel, ConfigDict, Field

from ..errors import EdgeNLPError

MEASURE_RESOURCE = "edgenlp-measure"
"""The Ray resource a node offers (1 unit) when latency may be measured on it."""
KIND_RESOURCE = "edgenlp-node:"
"""Prefix of the Ray resource that labels a node's kind (`edgenlp-node:edge-x86`)."""


class ExecutorError(EdgeNLPError):
    """A task could not be run (the cluster cannot be reached, a worker died more often than allowed)."""


class ExecutorSettings(BaseModel):
    """The recipe's `executor:` block (`--executor local|ray[:ADDRESS]` on the command line)."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["local", "ray"] = "local"
    address: str | None = None
    """Ray: the cluster to join (`HOST:PORT`, `auto`); none starts a Ray instance on this machine."""
    build_cpus: int | None = Field(None, ge=1)
    """Threads (and Ray CPUs) of each build and trial. Floating-point sums depend on the thread count,
    so bit-identical models on `local` and `ray` need the same value on both; none: every core
    locally, 1 per task on Ray."""
    build_memory_gb: float = Field(3.0, gt=0)
    """Memory a build or trial declares to Ray (Ray places it only where that much is free)."""
    eval_memory_gb: float = Field(1.5, gt=0)
    """Memory an accuracy/perplexity evaluation declares to Ray."""
    retries: int = Field(2, ge=0, le=10)
    """Times a task whose worker or node died is retried elsewhere before the run stops."""
    shared_filesystem: bool = False
    """Ray: every node sees the run folder at the same path, so parents are read in place (their
    hashes still checked) instead of being sent through Ray's object store."""
    parallel_trials: int | None = Field(None, ge=1)
    """Tuning trials in flight at once (none: as many as the cluster's CPUs fit)."""
    measure_on: dict[str, str] = {}
    """Profile name -> node kind: that profile's latency and memory are measured only on nodes
    started with the resource `edgenlp-node:<kind>` (and `edgenlp-measure`)."""


@dataclass(frozen=True)
class Needs:
    """What one call needs from the node it runs on."""

    cpus: int = 1
    memory_gb: float = 0.0
    measure: bool = False
    """Run only on a measuring node, alone: all of its CPUs are held for the call."""
    kind: str | None = None
    """With `measure`: only on nodes of this kind."""
    what: str = "task"
    """Named in errors."""


@dataclass
class Shipped:
    """A folder a call reads: made available on the node that runs it, checked by hash.

    Its key (what a node caches the copy under) is computed only when a folder is sent: the local
    executor reads the folder in place and never hashes it.
    """

    path: Path

    @classmethod
    def of(cls, path: str | Path) -> "Shipped":
        return cls(path=Path(path))

    @cached_property
    def key(self) -> str:
        """The artifact id where the folder is an artifact, else the hash of its files' hashes."""
        import json

        from ..artifact import META_FILE, hash_tree, stable_id

        meta = self.folder / META_FILE
        found = json.loads(meta.read_text()).get("id") if meta.exists() else None
        return found or stable_id(hash_tree(self.folder))

    @property
    def folder(self) -> Path:
        return self.path if self.path.is_dir() else self.path.parent

    def within(self, folder: Path) -> Path:
        """This path inside a copy of its folder made at `folder`."""
        return folder if self.path.is_dir() else folder / self.path.name


def localise(value: Any, where: Callable[[Shipped], Path]) -> Any:
    """`value` with every Shipped (at the top, or inside lists, tuples and dicts) replaced by a local path."""
    if isinstance(value, Shipped):
        return where(value)
    if isinstance(value, (list, tuple)):
        return type(value)(localise(v, where) for v in value)
    if isinstance(value, dict):
        return {k: localise(v, where) for k, v in value.items()}
    return value


def shipped_in(value: Any) -> Iterator[Shipped]:
    if isinstance(value, Shipped):
        yield value
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from shipped_in(v)
    elif isinstance(value, dict):
        for v in value.values():
            yield from shipped_in(v)


_located: dict[str, Path] = {}


def located(path: str | Path) -> Path:
    """Where a folder named by its path on the machine that started the run is on this node
    (a copy sent with the task), or the path itself where nothing was sent."""
    return _located.get(str(Path(path)), Path(path))


def node_info(kind: str | None = None) -> dict:
    """Where this process runs: host, CPU, and the node kind (its label, else its CPU model)."""
    from ..hardware import cpu_info

    cpu = cpu_info()
    return {"host": platform.node(), "cpu": cpu.summary(), "kind": kind or cpu.model}


_on_ray_node: contextvars.ContextVar = contextvars.ContextVar("edgenlp_on_ray_node", default=False)


def here() -> dict:
    """Where this call runs, as the results record it: a Ray node inside a Ray task, else this machine."""
    if _on_ray_node.get():
        from .ray import where

        return where()
    return {"executor": "local", **node_info()}


class LocalExecutor:
    """Today's behaviour: every call runs here, in order, one at a time."""

    name = "local"
    remote = False

    def __init__(self, settings: ExecutorSettings | None = None):
        self.settings = settings or ExecutorSettings()

    def call(self, fn: Callable, *args: Any, needs: Needs = Needs()) -> Any:
        return fn(*localise(args, lambda s: s.path))

    def concurrency(self, needs: Needs = Needs()) -> int:
        return 1

    def reachable_host(self) -> str:
        return "127.0.0.1"

    def describe(self) -> dict:
        return {"kind": "local", **self.settings.model_dump(exclude={"kind", "address"})}

    def close(self) -> None:
        pass


_current: contextvars.ContextVar = contextvars.ContextVar("edgenlp_executor", default=None)


def current():
    """The executor of the run in progress (the local one outside a run)."""
    return _current.get() or LocalExecutor()


@contextlib.contextmanager
def using(executor) -> Iterator:
    token = _current.set(executor)
    try:
        yield executor
    finally:
        _current.reset(token)


def parse(spec: str) -> dict:
    """`local`, `ray` or `ray:ADDRESS` -> the executor settings it stands for."""
    spec = spec.strip()
    if spec == "local":
        return {"kind": "local", "address": None}
    if spec == "ray":
        return {"kind": "ray", "address": None}
    if spec.startswith("ray:") and spec[4:].strip():
        return {"kind": "ray", "address": spec[4:].strip()}
    raise EdgeNLPError(f"unknown executor '{spec}': use local, ray (a Ray instance on this machine) or "
                       "ray:ADDRESS (a running cluster, e.g. ray:10.0.0.5:6379 or ray:auto)")


def open(settings: ExecutorSettings | None = None):
    """The executor the settings ask for (Ray is imported only when asked for)."""
    settings = settings or ExecutorSettings()
    if settings.kind == "local":
        return LocalExecutor(settings)
    from .ray import RayExecutor

    return RayExecutor(settings)


def run_all(executor, fn: Callable, items: list, needs: Needs, width: int | None = None) -> list:
    """`fn(item)` for every item, as many at once as the executor runs (or `width`), results in item order.

    The first error is raised once the calls already started have ended (their work is kept).
    """
    width = min(width or executor.concurrency(needs), len(items))
    if width <= 1:
        return [fn(item) for item in items]
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=width, thread_name_prefix="edgenlp") as pool:
        futures = [pool.submit(_in_context(fn), item) for item in items]
    return [f.result() for f in futures]


def _in_context(fn: Callable) -> Callable:
    """`fn` run in a copy of the caller's context, so threads see the run's executor."""
    context = contextvars.copy_context()
    return lambda *a: context.copy().run(fn, *a)


def build_tree(executor, specs: list, build_one: Callable, needs: Needs, done: Callable[[str], bool],
               skip: Callable[[Any], bool]):
    """`build_one(spec)` for every spec once its parent (`spec.parent`, a name or None) is done.

    Locally: in order, one at a time. Elsewhere: every spec whose parent is done is started, up to
    the executor's concurrency. Returns `(spec, error)` of the first build that raised (no new build
    starts after it; those already started finish and are kept), or None.
    """
    width = executor.concurrency(needs)
    if width <= 1:
        for spec in specs:
            if skip(spec):
                continue
            try:
                build_one(spec)
            except EdgeNLPError as exc:
                return spec, exc
        return None
    from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait

    waiting, running, failure = list(specs), {}, None
    names = {s.name for s in specs}
    with ThreadPoolExecutor(max_workers=width, thread_name_prefix="edgenlp-build") as pool:
        while waiting or running:
            if failure is None:
                for spec in list(waiting):
                    parent_pending = spec.parent in names and not done(spec.parent) and spec.parent in (
                        {s.name for s in waiting} | {s.name for s in running.values()})
                    if parent_pending:
                        continue
                    waiting.remove(spec)
                    if skip(spec):
                        continue
                    if spec.parent in names and not done(spec.parent):
                        continue  # its parent was skipped: `skip` recorded it
                    running[pool.submit(_in_context(build_one), spec)] = spec
            else:
                waiting.clear()
            if not running:
                if waiting:  # nothing can start: every waiting spec's parent is gone
                    waiting.clear()
                continue
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                spec = running.pop(future)
                exc = future.exception()
                if exc is not None:
                    if not isinstance(exc, EdgeNLPError):
                        raise exc
                    failure = failure or (spec, exc)
    return failure


def ray_module():
    """`executors.ray` (which imports Ray only when used)."""
    from . import ray as module

    return module
