"""The files of a bundle, named as transformers.js (`@huggingface/transformers`) and Optimum expect."""

from __future__ import annotations

import os
import shutil
import uuid
import zipfile
from pathlib import Path

from .. import fsio
from ..artifact import Artifact, _external_data
from ..errors import ArtifactError

MODEL_FILES = {"fp32": "model.onnx", "fp16": "model_fp16.onnx", "int8": "model_quantized.onnx",
               "int4": "model_q4.onnx"}
"""transformers.js picks `onnx/model{suffix}.onnx` by the dtype an app asks for (fp32, fp16, q8, q4)."""
REQUIRED = ("config.json", "tokenizer.json")
OPTIONAL = ("tokenizer_config.json", "special_tokens_map.json", "generation_config.json")


def copy_model(variant: Artifact, folder: Path) -> str:
    """Copy the variant's graph (and its external data, renamed with it) to `onnx/`; returns its relative path."""
    name = MODEL_FILES.get(variant.precision)
    if name is None:
        raise ArtifactError(f"{variant.path} has precision {variant.precision}, which has no transformers.js file "
                            f"name (known: {', '.join(MODEL_FILES)})")
    graph = variant.onnx_path
    (folder / "onnx").mkdir()
    target = folder / "onnx" / name
    if _external_data(graph):
        import onnx

        model = onnx.load(str(graph), load_external_data=True)
        onnx.save_model(model, str(target), save_as_external_data=True, all_tensors_to_one_file=True,
                        location=f"{name}_data")
    else:
        shutil.copy2(graph, target)
    return f"onnx/{name}"


def copy_support(src: Path, folder: Path) -> None:
    for name in REQUIRED:
        if not (src / name).is_file():
            raise ArtifactError(f"{src} has no {name}, which a bundle needs (loaders read it): re-export the variant "
                                "from a checkpoint that has a fast tokenizer and a config")
    for name in REQUIRED + OPTIONAL:
        if (src / name).is_file():
            shutil.copy2(src / name, folder / name)


def write_zip(folder: Path, archive: Path) -> Path:
    """`folder` as a zip (paths relative to it), written beside `archive` and renamed into place."""
    tmp = archive.with_name(f".{archive.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=6) as z:
            for path in sorted(p for p in folder.rglob("*") if p.is_file()):
                z.write(path, path.relative_to(folder).as_posix())
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, archive)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsio.fsync_dir(archive.parent)
    return archive
