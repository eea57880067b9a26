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
import zlib
from collections.abc import Sequence
from importlib import import_module
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import BundleError, InputError
from .hashing import CHUNK, sha256_file

if TYPE_CHECKING:
    from .files import BundleFiles

FORMAT = "edgenlp.bundle"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"


def read_manifest(folder: Path) -> dict:
    """The manifest of `folder`, checked against the schema (`runtime/manifest.py`) before anything reads it."""
    path = Path(folder) / MANIFEST
    if path.is_symlink() or not path.is_file():
        raise BundleError(f"{folder} has no {MANIFEST}: it is not an edgenlp bundle (make one with `edgenlp bundle`)")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise BundleError(f"{path} is not valid JSON ({exc}): the bundle is damaged; copy it again") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BundleError(
            f"{path} is not an edgenlp bundle manifest (format {manifest.get('format') if isinstance(manifest, dict) else None!r})"
        )
    version = manifest.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise BundleError(f"{path} has format_version {version!r}, not a positive integer: the manifest is damaged")
    if version > FORMAT_VERSION:
        raise BundleError(
            f"{folder} is bundle format {version}, newer than this runtime reads ({FORMAT_VERSION}): "
            "upgrade edgenlp (or edgenlp-runtime)"
        )
    from .manifest import check

    problem = check(manifest)
    if problem:
        raise BundleError(
            f"{path}: {problem}: the manifest is damaged or was not written by edgenlp; "
            "rebuild the bundle with `edgenlp bundle`"
        )
    return manifest


def _present(folder: Path) -> set[str]:
    """Every file under `folder` by its relative name; a symbolic link anywhere is refused (it could lead out)."""
    found = set()
    for root, dirs, files in os.walk(folder, followlinks=False):
        for name in [*dirs, *files]:
            path = Path(root) / name
            if path.is_symlink():
                rel = path.relative_to(folder).as_posix()
                raise BundleError(
                    f"{rel} in {folder} is a symbolic link: a bundle holds its own files; copy it without links"
                )
        found.update((Path(root) / name).relative_to(folder).as_posix() for name in files)
    return found - {MANIFEST}


def check_layout(folder: Path, manifest: dict, sizes: bool = True) -> None:
    """Exactly the listed files, each of its listed size (unless `sizes` is off, with the hashes), and no link."""
    folder = Path(folder)
    listed = manifest["files"]
    present = _present(folder)
    extra = sorted(present - set(listed))
    if extra:
        raise BundleError(
            f"{folder} holds {extra[0]}, which its manifest does not list: remove it, or rebuild the "
            "bundle (a bundle must be exactly what was verified)"
        )
    for rel, entry in sorted(listed.items()):
        if rel not in present:
            raise BundleError(f"{folder} is missing {rel}: copy the whole bundle again")
        if sizes and (folder / rel).stat().st_size != entry["bytes"]:
            raise BundleError(
                f"{rel} in {folder} does not match its sha256 in the manifest: the file was changed or "
                "damaged; copy the bundle again"
            )


def verify(folder: Path, manifest: dict) -> None:
    """Every listed file present with its size and sha256, and nothing else (`manifest` as `read_manifest` gave it)."""
    from .files import BundleFiles

    check_layout(folder, manifest)
    files = BundleFiles(Path(folder), manifest["files"], verify=True)
    for rel in sorted(manifest["files"]):
        files.check(rel)


MAX_UNPACKED_BYTES = 8 << 30
"""The most a zipped bundle may unpack to (8 GiB; `EDGENLP_MAX_BUNDLE_BYTES` raises it)."""


def max_unpacked_bytes() -> int:
    value = os.environ.get("EDGENLP_MAX_BUNDLE_BYTES", "").strip()
    if not value:
        return MAX_UNPACKED_BYTES
    if not value.isdigit():
        raise BundleError(f"EDGENLP_MAX_BUNDLE_BYTES={value!r} is not a number of bytes: set it to e.g. 17179869184")
    return int(value)


