"""Artifacts: the folders that stages read and write.

An artifact is a folder holding a model (a `save_pretrained` checkpoint or an ONNX model, each with
its tokenizer) plus `artifact.json`: what it is (format, task, precision), where it came from
(parent id, stage, stage config), the library versions that made it, and the sha256 of every file.

Its id hashes the parent id with the stage name and config, what else the stage read and the library
versions, so a rerun that asks for the same thing finds it finished and skips it. A stage writes into
a temporary folder that is swapped into place only once it is complete, so a stage that fails never
leaves a half-written artifact or touches its parent.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

from . import fsio
from .errors import ArtifactError

log = logging.getLogger(__name__)

META_FILE = "artifact.json"
META_SCHEMA = "edgenlp.artifact/1"
MODEL_SUFFIXES = (".onnx", ".onnx_data", ".data", ".safetensors", ".bin", ".ort", ".pt", ".pth", ".xml", ".npz")
"""Files that are (parts of) a model, never copied as support files beside a new model."""
TRACKED_LIBRARIES = (
    "edgenlp",
    "torch",
    "transformers",
    "optimum",
    "optimum-onnx",
    "onnx",
    "onnxruntime",
    "torch-pruning",
    "tokenizers",
    "numpy",
)
ENGINE_LIBRARIES = ("openvino", "nncf", "ctranslate2")
"""The optional engines: recorded with every measurement, and in the ids of the variants they make."""


def library_versions(names: tuple[str, ...] = TRACKED_LIBRARIES) -> dict[str, str]:
    """Installed versions of `names` (those not installed are left out)."""
    versions = {}
    for name in names:
        try:
            versions[name] = importlib_metadata.version(name)
        except importlib_metadata.PackageNotFoundError:
            pass
    return versions


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def hash_tree(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): sha256_file(p) for p in sorted(root.rglob("*")) if p.is_file() and p.name != META_FILE
    }


def onnx_file(path: Path) -> Path:
    """The ONNX model a runner loads from `path` (the file itself, or `model.onnx`, else the first)."""
    from .runtime import onnx_file as find

    try:
        return find(path)
    except FileNotFoundError:
        raise ArtifactError(f"{path} holds no .onnx file: point to an exported ONNX variant") from None


def _external_data(onnx_path: Path) -> list[Path]:
    import onnx
    from onnx.external_data_helper import ExternalDataInfo, uses_external_data

    model = onnx.load(str(onnx_path), load_external_data=False)
    tensors = list(model.graph.initializer) + [a.t for n in model.graph.node for a in n.attribute if a.HasField("t")]
    names = {ExternalDataInfo(t).location for t in tensors if uses_external_data(t)}
    return [onnx_path.parent / n for n in sorted(names)]


def loaded_model_files(path: Path) -> list[Path]:
    """The files a runner reads to run the model at `path`, each once: the size a user ships.

    ONNX: the graph and the external-data files it names (not other models' data beside it).
    PyTorch: the weights `from_pretrained` picks (safetensors, shards by their index, else the .bin),
    not training state such as `training_args.bin` or `optimizer.pt`.
    """
    from .runtime import engines

    path = Path(path)
    engine = engines.detect(path)
    if engine in ("openvino", "ctranslate2"):  # engine layouts: the engine says which files it reads
        return engines.model_files(engine, path)
    if path.suffix == ".onnx" or (path.is_dir() and any(path.glob("*.onnx"))):
        from .runtime.generation import PREFILL_GRAPH

        graph = onnx_file(path)
        prefill = graph.parent / PREFILL_GRAPH  # a decoder's second graph (stage split-prefill)
        extra = [prefill, *_external_data(prefill)] if path.is_dir() and prefill.is_file() else []
        return [graph, *_external_data(graph), *extra]
    if not path.is_dir():
        return [path] if path.exists() else []
    for index_name, single in (
        ("model.safetensors.index.json", "model.safetensors"),
        ("pytorch_model.bin.index.json", "pytorch_model.bin"),
    ):
        index = path / index_name
        if index.exists():
            shards = sorted(set(json.loads(index.read_text()).get("weight_map", {}).values()))
            return [path / s for s in shards]
        if (path / single).exists():
            return [path / single]
    if (path / "model.bin").exists():  # a bare CTranslate2 folder (a peer in the benchmarks)
        return [path / "model.bin"]
    return []


def stable_id(*parts: Any) -> str:
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


@dataclass
class Artifact:
    """A model folder and what is known about it. `meta` is the content of `artifact.json`."""

    path: Path
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return self.meta["id"]

    @property
    def format(self) -> str:
        """`pytorch` (save_pretrained checkpoint), or the engine that runs it: `onnx`, `openvino`, `ctranslate2`."""
        return self.meta["format"]

    @property
    def task(self) -> str:
        return self.meta.get("task", "text-classification")

    @property
    def precision(self) -> str:
        return self.meta.get("precision", "fp32")

    @property
    def name(self) -> str:
        return self.meta.get("name") or self.path.name

    @property
    def onnx_path(self) -> Path:
        return onnx_file(self.path)

    @property
    def model_files(self) -> list[Path]:
        return loaded_model_files(self.path)

    @property
    def size_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.model_files)

    def config(self) -> dict[str, Any]:
        path = self.path / "config.json"
        return json.loads(path.read_text()) if path.exists() else {}

    def labels(self) -> list[str]:
        id2label = self.config().get("id2label") or {}
        return [id2label[k] for k in sorted(id2label, key=int)]

    @classmethod
    def load(cls, path: str | Path) -> Artifact:
        path = Path(path)
        meta_path = path / META_FILE
        if not meta_path.exists():
            raise ArtifactError(
                f"{path} has no {META_FILE}: it is not an edgenlp artifact "
                "(pass a variant folder from a run, or a model folder)"
            )
        try:
            meta = json.loads(meta_path.read_text())
        except json.JSONDecodeError as exc:
            raise ArtifactError(f"{meta_path} is not valid JSON ({exc}): delete the folder and rerun") from exc
        return cls(path=path, meta=meta)

    def verify(self) -> bool:
        """True when every file listed in artifact.json is present with its recorded hash."""
        files = self.meta.get("files", {})
        for rel, digest in files.items():
            p = self.path / rel
            if not p.is_file() or sha256_file(p) != digest:
                return False
        return bool(files)


@dataclass
class StageOutput:
    """What a stage reports about the folder it wrote."""

    format: str
    task: str
    precision: str = "fp32"
    metadata: dict[str, Any] = field(default_factory=dict)


def _refuse_foreign(dest: Path, parent: Artifact, stage_name: str, name: str) -> None:
    """Never replace what edgenlp did not write: only an earlier output of this same variant may go."""
    if dest.exists() and not dest.is_dir():
        raise ArtifactError(f"{dest} is a file: pass a folder for the output")
    here, source = dest.resolve(), parent.path.resolve()
    if here == source or here in source.parents:
        raise ArtifactError(f"output folder {dest} holds the model being read ({parent.path}): pass another --out")
    if not dest.is_dir() or not any(dest.iterdir()):
        return
    meta_path = dest / META_FILE
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError):
        meta = None
    if not isinstance(meta, dict) or not str(meta.get("schema", "")).startswith("edgenlp.artifact/"):
        raise ArtifactError(
            f"{dest} is not empty and is not an edgenlp artifact: edgenlp never replaces a folder "
            "it did not write; pass a new or empty --out"
        )
    if meta.get("stage") != stage_name or meta.get("name") != name:
        raise ArtifactError(
            f"{dest} holds edgenlp variant '{meta.get('name')}' ({meta.get('stage')}), not an output "
            f"of '{name}' ({stage_name}): pass another --out"
        )
    known = set(meta.get("files") or {}) | {META_FILE}
    foreign = sorted(
        str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file() and str(p.relative_to(dest)) not in known
    )
    if foreign:
        raise ArtifactError(
            f"{dest} holds {foreign[0]}, which edgenlp did not write: move it out of the folder, or pass another --out"
        )


def build(
    dest: Path,
    parent: Artifact,
    stage_name: str,
    config: Any,
    run: Callable[[Path], StageOutput],
    check: Callable[[Artifact], dict[str, Any]] | None = None,
    name: str | None = None,
    check_settings: dict[str, Any] | None = None,
    inputs: dict[str, Any] | None = None,
    libraries: tuple[str, ...] = TRACKED_LIBRARIES,
    make_elsewhere: Callable[[Path, dict], dict] | None = None,
) -> tuple[Artifact, bool]:
    """Make `dest` hold the output of one stage, unless it already does.

    Returns the artifact and whether it was reused. The id covers the parent, the stage and its
    config, what else the stage read (`inputs`: the data's content hash, say) and the versions of
    the `libraries` that make it, so a change in any of them rebuilds (and an upgrade of a library
    the stage does not use rebuilds nothing). `run` writes into an empty work
    folder; `check` (validation against the parent) sees the finished artifact before it is
    published, and raising there discards it. A reused artifact whose check ran under other
    `check_settings` (a tightened tolerance, say) is checked again.

    Publishing is crash-safe: a process killed at any point leaves either the previous artifact or
    the new one at `dest`, and the next build cleans up what dead processes left beside it. A folder
    that edgenlp did not write is never replaced.

    `make_elsewhere(work, plan)` makes the artifact on another machine instead (`make` there, with
    this `plan`) and fills `work` with what came back; every file is checked against the hashes
    the other machine recorded before anything is published.
    """
    name = name or dest.name
    config_data = config.model_dump(mode="json") if hasattr(config, "model_dump") else config
    versions = library_versions(("edgenlp", *libraries))
    artifact_id = stable_id(parent.id, stage_name, config_data, inputs or {}, versions)
    for line in fsio.recover_folder(dest):
        log.info("%s", line)
    if (dest / META_FILE).exists():
        try:
            existing = Artifact.load(dest)
            if existing.meta.get("id") == artifact_id and existing.verify():
                if check is not None and existing.meta.get("check_settings") != check_settings:
                    existing.meta["validation"] = check(existing)
                    existing.meta["check_settings"] = check_settings
                    fsio.write_json_atomic(dest / META_FILE, existing.meta)
                return existing, True
        except ArtifactError:
            pass
    _refuse_foreign(dest, parent, stage_name, name)

    dest.parent.mkdir(parents=True, exist_ok=True)
    work = dest.parent / f".{dest.name}.partial-{os.getpid()}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    plan = {
        "id": artifact_id,
        "name": name,
        "stage": stage_name,
        "config": config_data,
        "inputs": inputs or {},
        "versions": versions,
        "check_settings": check_settings,
        "parent": {"id": parent.id, "name": parent.name, "path": str(parent.path)},
    }
    try:
        if make_elsewhere is None:
            meta = make(work, plan, run, check)
        else:
            meta = make_elsewhere(work, plan)
            arrived = hash_tree(work)
            if arrived != meta.get("files"):
                bad = sorted(set(arrived.items()) ^ set((meta.get("files") or {}).items()))
                raise ArtifactError(
                    f"variant {name} arrived with {bad[0][0] if bad else 'its files'} not as made: "
                    "the copy is corrupt; rerun"
                )
            meta["parent"] = plan["parent"]  # where the parent lives here, not on the node that built it
            fsio.write_json_atomic(work / META_FILE, meta)
        fsio.replace_folder(work, dest, dest.parent / f".{dest.name}.old-{os.getpid()}")
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return Artifact(path=dest, meta=meta), False


def make(
    work: Path,
    plan: dict,
    run: Callable[[Path], StageOutput],
    check: Callable[[Artifact], dict[str, Any]] | None = None,
) -> dict:
    """Run one stage into the empty folder `work`, check it, write its artifact.json; returns that.

    `plan` says what to make (id, name, stage, config, inputs, library versions, parent); the id
    was computed by whoever asked, and a machine whose libraries differ refuses rather than make
    something else under that id.
    """
    here = library_versions(tuple(plan["versions"]))
    if here != plan["versions"]:
        differ = sorted(k for k in set(here) | set(plan["versions"]) if here.get(k) != plan["versions"].get(k))
        raise ArtifactError(
            f"{differ[0]} is {here.get(differ[0], 'not installed')} on this machine but "
            f"{plan['versions'].get(differ[0], 'not installed')} where variant {plan['name']} was asked "
            "for: install the same versions everywhere"
        )
    started = time.time()
    output = run(work)
    meta = {
        "schema": META_SCHEMA,
        "id": plan["id"],
        "name": plan["name"],
        "format": output.format,
        "task": output.task,
        "precision": output.precision,
        "parent": plan["parent"],
        "stage": plan["stage"],
        "stage_config": plan["config"],
        "inputs": plan["inputs"],
        "metadata": output.metadata,
        "versions": plan["versions"],
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "build_seconds": round(time.time() - started, 2),
        "files": hash_tree(work),
    }
    artifact = Artifact(path=work, meta=meta)
    if check is not None:
        meta["validation"] = check(artifact)
        meta["check_settings"] = plan["check_settings"]
    fsio.write_json_atomic(work / META_FILE, meta)
    return meta


def copy_support_files(src: Path, dst: Path) -> None:
    """Copy what travels with a model but is not the model: config, tokenizer, labels."""
    for f in src.iterdir():
        if f.is_file() and f.suffix not in MODEL_SUFFIXES and f.name != META_FILE:
            shutil.copy2(f, dst / f.name)
