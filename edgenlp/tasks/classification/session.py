"""The worker side: one model answering the harness's requests, torch-free for ONNX runners."""

from __future__ import annotations

import time

import numpy as np


class RunnerModel:
    """Any runner of the harness (`logits(inputs)`) as the `run(inputs)` the runtime's task classes call."""

    def __init__(self, runner):
        self.run = runner.logits


def open_model(path, runner: str, threads: int, pytorch, on_engine=None):
    """The model at `path` with `run(inputs)`, run by `runner`: `pytorch(path, threads)` for PyTorch, an
    engine's encoder (through `on_engine`, if the task reads more than its first output), or module:Class."""
    from ...bench.runners import open_runner
    from ...runtime.engines import ENGINES, open_encoder

    if runner == "pytorch":
        return pytorch(path, threads)
    if runner in ENGINES:
        encoder = open_encoder(runner, path, threads=threads)
        return on_engine(encoder) if on_engine else encoder
    return RunnerModel(open_runner(path, runner, threads))


class Session:
    """One model answering the harness: `eval`, `latency`, `throughput`, `e2e`."""

    def __init__(self, path: str, runner: str, threads: int, payload_file: str):
        import json
        from pathlib import Path

        from ...bench.runners import open_runner
        from ...runtime import TextTokenizer

        model_path = Path(path)
        self.runner = open_runner(model_path, runner, threads)
        self.tokenizer = TextTokenizer(model_path if model_path.is_dir() else model_path.parent)
        with open(payload_file, encoding="utf-8") as f:
            self.texts = json.load(f)["texts"]
        self._encoded: dict = {}

    def _single(self, shape) -> list:
        """Batch-1 inputs for every text: at its own length (`real`), or exactly `shape` tokens.

        A fixed length is filled with real text (the text, then the ones after it, truncated), with
        no padding: padded positions make onnxruntime's Softmax take a slow exp path for the mask
        value (4.8 of 12.6 ms for INT8 MiniLM at 128), which would measure the mask, not the model.
        """
        if shape not in self._encoded:
            if shape == "real":
                self._encoded[shape] = [self.tokenizer.encode([t]) for t in self.texts]
            else:
                length, n = int(shape), len(self.texts)
                if length > self.tokenizer.max_length:
                    raise ValueError(
                        f"the profile asks for {length} tokens but this model takes at most "
                        f"{self.tokenizer.max_length}: lower the profile's seq_lengths"
                    )
                packed = []
                for i in range(n):
                    parts, j = [self.texts[i]], i
                    while self.tokenizer.lengths([" ".join(parts)])[0] < length and j < i + 64:
                        j += 1
                        parts.append(self.texts[j % n])
                    packed.append(self.tokenizer.encode([" ".join(parts)], pad_to=length))
                self._encoded[shape] = packed
        return self._encoded[shape]

    def _batched(self, batch: int) -> list:
        """Consecutive batches of the texts (the last one may be short), each padded to its longest text."""
        key = ("batch", batch)
        if key not in self._encoded:
            self._encoded[key] = [
                self.tokenizer.encode(self.texts[i : i + batch]) for i in range(0, len(self.texts), batch)
            ]
        return self._encoded[key]

    def _latency_inputs(self, shape, batch: int) -> list:
        """Inputs of the latency op: single texts, or batches (fixed lengths stack rows of real text)."""
        if batch == 1:
            return self._single(shape)
        if shape == "real":
            return self._batched(batch)
        key = ("stacked", batch, shape)
        if key not in self._encoded:
            rows = self._single(shape)
            self._encoded[key] = [
                {k: np.concatenate([rows[(i + j) % len(rows)][k] for j in range(batch)]) for k in rows[0]}
                for i in range(0, len(rows), batch)
            ]
        return self._encoded[key]

    def _throughput(self, batch: int, start: int, n: int, warmup: int) -> dict:
        """Timed batches with what each really held: sequences, real tokens and padded positions."""
        inputs = self._batched(batch)
        ms = self._timed(inputs, start, n, warmup)
        picked = [inputs[(start + warmup + i) % len(inputs)]["attention_mask"] for i in range(n)]
        return {
            "ms": ms,
            "sequences": [int(m.shape[0]) for m in picked],
            "tokens": [int(m.sum()) for m in picked],
            "positions": [int(m.size) for m in picked],
        }

    def _timed(self, inputs: list, start: int, n: int, warmup: int) -> list[float]:
        logits, clock = self.runner.logits, time.perf_counter_ns
        for i in range(warmup):
            logits(inputs[(start + i) % len(inputs)])
        times = []
        for i in range(n):
            x = inputs[(start + warmup + i) % len(inputs)]
            t0 = clock()
            logits(x)
            times.append((clock() - t0) / 1e6)
        return times

    def stats(self) -> dict:
        return {"mean_tokens": sum(self.tokenizer.lengths(self.texts)) / max(1, len(self.texts))}

    def handle(self, req: dict) -> dict:
        op = req["op"]
        if op == "eval":
            probs, preds = [], []
            for enc in self._single("real"):
                logits = self.runner.logits(enc)[0].astype("float64")
                e = np.exp(logits - logits.max())
                p = e / e.sum()
                probs.append(p.round(6).tolist())
                preds.append(int(p.argmax()))
            return {"preds": preds, "probs": probs}
        if op == "latency":
            inputs = self._latency_inputs(req.get("shape", "real"), req.get("batch", 1))
            return {"ms": self._timed(inputs, req.get("start", 0), req["n"], req.get("warmup", 2))}
        if op == "throughput":
            return self._throughput(req["batch"], req.get("start", 0), req["n"], req.get("warmup", 1))
        if op == "e2e":
            texts, clock, out = self.texts, time.perf_counter_ns, []
            start = req.get("start", 0)
            for i in range(req.get("warmup", 2) + req["n"]):
                text = texts[(start + i) % len(texts)]
                t0 = clock()
                logits = self.runner.logits(self.tokenizer.encode([text]))
                int(logits[0].argmax())
                if i >= req.get("warmup", 2):
                    out.append((clock() - t0) / 1e6)
            return {"ms": out}
        raise ValueError(f"unknown op {op}")
