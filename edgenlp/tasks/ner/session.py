"""The worker side: one tagger tagging the evaluation sentences word by word, and timed as it does."""

from __future__ import annotations

import time
from pathlib import Path

from ..classification.session import RunnerModel, open_model
from ..classification.session import Session as EncoderSession
from .spec import AUTO_MODEL


def _pytorch(path, threads: int):
    from ...bench.runners import PytorchRunner

    return RunnerModel(PytorchRunner(path, threads, AUTO_MODEL))


def open_tagger(path: str | Path, runner: str, threads: int = 1):
    """A `TokenTagger` over the model at `path` run by `runner` (pytorch, an engine, or module:Class)."""
    from ...runtime.entities import TokenTagger

    path = Path(path)
    return TokenTagger.around(open_model(path, runner, threads, _pytorch), path if path.is_dir() else path.parent)


class Session(EncoderSession):
    """The classifier's timed workloads on the tagger graph; `eval` tags every sentence's words."""

    def __init__(self, path: str, runner: str, threads: int, payload_file: str):
        import json

        self.tagger = open_tagger(path, runner, threads)
        self.runner = self  # the timed workloads call `logits`: here, every token's tag logits
        self.tokenizer = self.tagger.tokenizer
        with open(payload_file, encoding="utf-8") as f:
            payload = json.load(f)
        self.texts, self.words = payload["texts"], payload.get("words") or []
        self._encoded: dict = {}

    def logits(self, inputs):
        return self.tagger.model.run(inputs)

    def handle(self, req: dict) -> dict:
        op = req["op"]
        if op == "eval":  # one sentence at a time, as deployed
            return {"tags": [self.tagger.tag_words([words], batch_size=1)[0] for words in self.words]}
        if op == "e2e":  # tokenise, run, read the entities: what a caller of `entities` waits for
            texts, clock, out, warm = self.texts, time.perf_counter_ns, [], req.get("warmup", 2)
            start = req.get("start", 0)
            for i in range(warm + req["n"]):
                text = texts[(start + i) % len(texts)]
                t0 = clock()
                self.tagger.entities([text], batch_size=1)
                if i >= warm:
                    out.append((clock() - t0) / 1e6)
            return {"ms": out}
        return super().handle(req)
