"""The Ray executor: each call is a Ray task placed by what it needs, retried when its worker dies.

Folders a call reads travel through Ray's object store as checked tar bytes (`transport`), once
per folder and node, unless the settings say every node sees the run folder (`shared_filesystem`),
in which case they are read in place after their hashes are checked. What a call returns (a built
variant's files) comes back the same way and is checked again where it is published.
"""

from __future__ import annotations

import logging
import os
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import transport
from .base import (
    KIND_RESOURCE,
    LOCATED,
    MEASURE_RESOURCE,
    ON_RAY_NODE,
    ExecutorError,
    ExecutorSettings,
    Needs,
    Shipped,
    localise,
    node_info,
    shipped_in,
)

log = logging.getLogger(__name__)

CACHE_ENV = "EDGENLP_RAY_CACHE"
"""Where a node keeps the folders sent to it (default: the system's temporary folder)."""


def _ray():
    try:
        import ray
    except ImportError:
        raise ExecutorError(
            "the ray executor needs Ray: pip install 'edgenlp[ray]' (or use --executor local)"
        ) from None
    return ray


def node_cache() -> Path:
    """This node's copies of shipped folders: in a folder private to this user (0700), per node."""
    ray = _ray()
    base = Path(os.environ.get(CACHE_ENV) or tempfile.gettempdir()) / f"edgenlp-ray-{os.getuid()}"
    transport.private_folder(base)
    return transport.private_folder(base / ray.get_runtime_context().get_node_id()[:16])


def _node_kind() -> str | None:
    ray = _ray()
    here = ray.get_runtime_context().get_node_id()
    for node in ray.nodes():
        if node.get("NodeID") == here:
            kinds = [r[len(KIND_RESOURCE) :] for r in node.get("Resources", {}) if r.startswith(KIND_RESOURCE)]
            return kinds[0] if kinds else None
    return None


def where() -> dict:
    ray = _ray()
    return {"executor": "ray", "node_id": ray.get_runtime_context().get_node_id()[:16], **node_info(_node_kind())}


def _on_node(fn: Callable, args: tuple, refs: dict, shared_filesystem: bool, cpus: int) -> Any:
    """Runs inside the Ray task: bring the shipped folders here, pin the threads, call `fn`."""
    os.environ["OMP_NUM_THREADS"] = str(cpus)
    ON_RAY_NODE.set(True)

    def local(shipped: Shipped) -> Path:
        here = _in_place(shipped) if shared_filesystem else None
        if here is None:
            folder = transport.unpack_once(
                lambda: _ray().get(refs[shipped.key][0]),
                shipped.key,
                node_cache(),
                f"{shipped.folder.name} (sent to this node)",
            )
            here = shipped.within(folder)
        LOCATED[str(shipped.path)] = here
        return here

    try:
        return fn(*localise(args, local))
    finally:
        LOCATED.clear()
        ON_RAY_NODE.set(False)


def _in_place(shipped: Shipped) -> Path | None:
    """The folder itself, when this node sees it at the same path with the same content."""
    from ..artifact import Artifact, ArtifactError, hash_tree, stable_id

    if not shipped.folder.is_dir():
        return None
    try:
        art = Artifact.load(shipped.folder)
        return shipped.path if art.id == shipped.key and art.verify() else None
    except ArtifactError:
        return shipped.path if stable_id(hash_tree(shipped.folder)) == shipped.key else None


