"""CTranslate2 models: a BERT-family encoder plus its classification head, or a GPT-2-family generator.

A variant keeps transformers' `config.json` and the tokenizer at its top, and CTranslate2's own
files (its `config.json`, `model.bin`, the vocabulary) under `ctranslate2/`. CTranslate2 converts
the encoder and its pooler but not a classification head, so the head (one dense layer on the
pooled output, as `BertForSequenceClassification` applies it) is stored beside them as
`classifier.npz` and applied here in numpy. Decoders run CTranslate2's own decoding loop with its
KV cache (`token_stream`); `step` (full-sequence log-probabilities, no cache) serves the fidelity
metrics, which need every position's distribution.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from .errors import InputError
from .files import PLAIN, Files
from .generation import Sampling, TextGenerator

FOLDER = "ctranslate2"
HEAD = "classifier.npz"


def holds(folder: Path) -> bool:
    return (Path(folder) / FOLDER / "model.bin").is_file()


def model_folder(path: Path) -> Path:
    path = Path(path)
    if (path / "model.bin").is_file():
        return path
    if not holds(path):
        raise FileNotFoundError(f"{path} holds no {FOLDER}/model.bin: convert the variant with the ctranslate2 stage")
    return path / FOLDER


def model_files(folder: Path) -> list[Path]:
    return sorted(p for p in model_folder(folder).iterdir() if p.is_file())


def _in_memory(folder: Path, files: Files) -> dict | None:
    """CTranslate2's files as the bytes `files` checked (None: let CTranslate2 read the folder itself)."""
    if files is PLAIN:
        return None
    return {p.name: files.read(p) for p in sorted(folder.iterdir()) if p.name != HEAD and files.exists(p)}


class Encoder:
    """`run(inputs) -> logits`: CTranslate2's pooled output through the stored classification head."""

    def __init__(self, path: Path, threads: int = 1, memory_arena: bool = True, files: Files = PLAIN):
        import io

        import ctranslate2

        folder = model_folder(path)
        self.encoder = ctranslate2.Encoder(
            str(folder),
            device="cpu",
            intra_threads=threads,
            inter_threads=1,
            compute_type="default",
            files=_in_memory(folder, files),
        )  # as converted
        self._storage = ctranslate2.StorageView
        with np.load(io.BytesIO(files.read(folder / HEAD)), allow_pickle=False) as head:
            self.weight = head["weight"].astype(np.float32)
            self.bias = head["bias"].astype(np.float32)

    def run(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        lengths = inputs["attention_mask"].sum(axis=1).astype(np.int32)
        ids = np.ascontiguousarray(inputs["input_ids"], dtype=np.int32)
        types = inputs.get("token_type_ids")
        out = self.encoder.forward_batch(
            self._storage.from_array(ids),
            self._storage.from_array(lengths),
            token_type_ids=None if types is None else types.tolist(),
        )
        pooled = np.asarray(out.pooler_output, dtype=np.float32)
        return pooled @ self.weight.T + self.bias


class Generator(TextGenerator):
    """A decoder on CTranslate2: its own loop and cache for generation, full passes for `step`."""

    def __init__(self, folder: Path, threads: int = 1, files: Files = PLAIN):
        import ctranslate2

        from .generation import context_of
        from .text import read_tokenizer

        folder = Path(folder)
        self._ct2 = ctranslate2
        model = model_folder(folder)
        self.generator = ctranslate2.Generator(
            str(model),
            device="cpu",
            intra_threads=threads,
            inter_threads=1,
            compute_type="default",
            files=_in_memory(model, files),
        )  # as converted
        config = files.json(folder / "config.json")
        self.context, self.eos_id = context_of(config, folder / "config.json")
        self._tok = read_tokenizer(folder / "tokenizer.json", files)
        self._tok.no_truncation()
        self._tok.no_padding()

    def _tokens(self, ids: Sequence[int]) -> list[str]:
        return [self._tok.id_to_token(int(i)) for i in ids]

    def _generation(self, prompt_ids: Sequence[int], new_tokens: int, sampling: Sampling):
        if sampling.seed is not None:
            self._ct2.set_random_seed(sampling.seed)
        greedy = sampling.temperature == 0
        return self.generator.generate_tokens(
            self._tokens(prompt_ids),
            max_length=new_tokens,
            sampling_topk=1 if greedy else sampling.top_k,
            sampling_topp=1.0 if greedy else sampling.top_p,
            sampling_temperature=1.0 if greedy else sampling.temperature,
            repetition_penalty=sampling.repetition_penalty,
            end_token=[] if self.eos_id is None else [self._tok.id_to_token(self.eos_id)],
        )

    def token_stream(
        self,
        prompt_ids: Sequence[int],
        max_new_tokens: int,
        sampling: Sampling,
        use_cache: bool = True,
        prompt_lookup=None,
    ) -> Iterator[int]:
        if prompt_lookup is not None:
            raise InputError("CTranslate2 runs its own decoding loop, without prompt lookup: switch prompt lookup off")
        if not use_cache:  # CTranslate2 always caches; the uncached loop re-reads the sequence through `step`
            yield from super().token_stream(prompt_ids, max_new_tokens, sampling, use_cache)
            return
        if max_new_tokens == 0:
            return
        for count, step in enumerate(self._generation(prompt_ids, max_new_tokens, sampling), 1):
            yield int(step.token_id)
            if step.token_id == self.eos_id or count >= max_new_tokens:
                return

    def timed_generation(self, prompt_ids: list[int], new_tokens: int) -> tuple[float, list[float]]:
        """Time to the first token, then between tokens, of exactly `new_tokens` greedy tokens (the harness's
        generation workload). Stamped in CTranslate2's per-token callback, on its decoding thread: its token
        iterator is fed through a queue, and a small model's decoder runs ahead of whoever reads it."""
        clock = time.perf_counter_ns
        stamps: list[int] = []

        def stamp(_step) -> bool:
            stamps.append(clock())
            return False

        started = clock()
        self.generator.generate_batch(
            [self._tokens(prompt_ids)],
            max_length=new_tokens,
            min_length=new_tokens,
            sampling_topk=1,
            beam_size=1,
            end_token=[],
            include_prompt_in_result=False,
            callback=stamp,
        )
        times = [(b - a) / 1e6 for a, b in zip([started, *stamps], stamps)]
        return times[0], times[1:]

    def step(self, ids: np.ndarray, past, last_only: bool = False):
        """Log-probabilities for `ids` after `past` (the token ids so far): one full pass, no cache."""
        sequence = list(past or []) + [int(i) for i in ids[0]]
        if len(sequence) > self.context:
            raise InputError(
                f"the sequence would reach {len(sequence)} tokens but the model's context is "
                f"{self.context}: shorten the prompt or lower max_new_tokens"
            )
        log_probs = np.asarray(self.generator.forward_batch([sequence], return_log_probs=True))
        return log_probs[:, -ids.shape[1] :, :], sequence

    def encode(self, text: str) -> list[int]:
        return self._tok.encode(text).ids

    def decode_ids(self, ids: Sequence[int]) -> str:
        return self._tok.decode(list(ids), skip_special_tokens=False)


def decoder(folder: Path, threads: int = 1, model_file: str | Path | None = None, files: Files = PLAIN) -> Generator:
    return Generator(Path(folder), threads=threads, files=files)
