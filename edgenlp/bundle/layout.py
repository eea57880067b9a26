"""The files of a bundle, named as transformers.js (`@huggingface/transformers`) and Optimum expect."""

from __future__ import annotations

import json
import os
import shutil
import uuid
import zipfile
from pathlib import Path

from .. import fsio
from ..architectures import FAMILIES
from ..artifact import Artifact
from ..errors import ArtifactError

MODEL_FILES = {"fp32": "model.onnx", "fp16": "model_fp16.onnx", "int8": "model_quantized.onnx", "int4": "model_q4.onnx"}
"""transformers.js picks `onnx/model{suffix}.onnx` by the dtype an app asks for (fp32, fp16, q8, q4)."""
REQUIRED = ("config.json", "tokenizer.json")
PRUNED_ENCODER_TYPE = FAMILIES["bert"].pruned_model_type
OPTIONAL = ("tokenizer_config.json", "special_tokens_map.json", "generation_config.json")


ENGINE_FOLDERS = {"openvino": "openvino", "ctranslate2": "ctranslate2"}
"""Where an engine's own files go in a bundle: OpenVINO's IR pair, CTranslate2's model folder."""


def copy_model(variant: Artifact, folder: Path) -> str:
    """Copy the variant's model into the bundle's layout for its engine; returns its relative path."""
    if variant.format in ENGINE_FOLDERS:
        return copy_engine_model(variant, folder)
    return copy_onnx(variant, folder)


def copy_engine_model(variant: Artifact, folder: Path) -> str:
    """OpenVINO: `openvino/openvino_model.xml` (+ .bin, Optimum Intel's names); CTranslate2: `ctranslate2/` as
    CTranslate2 wrote it (model.bin, its config, the vocabulary), plus the classifier head."""
    sub = folder / ENGINE_FOLDERS[variant.format]
    sub.mkdir()
    for path in variant.model_files:
        shutil.copy2(path, sub / path.name)
    if variant.format == "openvino":
        return f"{sub.name}/{variant.model_files[0].name}"
    return sub.name


def copy_onnx(variant: Artifact, folder: Path) -> str:
    """Copy the variant's graph (and its external data, renamed with it) to `onnx/`; returns its relative path."""
    name = MODEL_FILES.get(variant.precision)
    if name is None:
        raise ArtifactError(
            f"{variant.path} has precision {variant.precision}, which has no transformers.js file "
            f"name (known: {', '.join(MODEL_FILES)})"
        )
    import onnx

    from ..runtime.generation import PREFILL_GRAPH

    (folder / "onnx").mkdir()
    save_model(onnx.load(str(variant.onnx_path)), folder / "onnx" / name)
    prefill = variant.path / PREFILL_GRAPH
    if prefill.is_file():  # edgenlp's runtime reads prompts with it; transformers.js uses the model alone
        save_model(onnx.load(str(prefill)), folder / "onnx" / PREFILL_GRAPH)
    return f"onnx/{name}"


def save_model(model, path: Path) -> None:
    """The graph at `path`, its weights in `<name>_data` beside it (any earlier one replaced).

    onnxruntime maps an external-data file instead of parsing the weights out of the graph and
    copying them, so a process that loads the model peaks lower; Optimum reads the file as it is, and transformers.js when config.json says
    `transformers.js_config.use_external_data_format` (`copy_support` writes it).
    """
    import onnx

    data = path.with_name(f"{path.name}_data")
    data.unlink(missing_ok=True)  # onnx appends to an existing data file
    onnx.save_model(
        model,
        str(path),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location=data.name,
        size_threshold=1024,
    )
    if data.exists():
        data.chmod(0o644)  # onnx creates it owner-only; a bundle is served and copied


def copy_support(src: Path, folder: Path) -> None:
    for name in REQUIRED:
        if not (src / name).is_file():
            raise ArtifactError(
                f"{src} has no {name}, which a bundle needs (loaders read it): re-export the variant "
                "from a checkpoint that has a fast tokenizer and a config"
            )
    for name in REQUIRED + OPTIONAL:
        if (src / name).is_file():
            shutil.copy2(src / name, folder / name)
    config = json.loads((folder / "config.json").read_text())
    config["transformers.js_config"] = {**config.get("transformers.js_config", {}), "use_external_data_format": True}
    if config.get("model_type") == PRUNED_ENCODER_TYPE:
        # transformers.js picks its model class by model_type and refuses edgenlp's own; an encoder's
        # graph carries its layers' shapes (no cache to size), so the pruned model loads as BERT
        config["model_type"] = "bert"
    fsio.write_json_atomic(folder / "config.json", config)


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
