"""Open an edge bundle: check it is whole and untouched, then serve it.

A bundle is a folder (or its zip) that `edgenlp bundle` wrote: the model under `onnx/` with the
names transformers.js and Optimum use (or under `openvino/` or `ctranslate2/` for those engines, of
which only the one the bundle names is imported), its config and tokenizer, and `manifest.json`, which lists
every file with its sha256 and size. `load` refuses a bundle with a missing, changed or extra file,
or a manifest of a newer format than this runtime reads, before any of it is parsed.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Sequence

from .errors import BundleError, InputError

FORMAT = "edgenlp.bundle"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
CHUNK = 1 << 18


def _sha256():
    """CPython's own SHA-256 where it has one: hashlib's OpenSSL one maps libcrypto into the process,
    4 MiB of resident memory an app that only checks a bundle at start does not need (at 0.1 s per
    23 MB instead of 0.02 s)."""
    try:
        from _sha256 import sha256  # CPython 3.9-3.11
    except ImportError:
        try:
            from _sha2 import sha256  # CPython 3.12+
        except ImportError:
            from hashlib import sha256
    return sha256()


def sha256_file(path: Path) -> str:
    digest = _sha256()
    buffer = bytearray(CHUNK)  # one buffer, refilled: no fresh allocation per chunk for the heap to keep
    view = memoryview(buffer)
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buffer):
            digest.update(view[:n])
    return digest.hexdigest()


def read_manifest(folder: Path) -> dict:
    path = Path(folder) / MANIFEST
    if not path.is_file():
        raise BundleError(f"{folder} has no {MANIFEST}: it is not an edgenlp bundle (make one with `edgenlp bundle`)")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise BundleError(f"{path} is not valid JSON ({exc}): the bundle is damaged; copy it again") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BundleError(f"{path} is not an edgenlp bundle manifest (format {manifest.get('format') if isinstance(manifest, dict) else None!r})")
    version = manifest.get("format_version")
    if not isinstance(version, int) or version < 1:
        raise BundleError(f"{path} has format_version {version!r}, not a positive integer: the manifest is damaged")
    if version > FORMAT_VERSION:
        raise BundleError(f"{folder} is bundle format {version}, newer than this runtime reads ({FORMAT_VERSION}): "
                          "upgrade edgenlp (or edgenlp-runtime)")
    return manifest


def verify(folder: Path, manifest: dict) -> None:
    """Every listed file present with its size and sha256 (read in 256 KiB chunks), and nothing else."""
    folder = Path(folder)
    listed = manifest.get("files") or {}
    if not listed:
        raise BundleError(f"{folder / MANIFEST} lists no files: the manifest is damaged")
    present = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()} - {MANIFEST}
    extra = sorted(present - set(listed))
    if extra:
        raise BundleError(f"{folder} holds {extra[0]}, which its manifest does not list: remove it, or rebuild the "
                          "bundle (a bundle must be exactly what was verified)")
    for rel, entry in sorted(listed.items()):
        path = folder / rel
        if rel not in present:
            raise BundleError(f"{folder} is missing {rel}: copy the whole bundle again")
        if path.stat().st_size != entry.get("bytes", -1) or sha256_file(path) != entry.get("sha256"):
            raise BundleError(f"{rel} in {folder} does not match its sha256 in the manifest: the file was changed or "
                              "damaged; copy the bundle again")


def unzip(archive: Path, cache: Path | None = None) -> Path:
    """The folder of a zipped bundle, extracted once into the cache (atomically) and reused after."""
    import shutil
    import zipfile

    archive = Path(archive)
    try:
        with zipfile.ZipFile(archive) as z:
            bad = z.testzip()
            if bad is not None:
                raise BundleError(f"{archive} is damaged ({bad} fails its CRC check): copy it again")
            names = z.namelist()
            for name in names:
                if name.startswith("/") or ".." in Path(name).parts:
                    raise BundleError(f"{archive} holds the path {name}, which points outside the bundle: refusing it")
            if MANIFEST not in names:
                raise BundleError(f"{archive} has no {MANIFEST} at its top: it is not a zipped edgenlp bundle")
            cache = Path(cache or os.environ.get("EDGENLP_CACHE") or Path.home() / ".cache" / "edgenlp") / "bundles"
            dest = cache / sha256_file(archive)[:16]
            if dest.is_dir():
                return dest
            cache.mkdir(parents=True, exist_ok=True)
            work = cache / f".{dest.name}.partial-{os.getpid()}"
            shutil.rmtree(work, ignore_errors=True)
            try:
                z.extractall(work)
                os.rename(work, dest)
            except OSError:
                shutil.rmtree(work, ignore_errors=True)
                if not dest.is_dir():  # another process won the race: its copy is as good
                    raise
            return dest
    except (zipfile.BadZipFile, EOFError) as exc:
        raise BundleError(f"{archive} is not a readable zip ({exc}): it is truncated or damaged; copy it again") from None


class Bundle:
    """A verified bundle, ready to answer. `task` says which of `classify` or `generate` it offers."""

    def __init__(self, folder: Path, manifest: dict, threads: int = 1, memory_arena: bool = True):
        self.path = Path(folder)
        self.manifest = manifest
        self.task = manifest.get("task")
        model_file = self.path / manifest["model"]["file"]
        # bundles written before engines were recorded hold ONNX
        self.engine = manifest["model"].get("engine") or manifest.get("engine") or "onnx"
        from .engines import get as get_engine

        get_engine(self.engine).require(f"the bundle {self.path}")
        if self.task == "text-classification":
            from .classifier import TextClassifier

            self._model = TextClassifier(self.path, threads=threads, model_file=model_file,
                                         max_length=manifest.get("max_length"), memory_arena=memory_arena,
                                         engine=self.engine)
        elif self.task == "text-generation":
            from .engines import open_decoder

            self._model = open_decoder(self.engine, self.path, threads=threads, model_file=model_file)
        else:
            raise BundleError(f"{self.path} is a {self.task!r} bundle, which this runtime cannot serve "
                              "(it serves text-classification and text-generation): upgrade edgenlp")

    @property
    def model(self):
        """The task's model: a `TextClassifier` (prepare / answer / classify) or a `CausalLM`."""
        return self._model

    @property
    def labels(self) -> list[str]:
        return list(self.manifest.get("labels") or [])

    def _require(self, task: str, method: str) -> None:
        if self.task != task:
            raise InputError(f"{self.path} is a {self.task} bundle: {method}() needs a {task} bundle")

    def classify(self, texts: str | Sequence[str], batch_size: int = 32, truncate: bool = True, **kwargs) -> list[dict]:
        """Labels and probabilities for `texts` (see `TextClassifier.classify`)."""
        self._require("text-classification", "classify")
        return self._model.classify(texts, batch_size=batch_size, truncate=truncate, **kwargs)

    def generate(self, prompt: str, max_new_tokens: int | None = None, **sampling):
        """A continuation of `prompt` (greedy unless `temperature` > 0), with the bundle's defaults."""
        self._require("text-generation", "generate")
        return self._model.generate(prompt, **self.generation_args(max_new_tokens, sampling))

    def stream(self, prompt: str, max_new_tokens: int | None = None, **sampling):
        """The continuation as text pieces, as soon as each is whole."""
        self._require("text-generation", "stream")
        return self._model.stream(prompt, **self.generation_args(max_new_tokens, sampling))

    def steps(self, prompt: str, max_new_tokens: int | None = None, **sampling):
        """(token id, new text, stop reason or None) per generated token."""
        self._require("text-generation", "steps")
        return self._model.steps(prompt, **self.generation_args(max_new_tokens, sampling))

    def generation_args(self, max_new_tokens: int | None, sampling: dict) -> dict:
        """`max_new_tokens`, `sampling` and `stop` for the generator: the request's, else the manifest's defaults."""
        from .generation import Sampling

        defaults = dict(self.manifest.get("generation") or {})
        stop = sampling.pop("stop", ())
        fields = {k: sampling.get(k, defaults.get(k)) for k in ("temperature", "top_k", "top_p",
                                                                   "repetition_penalty", "seed")}
        unknown = set(sampling) - set(fields)
        if unknown:
            raise InputError(f"unknown generation setting {sorted(unknown)[0]!r}: use max_new_tokens, temperature, "
                             "top_k, top_p, repetition_penalty, seed or stop")
        return {"max_new_tokens": max_new_tokens if max_new_tokens is not None else defaults.get("max_new_tokens", 64),
                "sampling": Sampling(**{k: v for k, v in fields.items() if v is not None}), "stop": stop}


def load(path: str | Path, verify_hashes: bool = True, task: str | None = None, threads: int = 1,
         memory_arena: bool = True) -> Bundle:
    """Open the bundle at `path` (a folder or a .zip).

    Hashes are checked unless `verify_hashes=False` (for storage that is already trusted: a read-only
    app image). `task` refuses a bundle of another task before its model is loaded.
    """
    path = Path(path)
    if not path.exists():
        raise BundleError(f"{path} does not exist: pass a bundle folder or its .zip")
    folder = unzip(path) if path.is_file() else path
    manifest = read_manifest(folder)
    if task is not None and manifest.get("task") != task:
        raise BundleError(f"{path} is a {manifest.get('task')} bundle, not {task}: pass a {task} bundle")
    if verify_hashes:
        verify(folder, manifest)
    return Bundle(folder, manifest, threads=threads, memory_arena=memory_arena)