class RayExecutor:
    name = "ray"
    remote = True

    def __init__(self, settings: ExecutorSettings):
        ray = _ray()
        self.settings = settings
        if not ray.is_initialized():
            try:
                # a Ray instance started here is this one machine: it builds and measures
                own = {"resources": {MEASURE_RESOURCE: 1}} if settings.address is None else {}
                ray.init(
                    address=settings.address,
                    include_dashboard=False,
                    log_to_driver=False,
                    logging_level=logging.WARNING,
                    configure_logging=False,
                    **own,
                )
            except (ConnectionError, RuntimeError, ValueError) as exc:
                where = settings.address or "a new local instance"
                raise ExecutorError(
                    f"cannot reach the Ray cluster at {where} ({' '.join(str(exc).split())[:160]}): "
                    "start it (`ray start --head`) or fix --executor ray:ADDRESS"
                ) from None
        self._remote = ray.remote(_on_node)
        self._sent: dict[str, list] = {}
        self._lock = threading.Lock()

    # -- placement --------------------------------------------------------------------------------
    def _nodes(self) -> list[dict]:
        return [n for n in _ray().nodes() if n.get("Alive")]

    def _fits(self, needs: Needs) -> list[dict]:
        out = []
        for node in self._nodes():
            res = node.get("Resources", {})
            if needs.measure and (
                res.get(MEASURE_RESOURCE, 0) < 1 or (needs.kind and res.get(KIND_RESOURCE + needs.kind, 0) <= 0)
            ):
                continue
            if res.get("CPU", 0) >= needs.cpus and res.get("memory", float("inf")) >= needs.memory_gb * 2**30:
                out.append(node)
        return out

    def _options(self, needs: Needs) -> dict:
        fits = self._fits(needs)
        if not fits:
            if needs.measure:
                kind = f" of kind '{needs.kind}'" if needs.kind else ""
                resources = {MEASURE_RESOURCE: 1, **({KIND_RESOURCE + needs.kind: 1} if needs.kind else {})}
                raise ExecutorError(
                    f"{needs.what}: no node of the Ray cluster measures{kind}: start one with "
                    f"`ray start --address ... --resources '{_json(resources)}'`, or measure on "
                    "--executor local"
                )
            raise ExecutorError(
                f"{needs.what}: no node of the Ray cluster has {needs.cpus} CPU(s) and "
                f"{needs.memory_gb:g} GB free: lower executor.build_cpus / build_memory_gb, or add a "
                "larger node"
            )
        options = {
            "max_retries": self.settings.retries,
            "retry_exceptions": False,
            "memory": int(needs.memory_gb * 2**30) or None,
        }
        if needs.measure:
            # the whole node: nothing else runs beside a timing, and one timing per node at a time
            options["num_cpus"] = min(n["Resources"].get("CPU", 1) for n in fits)
            options["resources"] = {MEASURE_RESOURCE: 1, **({KIND_RESOURCE + needs.kind: 0.001} if needs.kind else {})}
        else:
            options["num_cpus"] = needs.cpus
        return {k: v for k, v in options.items() if v is not None}

    def concurrency(self, needs: Needs = Needs()) -> int:
        """How many such calls the cluster runs at once (what a driver should keep in flight)."""
        total = 0
        for node in self._fits(needs):
            res = node["Resources"]
            total += (
                1
                if needs.measure
                else int(
                    min(
                        res.get("CPU", 0) // max(needs.cpus, 1),
                        res.get("memory", float("inf")) // max(needs.memory_gb * 2**30, 1),
                    )
                )
            )
        return max(total, 1)

    # -- calls ------------------------------------------------------------------------------------
    def _send(self, shipped: Shipped) -> list:
        """The object-store reference of a folder's packed bytes, inside a list so Ray does not fetch
        it to every task: a node that already holds the folder never reads it."""
        with self._lock:
            if shipped.key not in self._sent:
                self._sent[shipped.key] = [_ray().put(transport.pack(shipped.folder))]
            return self._sent[shipped.key]

    def call(self, fn: Callable, *args: Any, needs: Needs = Needs()) -> Any:
        ray = _ray()
        options = self._options(needs)
        refs = {s.key: self._send(s) for s in shipped_in(args)}
        task = self._remote.options(**options).remote(
            fn, args, refs, self.settings.shared_filesystem, int(options["num_cpus"])
        )
        try:
            return ray.get(task)
        except ray.exceptions.RayTaskError as exc:
            cause = getattr(exc, "cause", None)
            if isinstance(cause, BaseException):
                raise cause from None
            raise
        except ray.exceptions.RayError as exc:
            attempts = self.settings.retries + 1
            reason = " ".join(str(exc).split())[:200]
            raise ExecutorError(
                f"{needs.what} ran {attempts} time(s) on Ray and its worker died each time, the "
                f"last with {type(exc).__name__} ({reason}); finished work is kept: rerun to resume, "
                "or raise executor.retries"
            ) from None

    def reachable_host(self) -> str:
        """This process's address as the cluster's nodes reach it: loopback for a Ray instance started here
        (its nodes share this machine), the node's own address for a cluster. Whatever listens there (the
        tuning study's gRPC proxy) is open to whoever reaches that address: run clusters on a trusted network."""
        if self.settings.address is None:
            return "127.0.0.1"
        return _ray().util.get_node_ip_address()

    def describe(self) -> dict:
        nodes = self._nodes()
        return {
            "kind": "ray",
            "address": self.settings.address,
            "nodes": len(nodes),
            "cpus": sum(n["Resources"].get("CPU", 0) for n in nodes),
            "measuring_nodes": sum(n["Resources"].get(MEASURE_RESOURCE, 0) >= 1 for n in nodes),
            **self.settings.model_dump(exclude={"kind", "address"}),
        }

    def close(self) -> None:
        self._sent.clear()


def _json(value: dict) -> str:
    import json

    return json.dumps(value)
