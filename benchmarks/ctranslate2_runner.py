"""CTranslate2's Generator as a harness runner for decoders (a peer, not part of edgenlp).

CTranslate2 runs its own decoding loop, so the runner times it from inside (`timed_generation`:
time to the first yielded token, then between tokens) instead of through `step`. `step` exists for
the fidelity metrics: full-sequence logits from `forward_batch` (no cache; slow, and only used there).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np


def convert(checkpoint: Path, out: Path, quantization: str = "int8") -> Path:
    """A PyTorch checkpoint -> a CTranslate2 model folder (with the tokenizer beside it)."""
    import shutil

    import ctranslate2

    if (out / "model.bin").exists():
        return out
    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    ctranslate2.converters.TransformersConverter(str(checkpoint)).convert(str(partial), quantization=quantization)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        if (checkpoint / name).exists():
            shutil.copy2(checkpoint / name, partial / name)
    shutil.copy2(checkpoint / "config.json", partial / HF_CONFIG)  # CTranslate2 writes a config.json of its own
    partial.rename(out)
    return out


HF_CONFIG = "hf_config.json"


class CTranslate2CausalLM:
    def __init__(self, path: Path, threads: int):
        import json

        import ctranslate2
        from tokenizers import Tokenizer

        self.generator = ctranslate2.Generator(str(path), device="cpu", intra_threads=threads, inter_threads=1,
                                               compute_type="int8" if "int8" in Path(path).name else "default")
        config = json.loads((Path(path) / HF_CONFIG).read_text())
        self.context = int(config.get("n_positions", 1024))
        self.eos_id = config.get("eos_token_id")
        self._tok = Tokenizer.from_file(str(Path(path) / "tokenizer.json"))
        self._tok.no_truncation()

    def _tokens(self, ids) -> list[str]:
        return [self._tok.id_to_token(int(i)) for i in ids]

    def timed_generation(self, prompt_ids: list[int], new_tokens: int) -> tuple[float, list[float]]:
        clock = time.perf_counter_ns
        times, t0 = [], clock()
        steps = self.generator.generate_tokens(self._tokens(prompt_ids), max_length=new_tokens,
                                               min_length=new_tokens, sampling_topk=1)
        for _ in steps:
            now = clock()
            times.append((now - t0) / 1e6)
            t0 = now
            if len(times) == new_tokens:
                break
        return times[0], times[1:]

    def step(self, ids: np.ndarray, past):
        seq = list(past or []) + [int(i) for i in ids[0]]
        log_probs = np.asarray(self.generator.forward_batch([seq], return_log_probs=True))
        return log_probs[:, -ids.shape[1]:, :], seq

    def encode(self, text: str) -> list[int]:
        return self._tok.encode(text).ids

    def decode_ids(self, ids) -> str:
        return self._tok.decode(list(ids))
