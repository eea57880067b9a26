"""OpenVINO IR models (`openvino_model.xml` + `.bin`, Optimum Intel's names) on the CPU plugin.

The IR is converted from the variant's ONNX graph, so it keeps its input and output names: the
classifier feeds it the same arrays, and `CausalLM` drives a decoder IR with `past_key_values`
exactly as it drives onnxruntime. Compiled for latency (one stream, `threads` inference threads)
and in f32: OpenVINO would otherwise run an FP32 model in bf16 on CPUs that have it, which changes
what the variant's name promises.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .files import PLAIN, Files

XML = "openvino_model.xml"
BIN = "openvino_model.bin"


def holds(folder: Path) -> bool:
    folder = Path(folder)
    return folder.suffix == ".xml" or (folder.is_dir() and (folder / XML).is_file())


def model_file(path: Path) -> Path:
    path = Path(path)
    if path.suffix == ".xml":
        return path
    if not (path / XML).is_file():
        raise FileNotFoundError(f"{path} holds no {XML}: convert the variant with the openvino stage")
    return path / XML


def model_files(folder: Path) -> list[Path]:
    xml = model_file(folder)
    return [xml, xml.with_suffix(".bin")]


def compile_model(path: Path, threads: int = 1, files: Files = PLAIN):
    import openvino as ov

    config = {
        "INFERENCE_NUM_THREADS": threads,
        "NUM_STREAMS": 1,
        "PERFORMANCE_HINT": "LATENCY",
        "INFERENCE_PRECISION_HINT": "f32",
    }
    core = ov.Core()
    xml = model_file(path)
    with files.pinned(xml, xml.with_suffix(".bin")) as checked:  # the checked files (see Files.pinned)
        if checked is not None:
            return core.compile_model(
                core.read_model(str(checked[xml]), str(checked[xml.with_suffix(".bin")])), "CPU", config
            )
        weights = np.frombuffer(files.read(xml.with_suffix(".bin")), dtype=np.uint8)
        return core.compile_model(core.read_model(model=files.text(xml), weights=ov.Tensor(weights)), "CPU", config)


class Graph:
    """A compiled IR run by input and output names, with one reusable infer request."""

    def __init__(self, path: Path, threads: int = 1, files: Files = PLAIN):
        self.compiled = compile_model(path, threads, files)
        self.request = self.compiled.create_infer_request()
        self.input_names = [port.get_any_name() for port in self.compiled.inputs]
        self._output_index: dict[str, int] = {}
        names = []
        for i, port in enumerate(self.compiled.outputs):
            aliases = port.get_names()
            self._output_index.update({alias: i for alias in aliases})
            # the exporter's names ("logits", "present.0.key") win over names OpenVINO added
            names.append(
                next((a for a in sorted(aliases) if a == "logits" or a.startswith("present")), port.get_any_name())
            )
        self.output_names = names

    def input_specs(self) -> dict[str, tuple[list, str]]:
        specs = {}
        for port in self.compiled.inputs:
            shape = [d.get_length() if d.is_static else "?" for d in port.get_partial_shape()]
            specs[port.get_any_name()] = (shape, np.dtype(port.get_element_type().to_dtype()).name)
        return specs

    def run_outputs(self, names: list[str], feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        result = self.request.infer({name: feed[name] for name in self.input_names})
        return [result[self._output_index[name]] for name in names]

    def run(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        return self.request.infer({name: inputs[name] for name in self.input_names})[0]


class Encoder(Graph):
    """A classifier IR: `run(inputs) -> logits`."""

    def __init__(self, path: Path, threads: int = 1, memory_arena: bool = True, files: Files = PLAIN):
        super().__init__(path, threads=threads, files=files)


def decoder(folder: Path, threads: int = 1, model_file: str | Path | None = None, files: Files = PLAIN):
    from .generation import CausalLM

    return CausalLM(folder, threads=threads, model_file=model_file, engine="openvino", files=files)
