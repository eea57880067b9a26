"""The worker side: one decoder answering the harness (`eval` for fidelity, `generate` timed), torch-free
for ONNX runners.
"""

from __future__ import annotations

import time

import numpy as np

from ...model_facts import cache_bytes_per_position, decode_weight_bytes
from .scoring import fidelity, greedy, prompt_ids


class Session:
    """One decoder answering the harness: `eval` (fidelity), `generate` (timed), `stats`."""

    def __init__(self, path: str, runner: str, threads: int, payload_file: str):
        import json

        from ...bench.runners import open_causal_runner

        self.path, self.threads = path, threads
        self.model = open_causal_runner(path, runner, threads)
        with open(payload_file, encoding="utf-8") as f:
            self.payload = json.load(f)
        stream = next(iter(self.payload["streams"].values()))
        self.prompt_pool = self.model.encode(stream[:100_000])

    def _prompt(self, length: int, index: int) -> list[int]:
        """`length` tokens of real held-out text, a different slice for each request."""
        pool = self.prompt_pool
        if len(pool) < length + 1:
            raise ValueError(f"the held-out text has {len(pool)} tokens, fewer than a {length}-token prompt")
        start = (index * 997) % (len(pool) - length)
        return pool[start : start + length]

    def _generate(self, prompt: list[int], new_tokens: int, use_cache: bool) -> dict:
        """Time to first token (prefill + pick) and each later token's step, greedy, no early stop.

        A runner with its own decoding loop (`timed_generation`, e.g. CTranslate2) reports the same
        two figures from inside that loop.
        """
        if use_cache and hasattr(self.model, "timed_generation"):
            ttft, per_token = self.model.timed_generation(prompt, new_tokens)
            return {"ttft_ms": ttft, "decode_ms": per_token}
        from ...runtime.generation import generation_step

        step, clock = generation_step(self.model), time.perf_counter_ns
        ids = list(prompt)
        t0 = clock()
        logits, past = step(np.asarray([ids], dtype=np.int64), None)
        token = int(logits[0, -1].argmax())
        ttft = (clock() - t0) / 1e6
        per_token = []
        for _ in range(new_tokens - 1):
            ids.append(token)
            t0 = clock()
            if use_cache:
                logits, past = step(np.asarray([[token]], dtype=np.int64), past)
            else:
                logits, _ = step(np.asarray([ids], dtype=np.int64), None)
            token = int(logits[0, -1].argmax())
            per_token.append((clock() - t0) / 1e6)
        return {"ttft_ms": ttft, "decode_ms": per_token}

    def stats(self) -> dict:
        return {
            "decode_weight_bytes": decode_weight_bytes(self.path),
            "cache_bytes_per_position": cache_bytes_per_position(self.path),
            "context": self.model.context,
        }

    def handle(self, req: dict) -> dict:
        op = req["op"]
        if op == "generate":
            for i in range(req.get("warmup", 0)):
                self._generate(self._prompt(req["prompt_tokens"], req["start"] + 1000 + i), 8, req["use_cache"])
            runs = [
                self._generate(
                    self._prompt(req["prompt_tokens"], req["start"] + i), req["new_tokens"], req["use_cache"]
                )
                for i in range(req["n"])
            ]
            return {
                "ttft_ms": [r["ttft_ms"] for r in runs],
                "decode_ms": [x for r in runs for x in r["decode_ms"]],
                "total_ms": [r["ttft_ms"] + sum(r["decode_ms"]) for r in runs],
                "new_tokens": req["new_tokens"],
                "use_cache": req["use_cache"],
            }
        if op == "eval":
            return self._evaluate(req.get("reference"))
        raise ValueError(f"unknown op {op}")

    def _evaluate(self, reference: dict | None) -> dict:
        from ...bench.runners import open_causal_runner

        ref = open_causal_runner(reference["path"], reference["runner"], self.threads) if reference else None
        window = self.model.context
        limit = self.payload["max_eval_tokens"]
        streams = {}
        for name, text in self.payload["streams"].items():
            ids = self.model.encode(
                text[: limit * 16] if limit else text
            )  # 16 characters a token is far above English's ~4
            ids = ids[:limit] if limit else ids
            if len(ids) < 2:
                raise ValueError(f"{name} is too small to score (fewer than 2 tokens): give more held-out text")
            streams[name] = fidelity(self.model, ids, min(window, len(ids)), max(1, min(window, len(ids)) // 2), ref)
        n = self.payload["continuation_tokens"]
        continuations = []
        for text in self.payload["prompts"]:
            prompt = prompt_ids(self.model, text)
            tokens = greedy(self.model, prompt, min(n, window - len(prompt)))
            continuations.append(
                {"prompt": self.model.decode_ids(prompt), "tokens": tokens, "text": self.model.decode_ids(tokens)}
            )
        return {"streams": streams, "continuations": continuations}
