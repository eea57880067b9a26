"""Optimum's own inference path (ORTModelForSequenceClassification), as a harness runner.

The harness constructs it as OptimumRunner(path, threads) inside a fresh worker process, so its
peak memory includes what that wrapper imports (torch, transformers), as a user of it would pay.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


class OptimumRunner:
    def __init__(self, path: Path, threads: int):
        import onnxruntime as ort
        import torch
        from optimum.onnxruntime import ORTModelForSequenceClassification

        torch.set_num_threads(threads)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        onnx_file = sorted(Path(path).glob("*.onnx"))[0].name
        self.torch = torch
        self.model = ORTModelForSequenceClassification.from_pretrained(
            str(path), file_name=onnx_file, session_options=options, provider="CPUExecutionProvider")

    def logits(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        feed = {k: self.torch.from_numpy(v) for k, v in inputs.items()}
        with self.torch.inference_mode():
            return self.model(**feed).logits.numpy()
