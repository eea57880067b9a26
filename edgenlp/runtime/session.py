"""An ONNX model in an onnxruntime session, fed only the inputs its graph declares."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path

import numpy as np

from .files import PLAIN, Files

_EXACT_INT8: ContextVar[bool] = ContextVar("edgenlp_exact_int8", default=False)


@contextmanager
def exact_int8(on: bool = True) -> Iterator[None]:
    """Sessions opened inside run every INT8 product in 32 bits, as ARM's and VNNI's kernels do.

    Without VNNI, onnxruntime's x86 u8 x s8 kernels add pairs of products in 16 bits (vpmaddubsw),
    which full-range weights can saturate: fast, and a little off what the graph says. On such a CPU
    this turns on onnxruntime's `session.x64quantprecision` (weights rewritten to u8, u8 x u8 kernels;
    10-17% slower for MiniLM on an AVX2 EPYC); elsewhere onnxruntime ignores it. A target check uses it
    so that this machine's side answers what the bundle's arithmetic is, not what this CPU's shortcut
    makes of it.
    """
    token = _EXACT_INT8.set(on)
    try:
        yield
    finally:
        _EXACT_INT8.reset(token)


def session_options(threads: int, memory_arena: bool = True):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # The arena keeps the largest batch's buffers for the life of the session: fine for a server
    # of steady shapes, wasteful for an app that classifies one text now and then.
    options.enable_cpu_mem_arena = memory_arena
    # errors only: a decoder's `logits_to_keep` is an initializer that is also an input, by design,
    # and onnxruntime warns about that on every session it opens
    options.log_severity_level = 3
    if _EXACT_INT8.get():
        options.add_session_config_entry("session.x64quantprecision", "1")
    return options


_ORT_TYPES = {
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(int64)": "int64",
    "tensor(int32)": "int32",
    "tensor(int8)": "int8",
    "tensor(uint8)": "uint8",
}


class OnnxModel:
    def __init__(self, model_path: str | Path, threads: int = 1, memory_arena: bool = True, files: Files = PLAIN):
        import onnxruntime as ort

        self.path = Path(model_path)
        options = session_options(threads, memory_arena)
        data_file = self.path.with_name(f"{self.path.name}_data")  # the exporter's weights file, if any
        with files.pinned(self.path, *([data_file] if files.exists(data_file) else [])) as checked:
            if checked is not None:  # the checked files, by name (onnxruntime maps the weights file)
                self.session = ort.InferenceSession(
                    str(checked[self.path]), options, providers=["CPUExecutionProvider"]
                )
            else:  # no /proc to pin them: the checked bytes themselves (onnxruntime copies the weights)
                if files.exists(data_file):
                    weights = np.frombuffer(files.read(data_file), dtype=np.uint8)
                    options.add_external_initializers_from_files_in_memory([data_file.name], [weights], [weights.size])
                self.session = ort.InferenceSession(files.read(self.path), options, providers=["CPUExecutionProvider"])
        self.input_names = [i.name for i in self.session.get_inputs()]
        self._inputs = set(self.input_names)
        # inputs with a default (an initializer of that name): fed only by callers that know them
        self.optional_input_names = [i.name for i in self.session.get_overridable_initializers()]
        self.output_names = [o.name for o in self.session.get_outputs()]

    def run(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        feed = {name: inputs[name] for name in self.input_names}
        return self.session.run(self.output_names[:1], feed)[0]

    def run_outputs(self, names: list[str], feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        return self.session.run(names, feed)

    def bind(self, names: list[str], bound: dict[str, object]):
        """An IO binding with `bound` buffers (`buffer`) fixed by name and `names` returned on the CPU, for
        `run_bound` to reuse step after step: an output bound to the buffer of an input is written into
        it, nothing copied in or out (a KV cache in place)."""
        binding = self.session.io_binding()
        for name in names:  # first: `get_outputs` lists the outputs in the order they were bound
            binding.bind_output(name, "cpu")
        for name, buffer in bound.items():
            if name in self._inputs:
                binding.bind_ortvalue_input(name, buffer)
            else:
                binding.bind_ortvalue_output(name, buffer)
        return binding, names

    def run_bound(self, binding, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        """Run with a binding from `bind`, `feed` bound anew (small per-step inputs); its named outputs."""
        io_binding, names = binding
        for name, value in feed.items():
            io_binding.bind_cpu_input(name, value)
        for name in names:  # bound anew, or the next run must fit the shape of this run's output
            io_binding.bind_output(name, "cpu")
        self.session.run_with_iobinding(io_binding)
        return [value.numpy() for value in io_binding.get_outputs()[: len(names)]]

    @staticmethod
    def buffer(shape: tuple[int, ...], dtype: type = np.float32):
        """A zeroed buffer for `run_bound` (an OrtValue over numpy memory it keeps alive)."""
        import onnxruntime as ort

        return ort.OrtValue.ortvalue_from_numpy(np.zeros(shape, dtype=dtype))

    def input_specs(self) -> dict[str, tuple[list, str]]:
        """Each input's shape (ints, or names for dynamic axes) and element type (`float32`, ...)."""
        return {i.name: (list(i.shape), _ORT_TYPES.get(i.type, i.type)) for i in self.session.get_inputs()}


def onnx_file(path: str | Path) -> Path:
    """The ONNX model to load from `path`: the file itself, or `model.onnx` in a folder, else its first."""
    path = Path(path)
    if path.is_file():
        return path
    candidates = sorted(path.glob("*.onnx"), key=lambda p: (p.name != "model.onnx", p.name))
    if not candidates:
        raise FileNotFoundError(f"{path} holds no .onnx file")
    return candidates[0]


# -- the engine interface (`engines.py`) ------------------------------------------------------------


class Encoder(OnnxModel):
    """A classifier graph: `run(inputs) -> logits`."""

    def __init__(self, path: Path, threads: int = 1, memory_arena: bool = True, files: Files = PLAIN):
        super().__init__(onnx_file(path), threads=threads, memory_arena=memory_arena, files=files)


def Graph(path: Path, threads: int = 1, files: Files = PLAIN) -> OnnxModel:  # noqa: N802 - the engine interface's constructor
    return OnnxModel(onnx_file(path), threads=threads, files=files)


def decoder(folder: Path, threads: int = 1, model_file: str | Path | None = None, files: Files = PLAIN):
    from .generation import CausalLM

    return CausalLM(folder, threads=threads, model_file=model_file, engine="onnx", files=files)