def unzip(archive: Path, cache: Path | None = None) -> Path:
    """The folder of a zipped bundle, extracted once into the cache (atomically) and reused after.

    Before a byte is written, each member's declared size must be the size its manifest lists (and
    the total under `MAX_UNPACKED_BYTES`); extraction then counts what it actually writes and stops
    at the first byte past a declared size. A refused copy is removed.
    """
    import shutil
    import zipfile

    archive = Path(archive)
    try:
        with zipfile.ZipFile(archive) as z:
            infos = z.infolist()
            names = [i.filename for i in infos]
            for name in names:
                if name.startswith("/") or ".." in Path(name).parts or "\\" in name:
                    raise BundleError(f"{archive} holds the path {name}, which points outside the bundle: refusing it")
            if MANIFEST not in names:
                raise BundleError(f"{archive} has no {MANIFEST} at its top: it is not a zipped edgenlp bundle")
            members = _checked_members(archive, z, infos)
            cache = Path(cache or os.environ.get("EDGENLP_CACHE") or Path.home() / ".cache" / "edgenlp") / "bundles"
            dest = cache / sha256_file(archive)[:16]
            if dest.is_dir() and not dest.is_symlink():
                return dest
            cache.mkdir(parents=True, exist_ok=True, mode=0o700)
            work = cache / f".{dest.name}.partial-{os.getpid()}"
            shutil.rmtree(work, ignore_errors=True)
            try:
                for info, limit in members:
                    _extract(z, info, limit, work)
                os.rename(work, dest)
            except BaseException:
                shutil.rmtree(work, ignore_errors=True)
                if not dest.is_dir():  # another process won the race: its copy is as good
                    raise
            return dest
    except (zipfile.BadZipFile, EOFError, zlib.error) as exc:
        raise BundleError(
            f"{archive} is not a readable zip ({exc}): it is truncated or damaged; copy it again"
        ) from None


