"""Optimum's own inference paths (its ORTModel wrappers), as harness runners.

The harness constructs it as OptimumRunner(path, threads) inside a fresh worker process, so its
peak memory includes what that wrapper imports (torch, transformers), as a user of it would pay.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


class OptimumRunner:
    """ORTModelForSequenceClassification: the wrapper's forward, torch tensors in and out, logits read."""

    MODEL, OUTPUT = "ORTModelForSequenceClassification", "logits"

    def __init__(self, path: Path, threads: int):
        import onnxruntime as ort
        import optimum.onnxruntime
        import torch

        torch.set_num_threads(threads)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        onnx_file = sorted(Path(path).glob("*.onnx"))[0].name
        self.torch = torch
        self.model = getattr(optimum.onnxruntime, self.MODEL).from_pretrained(
            str(path), file_name=onnx_file, session_options=options, provider="CPUExecutionProvider"
        )

    def logits(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        feed = {k: self.torch.from_numpy(v) for k, v in inputs.items()}
        with self.torch.inference_mode():
            return getattr(self.model(**feed), self.OUTPUT).numpy()


class OptimumFeatureExtraction(OptimumRunner):
    """ORTModelForFeatureExtraction: the token vectors (`last_hidden_state`) the harness pools."""

    MODEL, OUTPUT = "ORTModelForFeatureExtraction", "last_hidden_state"


class OptimumTokenClassification(OptimumRunner):
    """ORTModelForTokenClassification: every token's tag logits, which the harness reads as entities."""

    MODEL = "ORTModelForTokenClassification"


class OptimumQuestionAnswering(OptimumRunner):
    """ORTModelForQuestionAnswering: start and end logits, stacked as the harness's reader reads them."""

    MODEL = "ORTModelForQuestionAnswering"

    def logits(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        feed = {k: self.torch.from_numpy(v) for k, v in inputs.items()}
        with self.torch.inference_mode():
            out = self.model(**feed)
        return np.stack([out.start_logits.numpy(), out.end_logits.numpy()], axis=-1)


class OptimumCausalLM:
    """Optimum's ORTModelForCausalLM as a decoder runner: the same `step` the harness times for every model.

    Each step goes through the wrapper's forward (torch tensors in and out, its own cache handling),
    as `generate()` does for Optimum users.
    """

    def __init__(self, path: Path, threads: int):
        import onnxruntime as ort
        import torch
        from optimum.onnxruntime import ORTModelForCausalLM
        from tokenizers import Tokenizer

        torch.set_num_threads(threads)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        onnx_file = sorted(Path(path).glob("*.onnx"), key=lambda p: (p.name != "model.onnx", p.name))[0].name
        self.torch = torch
        self.model = ORTModelForCausalLM.from_pretrained(
            str(path), file_name=onnx_file, session_options=options, provider="CPUExecutionProvider", use_cache=True
        )
        self.context = int(self.model.config.n_positions)
        self.eos_id = self.model.config.eos_token_id
        self._tok = Tokenizer.from_file(str(Path(path) / "tokenizer.json"))
        self._tok.no_truncation()

    def step(self, ids: np.ndarray, past):
        x = self.torch.from_numpy(ids)
        seen = 0 if past is None else past[1]
        mask = self.torch.ones((x.shape[0], seen + x.shape[1]), dtype=self.torch.long)
        position_ids = self.torch.arange(seen, seen + x.shape[1]).unsqueeze(0)
        with self.torch.inference_mode():
            out = self.model(
                input_ids=x,
                attention_mask=mask,
                position_ids=position_ids,
                past_key_values=None if past is None else past[0],
                use_cache=True,
            )
        return out.logits.numpy(), (out.past_key_values, seen + x.shape[1])

    def encode(self, text: str) -> list[int]:
        return self._tok.encode(text).ids

    def decode_ids(self, ids) -> str:
        return self._tok.decode(list(ids))
