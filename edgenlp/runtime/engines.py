"""The inference engines a variant can run on, and how to open a model folder on each.

Every engine offers the same two things: an encoder with `run(inputs) -> logits` (what the
classifier and the benchmark harness call) and a decoder that is a `TextGenerator` (`step`,
`encode`, `decode_ids`). A variant's `format` names its engine, so the harness, the validator, the
bundle and the runtime open any variant the same way. Only the engine a model needs is imported:
a process serving an OpenVINO bundle never loads onnxruntime, and the reverse.

    onnx         onnxruntime              (always installed)
    openvino     OpenVINO IR              pip install 'edgenlp[openvino]'
    ctranslate2  CTranslate2 model        pip install 'edgenlp[ctranslate2]'
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import import_module
from importlib.util import find_spec
from pathlib import Path

from .errors import EdgeNLPError
from .files import PLAIN, Files


class EngineMissing(EdgeNLPError):
    """The engine a model or recipe needs is not installed."""


@dataclass(frozen=True)
class Engine:
    name: str
    package: str
    """The module the engine imports (checked before anything is opened)."""
    install: str
    module: str
    """The runtime module with `Encoder`, `decoder(...)` and, for engines with their own folder layout,
    `holds(folder)` and `model_files(folder)` (ONNX files are found by `artifact.loaded_model_files`)."""

    def installed(self) -> bool:
        return find_spec(self.package) is not None

    def require(self, what: str = "this model") -> None:
        if not self.installed():
            raise EngineMissing(
                f"{what} needs the {self.name} engine, but {self.package} is not installed: {self.install}"
            )

    def implementation(self):
        self.require()
        return import_module(self.module, __package__)


ENGINES = {
    "onnx": Engine("onnx", "onnxruntime", "pip install onnxruntime", ".session"),
    "openvino": Engine("openvino", "openvino", "pip install 'edgenlp[openvino]'", ".openvino_engine"),
    "ctranslate2": Engine("ctranslate2", "ctranslate2", "pip install 'edgenlp[ctranslate2]'", ".ctranslate2_engine"),
}


def get(name: str) -> Engine:
    if name not in ENGINES:
        raise EngineMissing(f"unknown engine '{name}': use one of {', '.join(ENGINES)}")
    return ENGINES[name]


def detect(folder: Path) -> str | None:
    """The engine whose files `folder` holds (None when it holds none of theirs)."""
    folder = Path(folder)
    for name in ("openvino", "ctranslate2"):  # their layouts are unambiguous; ONNX is any *.onnx
        if import_module(ENGINES[name].module, __package__).holds(folder):
            return name
    if folder.suffix == ".onnx" or (folder.is_dir() and any(folder.glob("*.onnx"))):
        return "onnx"
    return None


def open_encoder(engine: str, path: str | Path, threads: int = 1, memory_arena: bool = True, files: Files = PLAIN):
    """An object with `run(inputs) -> logits` for the classifier in `path` (a folder or a model file).

    `files` reads the model's bytes (a bundle's: checked against its manifest); every engine takes them from it."""
    return get(engine).implementation().Encoder(Path(path), threads=threads, memory_arena=memory_arena, files=files)


def open_graph(engine: str, path: str | Path, threads: int = 1, files: Files = PLAIN):
    """A graph run by input and output names (`input_names`, `output_names`, `input_specs`, `run_outputs`):
    what `CausalLM` drives. Engines that run their own decoder (CTranslate2) have none."""
    impl = get(engine).implementation()
    if not hasattr(impl, "Graph"):
        raise EngineMissing(f"the {engine} engine does not run graphs by name: open its decoder with open_decoder")
    return impl.Graph(Path(path), threads=threads, files=files)


def open_decoder(
    engine: str, folder: str | Path, threads: int = 1, model_file: str | Path | None = None, files: Files = PLAIN
):
    """A `TextGenerator` for the decoder in `folder`."""
    return get(engine).implementation().decoder(Path(folder), threads=threads, model_file=model_file, files=files)


def model_files(engine: str, folder: Path) -> list[Path]:
    """The files the engine reads to run the model: the size a user ships."""
    return import_module(get(engine).module, __package__).model_files(Path(folder))
