"""The torch-free inference path: onnxruntime, tokenizers and numpy, nothing else.

This is what an edge app, the FastAPI server and the benchmark workers load. It must never import
torch or transformers (a test checks), which is why it keeps peak memory near a bare onnxruntime
session rather than the ~450 MiB of a wrapper that drags torch along.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np

DEFAULT_MAX_LENGTH = 512


class TextTokenizer:
    """A `tokenizer.json` (Hugging Face fast tokenizer) producing numpy model inputs."""

    def __init__(self, path: str | Path, max_length: int | None = None):
        from tokenizers import Tokenizer

        path = Path(path)
        folder = path if path.is_dir() else path.parent
        file = path / "tokenizer.json" if path.is_dir() else path
        if not file.exists():
            raise FileNotFoundError(f"{file} not found: the model folder needs a fast tokenizer (tokenizer.json)")
        self.max_length = max_length or configured_max_length(folder)
        self._tok = Tokenizer.from_file(str(file))
        self._tok.no_padding()
        self._tok.enable_truncation(self.max_length)
        self.pad_id = _pad_id(folder, self._tok)

    def encode(self, texts: Sequence[str], pad_to: int | None = None) -> dict[str, np.ndarray]:
        """Token ids, attention mask and token types for a batch, padded to its longest text (or `pad_to`)."""
        encodings = self._tok.encode_batch(list(texts))
        width = pad_to or max(len(e.ids) for e in encodings)
        n = len(encodings)
        ids = np.full((n, width), self.pad_id, dtype=np.int64)
        mask = np.zeros((n, width), dtype=np.int64)
        types = np.zeros((n, width), dtype=np.int64)
        for row, enc in enumerate(encodings):
            k = min(len(enc.ids), width)
            ids[row, :k] = enc.ids[:k]
            mask[row, :k] = 1
            types[row, :k] = enc.type_ids[:k]
        return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}

    def lengths(self, texts: Sequence[str]) -> list[int]:
        return [len(e.ids) for e in self._tok.encode_batch(list(texts))]


def configured_max_length(folder: Path) -> int:
    """The longest input the tokenizer of `folder` produces (its `model_max_length`, at most 512)."""
    cfg = folder / "tokenizer_config.json"
    if cfg.exists():
        value = json.loads(cfg.read_text()).get("model_max_length") or DEFAULT_MAX_LENGTH
        return int(min(value, DEFAULT_MAX_LENGTH))
    return DEFAULT_MAX_LENGTH


def _pad_id(folder: Path, tok) -> int:
    special = folder / "special_tokens_map.json"
    pad_token = "[PAD]"
    if special.exists():
        value = json.loads(special.read_text()).get("pad_token", pad_token)
        pad_token = value["content"] if isinstance(value, dict) else value
    pad_id = tok.token_to_id(pad_token) if pad_token else None
    return int(pad_id) if pad_id is not None else 0


def session_options(threads: int):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return options


class OnnxModel:
    """An ONNX model in an onnxruntime session, fed only the inputs its graph declares."""

    def __init__(self, model_path: str | Path, threads: int = 1):
        import onnxruntime as ort

        self.path = Path(model_path)
        self.session = ort.InferenceSession(str(self.path), session_options(threads),
                                            providers=["CPUExecutionProvider"])
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]

    def run(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        feed = {name: inputs[name] for name in self.input_names}
        return self.session.run(self.output_names[:1], feed)[0]


def onnx_file(path: str | Path) -> Path:
    """The ONNX model to load from `path`: the file itself, or `model.onnx` in a folder, else its first."""
    path = Path(path)
    if path.is_file():
        return path
    candidates = sorted(path.glob("*.onnx"), key=lambda p: (p.name != "model.onnx", p.name))
    if not candidates:
        raise FileNotFoundError(f"{path} holds no .onnx file")
    return candidates[0]


class TextClassifier:
    """Text in, label out: a tokenizer and an ONNX classifier from one folder."""

    def __init__(self, folder: str | Path, threads: int = 1, max_length: int | None = None):
        folder = Path(folder)
        self.model = OnnxModel(onnx_file(folder), threads=threads)
        self.tokenizer = TextTokenizer(folder, max_length=max_length)
        config = json.loads((folder / "config.json").read_text()) if (folder / "config.json").exists() else {}
        id2label = config.get("id2label") or {}
        self.labels = [id2label[k] for k in sorted(id2label, key=int)]

    def logits(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        return self.model.run(inputs)

    def classify(self, texts: Sequence[str]) -> list[dict]:
        logits = self.logits(self.tokenizer.encode(texts))
        probs = softmax(logits)
        best = probs.argmax(axis=-1)
        return [{"label": self.labels[i] if self.labels else int(i), "score": float(p[i])}
                for i, p in zip(best, probs)]


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(shifted)
    return e / e.sum(axis=-1, keepdims=True)


from .generation import CausalLM, Generation, Sampling, TextGenerator  # noqa: E402  (after the helpers it uses)