def _checked_members(archive: Path, z, infos) -> list:
    """(member, its size) for each file of the zip, after its manifest and declared sizes agree."""
    by_name = {i.filename: i for i in infos}
    raw = z.read(by_name[MANIFEST]) if by_name[MANIFEST].file_size <= 16 << 20 else None
    if raw is None:
        raise BundleError(f"{archive}'s {MANIFEST} is over 16 MiB: it is not an edgenlp bundle")
    try:
        manifest = json.loads(raw.decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise BundleError(f"{archive}'s {MANIFEST} is not valid JSON ({exc}): the bundle is damaged") from None
    listed = manifest.get("files") if isinstance(manifest, dict) else None
    if not isinstance(listed, dict) or not listed:
        raise BundleError(f"{archive}'s {MANIFEST} lists no files: it is not an edgenlp bundle")
    members, total = [(by_name[MANIFEST], by_name[MANIFEST].file_size)], by_name[MANIFEST].file_size
    for info in infos:
        if info.is_dir() or info.filename == MANIFEST:
            continue
        entry = listed.get(info.filename)
        size = entry.get("bytes") if isinstance(entry, dict) else None
        if not isinstance(size, int) or info.file_size != size:
            raise BundleError(
                f"{archive} holds {info.filename} of {info.file_size} bytes, which its manifest does not "
                "list at that size: the archive is damaged or not an edgenlp bundle"
            )
        total += size
        if total > max_unpacked_bytes():
            raise BundleError(
                f"{archive} would unpack to more than {max_unpacked_bytes()} bytes: refusing it "
                "(set EDGENLP_MAX_BUNDLE_BYTES to allow a larger bundle)"
            )
        members.append((info, size))
    return members


def _extract(z, info, limit: int, work: Path) -> None:
    """One member into `work`, counting the bytes actually inflated: a member that inflates past its
    declared size (a forged header) is stopped at the first byte over."""
    target = work / info.filename
    target.parent.mkdir(parents=True, exist_ok=True)
    written = 0
    with z.open(info) as src, open(target, "xb") as dst:
        while chunk := src.read(CHUNK):
            written += len(chunk)
            if written > limit:
                raise BundleError(
                    f"{info.filename} inflates past the {limit} bytes its archive declares: the zip "
                    "is forged or damaged; refusing it"
                )
            dst.write(chunk)


ENCODERS = {
    "text-classification": ".classifier:TextClassifier",
    "feature-extraction": ".embedding:TextEmbedder",
    "token-classification": ".entities:TokenTagger",
    "question-answering": ".answers:QuestionAnswerer",
}
"""Tasks answered by one encoder pass, and the runtime class that answers each (same constructor)."""
SERVED_TASKS = (*ENCODERS, "text-generation")


class Bundle:
    """A verified bundle, ready to answer. `task` says which of `classify`, `embed`, `entities`, `answer` or `generate`
    it offers."""

    def __init__(
        self,
        folder: Path,
        manifest: dict,
        threads: int = 1,
        memory_arena: bool = True,
        files: BundleFiles | None = None,
        model_form: str = "onnx",
    ):
        from .files import BundleFiles

        self.path = Path(folder)
        self.manifest = manifest
        self.task = manifest.get("task")
        # every loader reads through `files`: only listed files, inside the folder, checked as read
        self.files = files or BundleFiles(self.path, manifest["files"], verify=False)
        model_file = self.path / model_of(manifest, model_form, self.path)
        # bundles written before engines were recorded hold ONNX
        self.engine = manifest["model"].get("engine") or manifest.get("engine") or "onnx"
        from .engines import get as get_engine

        get_engine(self.engine).require(f"the bundle {self.path}")
        if self.task not in SERVED_TASKS:
            raise BundleError(
                f"{self.path} is a {self.task!r} bundle, which this runtime cannot serve "
                f"(it serves {', '.join(SERVED_TASKS)}): upgrade edgenlp"
            )
        try:
            if self.task in ENCODERS:
                module, _, name = ENCODERS[self.task].partition(":")
                self._model = getattr(import_module(module, __package__), name)(
                    self.path,
                    threads=threads,
                    model_file=model_file,
                    max_length=manifest.get("max_length"),
                    memory_arena=memory_arena,
                    engine=self.engine,
                    files=self.files,
                )
            else:
                from .engines import open_decoder

                self._model = open_decoder(
                    self.engine, self.path, threads=threads, model_file=model_file, files=self.files
                )
        except (BundleError, InputError):
            raise
        except Exception as exc:  # what an engine or the tokenizer says of bytes it cannot parse
            first = (str(exc).strip().splitlines() or [""])[0][:200]
            raise BundleError(
                f"{self.path} could not be opened ({type(exc).__name__}: {first}): the bundle is "
                "damaged or was not written by edgenlp; rebuild it"
            ) from None

    @property
    def model(self):
        """The task's model: a `TextClassifier` (prepare / answer / classify), a `TextEmbedder`, a `TokenTagger`,
        a `QuestionAnswerer` or a `CausalLM`."""
        return self._model

    @property
    def labels(self) -> list[str]:
        return list(self.manifest.get("labels") or [])

    def _require(self, task: str, method: str) -> None:
        if self.task != task:
            raise InputError(f"{self.path} is a {self.task} bundle: {method}() needs a {task} bundle")

    def embed(self, texts: str | Sequence[str], batch_size: int = 32, truncate: bool = True, **kwargs):
        """One vector per text, a (texts, dimension) float32 array (see `TextEmbedder.embed`)."""
        self._require("feature-extraction", "embed")
        return self._model.embed(texts, batch_size=batch_size, truncate=truncate, **kwargs)

    def entities(self, texts: str | Sequence[str], batch_size: int = 32, truncate: bool = True, **kwargs):
        """The named entities of each text, with character offsets (see `TokenTagger.entities`)."""
        self._require("token-classification", "entities")
        return self._model.entities(texts, batch_size=batch_size, truncate=truncate, **kwargs)

    def answer(self, question: str, context: str) -> dict:
        """The span of `context` that answers `question`: `{"answer", "score", "start", "end"}`."""
        self._require("question-answering", "answer")
        return self._model.answers([{"question": question, "context": context}], batch_size=1)[0]

    def answers(self, questions: Sequence[dict], batch_size: int = 32) -> list[dict]:
        """The answer to each `{"question", "context"}` (see `QuestionAnswerer.answers`)."""
        self._require("question-answering", "answers")
        return self._model.answers(questions, batch_size=batch_size)

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
        from .generation import PromptLookup, Sampling

        defaults = dict(self.manifest.get("generation") or {})
        stop = sampling.pop("stop", ())
        lookup = sampling.pop("prompt_lookup", None)
        fields = {
            k: sampling.get(k, defaults.get(k)) for k in ("temperature", "top_k", "top_p", "repetition_penalty", "seed")
        }
        unknown = set(sampling) - set(fields)
        if unknown:
            raise InputError(
                f"unknown generation setting {sorted(unknown)[0]!r}: use max_new_tokens, temperature, "
                "top_k, top_p, repetition_penalty, seed, stop or prompt_lookup"
            )
        return {
            "max_new_tokens": max_new_tokens if max_new_tokens is not None else defaults.get("max_new_tokens", 64),
            "sampling": Sampling(**{k: v for k, v in fields.items() if v is not None}),
            "stop": stop,
            "prompt_lookup": PromptLookup.of(lookup),
        }


def model_of(manifest: dict, form: str, where: Path) -> str:
    """The listed file of the bundle's model in `form`: `onnx` (the model), or `ort` (its ORT-format copy)."""
    if form == "onnx":
        return manifest["model"]["file"]
    if form != "ort":
        raise InputError(f"model form {form!r} is not one a bundle holds: use onnx or ort")
    entry = (manifest.get("targets") or {}).get("ort") if isinstance(manifest.get("targets"), dict) else None
    name = entry.get("file") if isinstance(entry, dict) else None
    if not isinstance(name, str) or name not in manifest["files"]:
        raise BundleError(f"{where} holds no ORT-format model: build the bundle with --target ort")
    return name


def load(
    path: str | Path,
    verify_hashes: bool = True,
    task: str | None = None,
    threads: int = 1,
    memory_arena: bool = True,
    model_form: str = "onnx",
    exact_int8: bool = False,
) -> Bundle:
    """Open the bundle at `path` (a folder or a .zip).

    `model_form="ort"` runs the ORT-format model a bundle built with `--target ort` carries (what
    ONNX Runtime Mobile loads) instead of the ONNX graph.

    Hashes are checked unless `verify_hashes=False` (for storage that is already trusted: a read-only
    app image); each loaded file is hashed from the very bytes handed to its loader, the others
    before returning. Whatever the flag, only listed files inside the folder are opened, and links
    are refused. `task` refuses a bundle of another task before its model is loaded.

    `exact_int8=True` runs INT8 products without x86's 16-bit shortcut on CPUs without VNNI
    (`session.exact_int8`): slower there, and what the graph's arithmetic says.
    """
    from .files import BundleFiles
    from .session import exact_int8 as exact_int8_sessions

    path = Path(path)
    if not path.exists():
        raise BundleError(f"{path} does not exist: pass a bundle folder or its .zip")
    folder = unzip(path) if path.is_file() else path
    manifest = read_manifest(folder)
    if task is not None and manifest.get("task") != task:
        raise BundleError(f"{path} is a {manifest.get('task')} bundle, not {task}: pass a {task} bundle")
    check_layout(folder, manifest, sizes=verify_hashes)
    files = BundleFiles(folder, manifest["files"], verify=verify_hashes)
    with exact_int8_sessions(exact_int8):
        bundle = Bundle(
            folder, manifest, threads=threads, memory_arena=memory_arena, files=files, model_form=model_form
        )
    if verify_hashes:
        for rel in sorted(set(manifest["files"]) - files.checked):  # what the loaders did not read
            files.check(rel)
    return bundle
