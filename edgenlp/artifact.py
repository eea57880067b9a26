"""Artifacts: the folders that stages read and write.

An artifact is a folder holding a model (a `save_pretrained` checkpoint or an ONNX model, each with
its tokenizer) plus `artifact.json`: what it is (format, task, precision), where it came from
(parent id, stage, stage config), the library versions that made it, and the sha256 of every file.

Its id hashes the parent id with the stage name and config, so a rerun that asks for the same thing
finds it finished and skips it. A stage writes into a temporary folder that is renamed only once it
is complete, so a stage that fails never leaves a half-written artifact or touches its parent.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass, field
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any, Callable

from .errors import ArtifactError

META_FILE = "artifact.json"
META_SCHEMA = "edgenlp.artifact/1"
MODEL_SUFFIXES = (".onnx", ".onnx_data", ".data", ".safetensors", ".bin", ".ort")
TRACKED_LIBRARIES = ("edgenlp", "torch", "transformers", "optimum", "optimum-onnx", "onnx", "onnxruntime",
                     "torch-pruning", "tokenizers", "numpy")


def library_versions() -> dict[str, str]:
    versions = {}
    for name in TRACKED_LIBRARIES:
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
    return {str(p.relative_to(root)): sha256_file(p)
            for p in sorted(root.rglob("*")) if p.is_file() and p.name != META_FILE}


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
        """`pytorch` (save_pretrained checkpoint) or `onnx`."""
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
        candidates = sorted(self.path.glob("*.onnx"))
        if not candidates:
            raise ArtifactError(f"{self.path} holds no .onnx file: point to an exported ONNX variant")
        return candidates[0]

    @property
    def model_files(self) -> list[Path]:
        return sorted(p for p in self.path.rglob("*") if p.is_file() and p.suffix in MODEL_SUFFIXES)

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
    def load(cls, path: str | Path) -> "Artifact":
        path = Path(path)
        meta_path = path / META_FILE
        if not meta_path.exists():
            raise ArtifactError(f"{path} has no {META_FILE}: it is not an edgenlp artifact "
                                "(pass a variant folder from a run, or a model folder)")
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


def write_json_atomic(path: Path, data: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False, default=str))
    os.replace(tmp, path)


@dataclass
class StageOutput:
    """What a stage reports about the folder it wrote."""

    format: str
    task: str
    precision: str = "fp32"
    metadata: dict[str, Any] = field(default_factory=dict)


def build(
    dest: Path,
    parent: Artifact,
    stage_name: str,
    config: Any,
    run: Callable[[Path], StageOutput],
    check: Callable[[Artifact], dict[str, Any]] | None = None,
    name: str | None = None,
    check_settings: dict[str, Any] | None = None,
) -> tuple[Artifact, bool]:
    """Make `dest` hold the output of one stage, unless it already does.

    Returns the artifact and whether it was reused. `run` writes into an empty work folder; `check`
    (validation against the parent) sees the finished artifact before it is published, and raising
    there discards it. Nothing is renamed into place until both succeed. A reused artifact whose
    check ran under other `check_settings` (a tightened tolerance, say) is checked again.
    """
    config_data = config.model_dump(mode="json") if hasattr(config, "model_dump") else config
    artifact_id = stable_id(parent.id, stage_name, config_data)
    if (dest / META_FILE).exists():
        try:
            existing = Artifact.load(dest)
            if existing.meta.get("id") == artifact_id and existing.verify():
                if check is not None and existing.meta.get("check_settings") != check_settings:
                    existing.meta["validation"] = check(existing)
                    existing.meta["check_settings"] = check_settings
                    write_json_atomic(dest / META_FILE, existing.meta)
                return existing, True
        except ArtifactError:
            pass

    dest.parent.mkdir(parents=True, exist_ok=True)
    work = dest.parent / f".{dest.name}.partial-{os.getpid()}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    try:
        started = time.time()
        output = run(work)
        meta = {
            "schema": META_SCHEMA,
            "id": artifact_id,
            "name": name or dest.name,
            "format": output.format,
            "task": output.task,
            "precision": output.precision,
            "parent": {"id": parent.id, "name": parent.name, "path": str(parent.path)},
            "stage": stage_name,
            "stage_config": config_data,
            "metadata": output.metadata,
            "versions": library_versions(),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "build_seconds": round(time.time() - started, 2),
            "files": hash_tree(work),
        }
        artifact = Artifact(path=work, meta=meta)
        if check is not None:
            meta["validation"] = check(artifact)
            meta["check_settings"] = check_settings
        write_json_atomic(work / META_FILE, meta)
        if dest.exists():
            old = dest.parent / f".{dest.name}.old-{os.getpid()}"
            os.replace(dest, old)
            os.replace(work, dest)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(work, dest)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return Artifact(path=dest, meta=meta), False


def copy_support_files(src: Path, dst: Path) -> None:
    """Copy what travels with a model but is not the model: config, tokenizer, labels."""
    for f in src.iterdir():
        if f.is_file() and f.suffix not in MODEL_SUFFIXES and f.name != META_FILE:
            shutil.copy2(f, dst / f.name)
