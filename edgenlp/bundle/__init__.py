"""Edge bundles: one verified folder that an app loads as it is.

`build` turns a variant (or the selected variant of a run) into the layout transformers.js and
Optimum load (`config.json`, the tokenizer files, the model under `onnx/` with their file names; an
OpenVINO or CTranslate2 variant goes under `openvino/` or `ctranslate2/` in that engine's own files),
adds the targets asked for (`ort`: the ORT mobile format; `strings`: one graph with the tokenizer
inside), and writes `manifest.json` last: input/output signature, opset, minimum onnxruntime,
instruction set, lineage, benchmark summary and the sha256 of every file, which
`edgenlp.runtime.load` checks. The folder is built beside its destination and swapped in whole.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import import_module
from pathlib import Path

from .. import fsio
from ..errors import ArtifactError
from .layout import copy_model, copy_support, write_zip
from .manifest import compose
from .source import Source, resolve

TARGETS = {
    "ort": "edgenlp.bundle.ort_format",
    "strings": "edgenlp.bundle.strings",
}
"""Optional additions to the default layout; each module offers `add(folder, model_rel, source, settings) -> dict`."""


@dataclass(frozen=True)
class TargetSettings:
    data: object = None
    """The data (a name, a file, or a `DataSpec`) whose test split checks the strings target (default: the run's)."""
    max_label_differences: int = 0
    """Test texts on which the strings target may give another label than the two-part pipeline."""
    check_texts: int | None = None
    """Held-out texts a check on another machine (`check_on`) runs (None: the task's default, all of a
    classifier's test split, 32 prompts of a decoder's)."""


def build(
    source_path: str | Path,
    out: str | Path,
    targets: Sequence[str] = (),
    zip_archive: bool = False,
    settings: TargetSettings = TargetSettings(),
    check_on: Sequence[str] = (),
) -> Path:
    """Write the bundle of `source_path` (a variant folder, or a run folder's selected variant) to `out`.

    `check_on` names machines (`arm64`, `arm64-dotprod`, ...: `edgenlp.targets`) the finished bundle
    is run on, emulated, and compared with this machine's run; the verdicts go into the manifest as
    `checked_on`, and a bundle that failed one is still written, with its evidence.
    """
    unknown = [t for t in targets if t not in TARGETS]
    if unknown:
        raise ArtifactError(
            f"unknown bundle target '{unknown[0]}': use {', '.join(TARGETS)} (the transformers.js "
            "layout is always written)"
        )
    if check_on:
        from .. import targets as machines

        for name in check_on:
            machines.module_of(name)
    source = resolve(Path(source_path))
    if targets and source.variant.format != "onnx":
        raise ArtifactError(
            f"bundle targets ({', '.join(targets)}) transform an ONNX graph, but "
            f"{source.variant.name} is a {source.variant.format} variant: drop --target"
        )
    out = Path(out)
    _refuse_foreign(out, source)
    if zip_archive:
        _refuse_foreign_zip(out.with_name(out.name + ".zip"))
    from ..tasks import get as get_task

    task = get_task(source.variant.task)
    out.parent.mkdir(parents=True, exist_ok=True)
    fsio.recover_folder(out)
    work = out.parent / f".{out.name}.partial-{os.getpid()}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    try:
        model_rel = copy_model(source.variant, work)
        copy_support(source.variant.path, work)
        task_fields = task.bundle_section(source.variant, work, model_rel, engine=source.variant.format)
        added = {
            name: import_module(TARGETS[name]).add(work, model_rel, source, settings) for name in dict.fromkeys(targets)
        }
        manifest = compose(work, model_rel, source, task, task_fields, added)
        fsio.write_json_atomic(work / "manifest.json", manifest)
        if check_on:
            manifest["checked_on"] = checked_on(work, source, task, check_on, settings)
            fsio.write_json_atomic(work / "manifest.json", manifest)
        fsio.replace_folder(work, out, out.parent / f".{out.name}.old-{os.getpid()}")
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    if zip_archive:
        write_zip(out, out.with_name(out.name + ".zip"))
    return out


def checked_on(folder: Path, source: Source, task, names: Sequence[str], settings: TargetSettings) -> dict:
    """Each named machine's verdict on the bundle at `folder`, run on the held-out split of its data."""
    from .. import targets as machines
    from ..runtime.bundle import read_manifest
    from .source import evaluation_data

    spec = evaluation_data(source, settings.data, "a check on another machine")
    labels = read_manifest(folder).get("labels") or []
    held_out = task.eval_set(task.load_data(spec), labels)
    limit = () if settings.check_texts is None else (settings.check_texts,)
    texts, references = task.target_check_set(held_out, *limit)
    return machines.check_all(folder, names, texts, references)


def _refuse_foreign(out: Path, source: Source) -> None:
    """Replace only an earlier bundle, never a folder edgenlp did not write, nor the model being read."""
    fsio.refuse_link(out)
    if out.exists() and not out.is_dir():
        raise ArtifactError(f"{out} is a file: pass a folder for --out")
    here, read = out.resolve(), source.variant.path.resolve()
    if here == read or here in read.parents or read in here.parents:
        raise ArtifactError(
            f"--out {out} overlaps the variant being bundled ({source.variant.path}): pass another --out"
        )
    if not out.is_dir() or not any(out.iterdir()):
        return
    from ..runtime.bundle import read_manifest
    from ..runtime.errors import BundleError

    try:
        manifest = read_manifest(out)
    except BundleError:
        raise ArtifactError(
            f"{out} is not empty and is not an edgenlp bundle: edgenlp never replaces a folder it did "
            "not write; pass a new or empty --out"
        ) from None
    known = set(manifest.get("files") or {}) | {"manifest.json"}
    foreign = sorted(
        p.relative_to(out).as_posix()
        for p in out.rglob("*")
        if p.is_file() and p.relative_to(out).as_posix() not in known
    )
    if foreign:
        raise ArtifactError(
            f"{out} holds {foreign[0]}, which edgenlp did not write: move it out, or pass another --out"
        )


def _refuse_foreign_zip(path: Path) -> None:
    """Replace only a zipped edgenlp bundle: a zip whose manifest.json has edgenlp's format, not any zip."""
    import json
    import zipfile

    from ..runtime.bundle import FORMAT

    if not path.exists() and not path.is_symlink():
        return
    if path.is_symlink() or not path.is_file():
        raise ArtifactError(
            f"{path} is a link or not a file: edgenlp replaces only a zip it wrote; move it, or pass another --out"
        )
    try:
        with zipfile.ZipFile(path) as z:
            info = z.getinfo("manifest.json")
            manifest = json.loads(z.read(info).decode("utf-8")) if info.file_size <= 16 << 20 else None
        if isinstance(manifest, dict) and manifest.get("format") == FORMAT:
            return
    except (zipfile.BadZipFile, OSError, KeyError, ValueError, UnicodeDecodeError):
        pass
    raise ArtifactError(f"{path} exists and is not a zipped edgenlp bundle: move it, or pass another --out")
