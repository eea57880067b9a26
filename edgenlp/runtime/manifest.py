"""The schema of `manifest.json`: what the runtime needs of a bundle, checked before any of it is used.

A manifest comes with the bundle, so it is a stranger's text: every name it gives must be a file
it also lists (relative, inside the folder), every number must be a number in range. Fields the
runtime does not read (lineage, benchmark, layouts) may hold anything and are passed through.
The schema is msgspec's typed structs: strict (no string for a number), and quick to import,
which an app that opens one bundle at start pays for (pydantic would add about 0.1 s).
"""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Annotated, Literal, Optional

import msgspec

ENGINES = ("onnx", "openvino", "ctranslate2")
Engine = Literal["onnx", "openvino", "ctranslate2"]
Count = Annotated[int, msgspec.Meta(ge=0)]
Positive = Annotated[int, msgspec.Meta(ge=1)]


def inside(name: str) -> str:
    """`name` if it is a path relative to the bundle folder and stays inside it."""
    parts = PurePosixPath(name).parts
    if (
        not name
        or name.startswith("/")
        or "\\" in name
        or "\x00" in name
        or PurePosixPath(name).as_posix() != name
        or any(p in ("..", ".") for p in parts)
    ):
        raise ValueError(f"{name!r} must be a path relative to the bundle folder, inside it (no '..', no leading '/')")
    return name


class FileEntry(msgspec.Struct, forbid_unknown_fields=True):
    sha256: Annotated[str, msgspec.Meta(pattern="^[0-9a-f]{64}$")]
    bytes: Count


class ModelEntry(msgspec.Struct):
    file: str
    engine: Optional[Engine] = None
    variant: str = "model"

    def __post_init__(self):
        inside(self.file)


class GenerationDefaults(msgspec.Struct):
    max_new_tokens: Optional[Count] = None
    temperature: Optional[Annotated[float, msgspec.Meta(ge=0)]] = None
    top_k: Optional[Count] = None
    top_p: Optional[Annotated[float, msgspec.Meta(gt=0, le=1)]] = None
    repetition_penalty: Optional[Annotated[float, msgspec.Meta(gt=0)]] = None
    seed: Optional[Count] = None


class Manifest(msgspec.Struct):
    format: Literal["edgenlp.bundle"]
    format_version: Positive
    task: str
    model: ModelEntry
    files: Annotated[dict[str, FileEntry], msgspec.Meta(min_length=1)]
    engine: Optional[Engine] = None
    max_length: Optional[Positive] = None
    labels: Optional[list[str]] = None
    generation: Optional[GenerationDefaults] = None

    def __post_init__(self):
        for name in self.files:
            inside(name)
        name = self.model.file  # a file (ONNX, OpenVINO's XML) or an engine's folder (CTranslate2's)
        if name not in self.files and not any(listed.startswith(name + "/") for listed in self.files):
            raise ValueError(f"model.file {name!r} is not among the listed files")


def check(manifest: dict) -> str | None:
    """None when `manifest` fits the schema, else what is wrong, in one line."""
    try:
        msgspec.convert(manifest, Manifest)
    except msgspec.ValidationError as exc:
        return " ".join(str(exc).split())
    return None
