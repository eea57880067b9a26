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
from collections.abc import Callable, Iterator
from typing import Any

from ..errors import EdgeNLPError
from .base import (  # noqa: F401  (the package's public names)
    KIND_RESOURCE,
    LOCATED,
    MEASURE_RESOURCE,
    ON_RAY_NODE,
    ExecutorError,
    ExecutorSettings,
    Needs,
    Shipped,
    localise,
    located,
    node_info,
    shipped_in,
)


def here() -> dict:
    """Where this call runs, as the results record it: a Ray node inside a Ray task, else this machine."""
    if ON_RAY_NODE.get():
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
    raise EdgeNLPError(
        f"unknown executor '{spec}': use local, ray (a Ray instance on this machine) or "
        "ray:ADDRESS (a running cluster, e.g. ray:10.0.0.5:6379 or ray:auto)"
    )


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


def build_tree(
    executor, specs: list, build_one: Callable, needs: Needs, done: Callable[[str], bool], skip: Callable[[Any], bool]
):
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
                    parent_pending = (
                        spec.parent in names
                        and not done(spec.parent)
                        and spec.parent in ({s.name for s in waiting} | {s.name for s in running.values()})
                    )
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
