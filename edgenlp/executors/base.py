"""What executors and the code that sends work share: the settings, what a call needs, what it reads.

A leaf of the package: `executors/__init__.py` (the local executor and the wiring) and
`executors/ray.py` both import it, and neither imports the other at module level.
"""

from __future__ import annotations

import contextvars
import platform
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

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
    def of(cls, path: str | Path) -> Shipped:
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


LOCATED: dict[str, Path] = {}
"""Path on the machine that started the run -> its copy on this node (filled by the Ray executor)."""


def located(path: str | Path) -> Path:
    """Where a folder named by its path on the machine that started the run is on this node
    (a copy sent with the task), or the path itself where nothing was sent."""
    return LOCATED.get(str(Path(path)), Path(path))


def node_info(kind: str | None = None) -> dict:
    """Where this process runs: host, CPU, and the node kind (its label, else its CPU model)."""
    from ..hardware import cpu_info

    cpu = cpu_info()
    return {"host": platform.node(), "cpu": cpu.summary(), "kind": kind or cpu.model}


ON_RAY_NODE: contextvars.ContextVar = contextvars.ContextVar("edgenlpON_RAY_NODE", default=False)
