"""The schema of `manifest.json`: what the runtime needs of a bundle, checked before any of it is used.

A manifest comes with the bundle, so it is a stranger's text: every name it gives must be a file
it also lists (relative, inside the folder), every number must be a number in range. Fields the
runtime does not read (lineage, benchmark, layouts) may hold anything and are passed through.
"""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Annotated, Dict, List, Literal, Optional

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

ENGINES = ("onnx", "openvino", "ctranslate2")


def _inside(name: str) -> str:
    parts = PurePosixPath(name).parts
    if (not name or name.startswith("/") or "\\" in name or "\x00" in name or PurePosixPath(name).as_posix() != name
            or any(p in ("..", ".") for p in parts)):
        raise ValueError("must be a path relative to the bundle folder, inside it (no '..', no leading '/')")
    return name


BundleName = Annotated[str, AfterValidator(_inside)]


class FileEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    bytes: int = Field(ge=0)


class ModelEntry(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)
    file: BundleName
    engine: Optional[Literal[ENGINES]] = None
    variant: str = "model"


class GenerationDefaults(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)
    max_new_tokens: Optional[int] = Field(None, ge=0)
    temperature: Optional[float] = Field(None, ge=0)
    top_k: Optional[int] = Field(None, ge=0)
    top_p: Optional[float] = Field(None, gt=0, le=1)
    repetition_penalty: Optional[float] = Field(None, gt=0)
    seed: Optional[int] = Field(None, ge=0)


class Manifest(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)
    format: Literal["edgenlp.bundle"]
    format_version: int = Field(ge=1)
    task: str
    engine: Optional[Literal[ENGINES]] = None
    model: ModelEntry
    files: Dict[BundleName, FileEntry] = Field(min_length=1)
    max_length: Optional[int] = Field(None, ge=1)
    labels: Optional[List[str]] = None
    generation: Optional[GenerationDefaults] = None

    @model_validator(mode="after")
    def _model_is_listed(self):
        name = self.model.file  # a file (ONNX, OpenVINO's XML) or an engine's folder (CTranslate2's)
        if name not in self.files and not any(listed.startswith(name + "/") for listed in self.files):
            raise ValueError(f"model.file {name!r} is not among the listed files")
        return self
