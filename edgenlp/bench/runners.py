"""How to run a model folder: encoded numpy inputs in, logits out.

The harness and the validator only see this interface, so any way of running a model (PyTorch eager,
the runtime's engines: onnxruntime, OpenVINO, CTranslate2; a third-party wrapper given as
`module:Class`) is measured the same way.
"""

from __future__ import annotations

import inspect
import json
from functools import partial
from importlib import import_module
from pathlib import Path
from typing import Protocol

import numpy as np

from .. import architectures
from ..errors import BenchError
from ..trust import pretrained_options


class Runner(Protocol):
    def logits(self, inputs: dict[str, np.ndarray]) -> np.ndarray: ...


class EngineRunner:
    """A variant on one of the runtime's engines (onnxruntime, OpenVINO, CTranslate2), torch-free."""

    def __init__(self, path: Path, threads: int, engine: str = "onnx"):
        from ..runtime.engines import open_encoder

        self.model = open_encoder(engine, path, threads=threads)

    def logits(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        return self.model.run(inputs)


class PytorchRunner:
    """PyTorch eager FP32: the reference that every other variant is compared with."""

    def __init__(self, path: Path, threads: int, auto_model: str = "AutoModelForSequenceClassification"):
        import torch
        import transformers

        transformers.logging.set_verbosity_error()
        torch.set_num_threads(threads)
        self.torch = torch
        architectures.register()  # a pruned checkpoint's classes
        auto = getattr(transformers, auto_model)  # the task's Auto class: one of transformers' own
        self.model = auto.from_pretrained(str(path), **pretrained_options(path)).eval()
        self.accepted = set(inspect.signature(self.model.forward).parameters)

    def logits(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        with self.torch.inference_mode():
            feed = {k: self.torch.from_numpy(v) for k, v in inputs.items() if k in self.accepted}
            return self.model(**feed).logits.numpy()


def _engines() -> tuple[str, ...]:
    from ..runtime.engines import ENGINES

    return tuple(ENGINES)


BUILTIN = {"pytorch": PytorchRunner, **{name: partial(EngineRunner, engine=name) for name in _engines()}}


def detect_format(path: Path) -> str:
    """`pytorch` or an engine's name, from artifact.json if present, else from the files."""
    from ..runtime.engines import detect

    if path.is_file():
        if path.suffix in (".onnx", ".xml"):
            return detect(path)
        raise BenchError(f"{path} is not a model: pass a model folder, a run's variant folder or an .onnx file")
    meta = path / "artifact.json"
    if meta.exists():
        try:
            return json.loads(meta.read_text())["format"]
        except (json.JSONDecodeError, KeyError) as exc:
            raise BenchError(f"{meta} is unreadable ({exc}): delete the variant folder and rerun") from exc
    engine = detect(path)
    if engine:
        return engine
    if (path / "config.json").exists() and any((path / w).exists() for w in ("model.safetensors", "pytorch_model.bin")):
        return "pytorch"
    raise BenchError(f"{path} holds no model (.onnx, or config.json with weights): pass a model folder")


def open_runner(path: Path, runner: str, threads: int) -> Runner:
    """`runner` is `pytorch`, an engine (`onnx`, `openvino`, `ctranslate2`) or `package.module:Class`
    (constructed as Class(path, threads))."""
    if runner in BUILTIN:
        return BUILTIN[runner](path, threads)
    module_name, _, class_name = runner.partition(":")
    try:
        cls = getattr(import_module(module_name), class_name)
    except (ImportError, AttributeError, ValueError) as exc:
        raise BenchError(f"runner '{runner}' cannot be imported ({exc}): use onnx, pytorch or module:Class") from exc
    return cls(path, threads)


# -- decoders: `step(ids, past) -> (logits, past)` plus the text codec the harness needs ----------


class CausalRunner(Protocol):
    context: int
    eos_id: int | None

    def step(self, ids: np.ndarray, past: object) -> tuple[np.ndarray, object]:
        """May also take `last_only` (see `runtime.generation.generation_step`)."""

    def encode(self, text: str) -> list[int]: ...

    def decode_ids(self, ids: list[int]) -> str: ...


def _text_generator():
    from ..runtime.generation import TextGenerator

    return TextGenerator


class PytorchCausalLM(_text_generator()):
    """PyTorch eager FP32 with its own KV cache: the reference for decoders."""

    def __init__(self, path: Path, threads: int):
        import torch
        import transformers
        from tokenizers import Tokenizer
        from transformers import AutoModelForCausalLM

        transformers.logging.set_verbosity_error()
        torch.set_num_threads(threads)
        self.torch = torch
        architectures.register()  # a pruned checkpoint's classes
        self.model = AutoModelForCausalLM.from_pretrained(str(path), **pretrained_options(path)).eval()
        config = self.model.config
        from ..runtime.generation import context_of

        self.context, self.eos_id = context_of(config.to_dict(), f"{path}/config.json")
        self._tok = Tokenizer.from_file(str(Path(path) / "tokenizer.json"))
        self._tok.no_truncation()
        self._tok.no_padding()

    def step(self, ids: np.ndarray, past, last_only: bool = False):
        # `logits_to_keep=1` is what transformers' own generate() asks for: the LM head on the last position
        with self.torch.inference_mode():
            out = self.model(
                input_ids=self.torch.from_numpy(ids),
                past_key_values=past,
                use_cache=True,
                logits_to_keep=1 if last_only else 0,
            )
        return out.logits.float().numpy(), out.past_key_values

    def trim_past(self, past, length: int):  # type: ignore[override]
        past.crop(length)  # transformers' DynamicCache, cut in place
        return past

    def encode(self, text: str) -> list[int]:
        return self._tok.encode(text).ids

    def decode_ids(self, ids: list[int]) -> str:
        return self._tok.decode(list(ids), skip_special_tokens=False)


def open_causal_runner(path: Path, runner: str, threads: int) -> CausalRunner:
    """A decoder runner: `pytorch`, an engine's name or `package.module:Class` (constructed as Class(path, threads))."""
    from ..runtime.engines import ENGINES, open_decoder

    if runner == "pytorch":
        return PytorchCausalLM(Path(path), threads)
    if runner in ENGINES:
        return open_decoder(runner, Path(path), threads=threads)
    return open_runner(Path(path), runner, threads)
