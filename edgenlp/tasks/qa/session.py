"""The worker side: one reader answering the evaluation questions one at a time, and timed as it does."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from ..classification.session import Session as EncoderSession
from ..classification.session import open_model
from .spec import AUTO_MODEL


class PytorchSpans:
    """A question-answering model in PyTorch eager FP32 (the reference): start and end logits stacked."""

    def __init__(self, path: Path, threads: int):
        from ...bench.runners import PytorchRunner

        self.runner = PytorchRunner(path, threads, AUTO_MODEL)

    def run(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        torch, model = self.runner.torch, self.runner.model
        with torch.inference_mode():
            feed = {k: torch.from_numpy(v) for k, v in inputs.items() if k in self.runner.accepted}
            out = model(**feed)
            return torch.stack([out.start_logits, out.end_logits], dim=-1).numpy()


def open_answerer(path: str | Path, runner: str, threads: int = 1):
    """A `QuestionAnswerer` over the model at `path` run by `runner` (pytorch, an engine, or module:Class)."""
    from ...runtime.answers import QuestionAnswerer, SpanModel

    path = Path(path)
    model = open_model(path, runner, threads, PytorchSpans, on_engine=SpanModel)
    return QuestionAnswerer.around(model, path if path.is_dir() else path.parent)


class Session(EncoderSession):
    """The classifier's timed workloads on the reader graph (real lengths: each question's first window);
    `eval` answers every question, its windows in one batch."""

    def __init__(self, path: str, runner: str, threads: int, payload_file: str):
        import json

        self.answerer = open_answerer(path, runner, threads)
        self.runner = self  # the timed workloads call `logits`: here, start and end logits
        self.tokenizer = self.answerer.tokenizer
        with open(payload_file, encoding="utf-8") as f:
            payload = json.load(f)
        self.texts, self.questions = payload["texts"], payload.get("questions") or []
        self._encoded: dict = {}

    def logits(self, inputs):
        return self.answerer.model.run(inputs)

    def _single(self, shape) -> list:
        if shape == "real" and "real" not in self._encoded:  # the very window the reader runs first
            pairs = self.answerer.pairs
            self._encoded["real"] = [
                self.tokenizer.pad([pairs.windows(q["question"], q["context"])[0]]) for q in self.questions
            ]
        return super()._single(shape)

    def stats(self) -> dict:
        real = self._single("real")
        return {"mean_tokens": float(np.mean([x["attention_mask"].sum() for x in real])) if real else 0.0}

    def handle(self, req: dict) -> dict:
        op = req["op"]
        if op == "eval":  # one question at a time, as deployed
            found = [self.answerer.answers([q])[0] for q in self.questions]
            return {
                "answers": [a["answer"] for a in found],
                "starts": [a["start"] for a in found],
                "scores": [round(a["score"], 6) for a in found],
                "windows": [len(self.answerer.pairs.windows(q["question"], q["context"])) for q in self.questions],
            }
        if op == "e2e":  # windows, run, the best span: what a caller of `answer` waits for
            clock, out, warm = time.perf_counter_ns, [], req.get("warmup", 2)
            start = req.get("start", 0)
            for i in range(warm + req["n"]):
                question = self.questions[(start + i) % len(self.questions)]
                t0 = clock()
                self.answerer.answers([question])
                if i >= warm:
                    out.append((clock() - t0) / 1e6)
            return {"ms": out}
        return super().handle(req)
