"""The worker side: one model turning the evaluation sentences into vectors, and timed as it does."""

from __future__ import annotations

import base64
import time
from pathlib import Path

import numpy as np

from ..classification.session import Session as EncoderSession
from ..classification.session import open_model


class PytorchEncoder:
    """A bare encoder in PyTorch eager FP32 (the reference): `run(inputs) -> last_hidden_state`."""

    def __init__(self, path: Path, threads: int):
        import torch
        import transformers

        from ... import architectures
        from ...trust import pretrained_options

        transformers.logging.set_verbosity_error()
        torch.set_num_threads(threads)
        architectures.register()  # a pruned checkpoint's classes
        self.torch = torch
        self.model = transformers.AutoModel.from_pretrained(str(path), **pretrained_options(path)).eval()

    def run(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        with self.torch.inference_mode():
            feed = {
                k: self.torch.from_numpy(v)
                for k, v in inputs.items()
                if k in ("input_ids", "attention_mask", "token_type_ids")
            }
            return self.model(**feed).last_hidden_state.numpy()


def open_embedder(path: str | Path, runner: str, threads: int = 1):
    """A `TextEmbedder` over the model at `path` run by `runner` (pytorch, an engine, or module:Class)."""
    from ...runtime.embedding import TextEmbedder

    path = Path(path)
    return TextEmbedder.around(
        open_model(path, runner, threads, PytorchEncoder), path if path.is_dir() else path.parent
    )


def pack(vectors: np.ndarray) -> dict:
    """Vectors as JSON: float32 bytes in base64 (exact, and a quarter of the size of a list of numbers)."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    return {"shape": list(vectors.shape), "float32_base64": base64.b64encode(vectors.tobytes()).decode("ascii")}


def unpack(packed: dict) -> np.ndarray:
    return np.frombuffer(base64.b64decode(packed["float32_base64"]), dtype=np.float32).reshape(packed["shape"])


class Session(EncoderSession):
    """The classifier's timed workloads on the encoder graph; `eval` returns every sentence's vector."""

    def __init__(self, path: str, runner: str, threads: int, payload_file: str):
        import json

        self.embedder = open_embedder(path, runner, threads)
        self.runner = self  # the timed workloads call `logits`: here, the graph's token vectors
        self.tokenizer = self.embedder.tokenizer
        with open(payload_file, encoding="utf-8") as f:
            self.texts = json.load(f)["texts"]
        self._encoded: dict = {}

    def logits(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        return self.embedder.model.run(inputs)

    def handle(self, req: dict) -> dict:
        op = req["op"]
        if op == "eval":
            vectors = np.concatenate([self.embedder.vectors(enc) for enc in self._single("real")])
            return {"vectors": pack(vectors), "pooling": self.embedder.pooling.as_json()}
        if op == "e2e":  # tokenise, run, pool: what a caller of `embed` waits for
            texts, clock, out, warm = self.texts, time.perf_counter_ns, [], req.get("warmup", 2)
            start = req.get("start", 0)
            for i in range(warm + req["n"]):
                text = texts[(start + i) % len(texts)]
                t0 = clock()
                self.embedder.vectors(self.tokenizer.encode([text]))
                if i >= warm:
                    out.append((clock() - t0) / 1e6)
            return {"ms": out}
        return super().handle(req)
