"""Text generation with a KV cache: onnxruntime, tokenizers and numpy, nothing else.

`CausalLM` loads a decoder exported with `past_key_values` inputs and `present` outputs (Optimum's
layout: one graph serves the prompt, with an empty cache, and every decode step). The decoding loop
(`decode`) only sees a `step(ids, past) -> (logits, past)` function, so the benchmark harness times
PyTorch, onnxruntime and third-party runners with the very same loop.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import BundleError, InputError
from .files import PLAIN, Files

Step = Callable[[np.ndarray, object], tuple[np.ndarray, object]]
"""(token ids of shape (1, n), past or None) -> (logits (1, n, vocab), the new past). A loop that only
reads the last position's logits takes `generation_step(model)`, which may return (1, 1, vocab)."""

LOGITS_TO_KEEP = "logits_to_keep"
"""The exported decoder's optional input (see `stages/export.py`): 1 computes the LM head for the
last position only, 0 (its default) for every position."""

PREFILL_GRAPH = "prefill.onnx"
"""A second graph beside `model.onnx` that reads prompts (stage `split-prefill`): same inputs, outputs and
cache as the model, with kernels suited to many positions at once."""


CONTEXT_KEYS = ("n_positions", "max_position_embeddings", "n_ctx", "max_sequence_length", "seq_length")
"""Where a decoder's config states its context, by family (GPT-2, most others, older GPT-2 files, BLOOM, ...)."""


def context_of(config: dict, where: Path | str = "config.json") -> tuple[int, int | None]:
    """(context in tokens, end-of-sequence id) of a decoder's config, or a one-line error saying what to set."""
    context = next((config[k] for k in CONTEXT_KEYS if config.get(k) is not None), None)
    if context is None:
        context = 1024 if config.get("model_type") in (None, "gpt2") else None
    if isinstance(context, bool) or not isinstance(context, int) or context < 1:
        raise BundleError(
            f"{where} states no context length ({', '.join(CONTEXT_KEYS[:2])}, ...): set "
            "max_position_embeddings to the longest sequence the model was trained on"
        )
    eos = config.get("eos_token_id")
    if isinstance(eos, list):  # some configs list several end tokens; the first ends a generation here
        eos = eos[0] if eos else None
    if eos is not None and (isinstance(eos, bool) or not isinstance(eos, int)):
        raise BundleError(f"{where}: eos_token_id {eos!r} is not a token id")
    return context, eos


def generation_step(model) -> Step:
    """`model.step` asked for the last position's logits only, where the model can skip the others
    (its `step` takes `last_only`); otherwise `model.step` itself."""
    step = model.step
    try:
        accepts = "last_only" in inspect.signature(step).parameters
    except (TypeError, ValueError):
        accepts = False
    return functools.partial(step, last_only=True) if accepts else step


class Cancelled(Exception):
    """A generation stopped because whoever asked for it went away."""


@dataclass(frozen=True)
class Sampling:
    """How the next token is picked. temperature 0 is greedy (then top_k, top_p and seed do nothing)."""

    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    repetition_penalty: float = 1.0
    seed: int | None = None

    def __post_init__(self):
        if self.temperature < 0:
            raise InputError(f"temperature {self.temperature} is negative: use 0 (greedy) or a positive value")
        if self.top_k < 0:
            raise InputError(f"top_k {self.top_k} is negative: use 0 (off) or a positive count")
        if not 0 < self.top_p <= 1:
            raise InputError(f"top_p {self.top_p} is outside (0, 1]: use e.g. 0.9, or 1 to switch it off")
        if self.repetition_penalty <= 0:
            raise InputError(f"repetition_penalty {self.repetition_penalty} must be positive (1 switches it off)")
        for name in ("temperature", "top_p", "repetition_penalty"):
            if not np.isfinite(getattr(self, name)):
                raise InputError(f"{name} {getattr(self, name)} is not a finite number: give a plain number")
        if self.seed is not None and (
            isinstance(self.seed, bool) or not isinstance(self.seed, int) or not 0 <= self.seed < 2**64
        ):
            raise InputError(f"seed {self.seed!r} is not an integer in [0, 2^64): give a non-negative whole number")


def pick_token(logits: np.ndarray, seen: Sequence[int], sampling: Sampling, rng: np.random.Generator) -> int:
    """The next token from one row of logits (HF semantics for the repetition penalty)."""
    scores = logits.astype(np.float64, copy=True)
    if sampling.repetition_penalty != 1.0 and len(seen):
        idx = np.unique(np.asarray(seen))
        picked = scores[idx]
        with np.errstate(over="ignore"):  # an extreme penalty overflows; the largest finite score stands in
            penalised = np.where(picked > 0, picked / sampling.repetition_penalty, picked * sampling.repetition_penalty)
        limit = np.finfo(np.float64).max
        scores[idx] = np.nan_to_num(penalised, posinf=limit, neginf=-limit)  # inf - inf would be NaN below
    if sampling.temperature == 0:
        return int(scores.argmax())
    # shifted before scaling: the best score becomes 0 whatever the temperature, so a tiny one gives
    # 0 and -inf (greedy), never inf - inf (NaN probabilities)
    with np.errstate(over="ignore"):  # a tiny temperature sends every other score to -inf, as meant
        scores = (scores - scores.max()) / sampling.temperature
    if sampling.top_k and sampling.top_k < scores.size:
        kth = np.partition(scores, -sampling.top_k)[-sampling.top_k]
        scores[scores < kth] = -np.inf
    probs = np.exp(scores - scores.max())
    probs /= probs.sum()
    if sampling.top_p < 1.0:
        order = np.argsort(-probs)
        cumulative = np.cumsum(probs[order])
        keep = order[: int(np.searchsorted(cumulative, sampling.top_p) + 1)]
        mask = np.zeros_like(probs)
        mask[keep] = probs[keep]
        probs = mask / mask.sum()
    return int(rng.choice(probs.size, p=probs))


def decode(
    step: Step,
    prompt_ids: Sequence[int],
    max_new_tokens: int,
    sampling: Sampling = Sampling(),
    eos_id: int | None = None,
    use_cache: bool = True,
) -> Iterator[int]:
    """Yield new token ids one at a time. Without the cache, every step re-reads the whole sequence."""
    rng = np.random.default_rng(sampling.seed)
    ids = list(prompt_ids)
    logits, past = step(np.asarray([ids], dtype=np.int64), None)
    for _ in range(max_new_tokens):
        token = pick_token(logits[0, -1], ids, sampling, rng)
        yield token
        ids.append(token)
        if token == eos_id:
            return
        if use_cache:
            logits, past = step(np.asarray([[token]], dtype=np.int64), past)
        else:
            logits, _ = step(np.asarray([ids], dtype=np.int64), None)


@dataclass(frozen=True)
class PromptLookup:
    """Greedy decoding that drafts the next tokens from the text so far and checks them all in one step.

    When the last `ngram` tokens (down to 1) occurred earlier, the up to `draft` tokens that followed
    that earlier occurrence are fed with the current token in one forward pass; every draft token the
    model would have picked itself is kept, plus the model's own pick after the last kept one. No
    draft model: it pays where the output repeats the input (extraction, editing, code, quoting).
    Each kept token is the one plain greedy decoding picks from the same logits; a graph whose rows
    depend on each other (dynamic INT8 quantises activations per tensor) can differ in a near tie.
    """

    draft: int = 10
    ngram: int = 3

    def __post_init__(self):
        if isinstance(self.draft, bool) or not isinstance(self.draft, int) or self.draft < 1:
            raise InputError(f"prompt lookup draft {self.draft!r} must be a positive number of tokens, e.g. 10")
        if isinstance(self.ngram, bool) or not isinstance(self.ngram, int) or self.ngram < 1:
            raise InputError(f"prompt lookup n-gram {self.ngram!r} must be a positive number of tokens, e.g. 3")

    @classmethod
    def of(cls, setting) -> PromptLookup | None:
        """A setting as callers give it: None or 0 (off), a number of draft tokens, or a PromptLookup."""
        if setting is None or isinstance(setting, cls):
            return setting
        if isinstance(setting, bool) or not isinstance(setting, int) or setting < 0:
            raise InputError(f"prompt_lookup {setting!r} is not a number of draft tokens: give e.g. 10, or 0 (off)")
        return cls(draft=setting) if setting else None

    def propose(self, ids: Sequence[int], room: int) -> list[int]:
        """The tokens that followed the latest earlier occurrence of the longest trailing n-gram (at most `room`)."""
        if room < 1 or len(ids) < 2:
            return []
        seq = np.asarray(ids, dtype=np.int64)
        for n in range(min(self.ngram, len(seq) - 1), 0, -1):
            windows = np.lib.stride_tricks.sliding_window_view(seq[:-1], n)  # each earlier n-gram, not the last
            hits = np.flatnonzero((windows == seq[-n:]).all(axis=1))
            if hits.size:
                start = int(hits[-1]) + n
                return seq[start : start + min(self.draft, room)].tolist()
        return []


Trim = Callable[[object, int], object]
"""(past, length) -> the past of the first `length` positions only."""


def decode_prompt_lookup(
    step: Step,
    trim: Trim,
    prompt_ids: Sequence[int],
    max_new_tokens: int,
    lookup: PromptLookup,
    sampling: Sampling = Sampling(),
    eos_id: int | None = None,
    stats: dict | None = None,
) -> Iterator[int]:
    """`decode` for a deterministic pick (temperature 0), drafting with `lookup`; `step` must return every
    position's logits. The cache always holds every token but the last one yielded, as in `decode`.
    `stats`, if given, counts `steps`, `drafted` and `accepted` tokens."""
    if sampling.temperature != 0:
        raise InputError("prompt lookup checks greedy picks only: use temperature 0, or switch prompt lookup off")
    counts = stats if stats is not None else {}
    counts.update(steps=1, drafted=0, accepted=0)
    if max_new_tokens < 1:
        return
    rng = np.random.default_rng(sampling.seed)
    ids = list(prompt_ids)
    logits, past = step(np.asarray([ids], dtype=np.int64), None)
    token = pick_token(logits[0, -1], ids, sampling, rng)
    produced = 0
    while True:
        yield token
        ids.append(token)
        produced += 1
        if token == eos_id or produced >= max_new_tokens:
            return
        cached = len(ids) - 1
        draft = lookup.propose(ids, max_new_tokens - produced - 1)
        logits, past = step(np.asarray([[token, *draft]], dtype=np.int64), past)
        counts["steps"] += 1
        counts["drafted"] += len(draft)
        kept: list[int] = []
        for position, drafted in enumerate(draft):
            picked = pick_token(logits[0, position], [*ids, *kept], sampling, rng)
            if picked != drafted:
                break
            kept.append(picked)
        counts["accepted"] += len(kept)
        if len(kept) < len(draft):  # positions after the first miss were computed from a wrong token
            past = trim(past, cached + 1 + len(kept))
        for kept_token in kept:
            yield kept_token
            ids.append(kept_token)
            produced += 1
            if kept_token == eos_id:
                return
        token = pick_token(logits[0, len(kept)], ids, sampling, rng)


@dataclass
class Generation:
    text: str
    token_ids: list[int]
    prompt_tokens: int
    stopped_by: str
    """`max_new_tokens`, `eos` or `stop:<the stop sequence>`."""
    token_texts: list[str] = field(default_factory=list)


class TextGenerator:
    """Text in, text out, for any decoder that provides `step`, `encode`, `decode_ids`, `context`, `eos_id`."""

    context: int
    eos_id: int | None

    def step(self, ids: np.ndarray, past, last_only: bool = False):  # pragma: no cover - each model defines it
        raise NotImplementedError

    def encode(self, text: str) -> list[int]:  # pragma: no cover
        raise NotImplementedError

    def decode_ids(self, ids: Sequence[int]) -> str:  # pragma: no cover
        raise NotImplementedError

    trim_past: Trim | None = None
    """(past, length) -> that past cut to its first `length` positions: a model that has it can decode
    with prompt lookup."""

    def token_stream(
        self,
        prompt_ids: Sequence[int],
        max_new_tokens: int,
        sampling: Sampling,
        use_cache: bool = True,
        prompt_lookup: PromptLookup | None = None,
    ) -> Iterator[int]:
        """New token ids, one at a time: edgenlp's loop over `step`, unless an engine decodes on its own."""
        if prompt_lookup is None:
            return decode(generation_step(self), prompt_ids, max_new_tokens, sampling, self.eos_id, use_cache)
        if self.trim_past is None or not use_cache:
            raise InputError(
                f"prompt lookup needs a KV cache it can cut back, which {type(self).__name__} "
                f"{'has not' if use_cache else 'without the cache cannot offer'}: switch prompt lookup off"
            )
        return decode_prompt_lookup(
            self.step, self.trim_past, prompt_ids, max_new_tokens, prompt_lookup, sampling, self.eos_id
        )

    def check_request(self, prompt_ids: Sequence[int], max_new_tokens: int) -> None:
        if not prompt_ids:
            raise InputError("the prompt is empty: give at least one word to continue")
        if max_new_tokens < 0:
            raise InputError(f"max_new_tokens {max_new_tokens} is negative: ask for 0 or more tokens")
        if len(prompt_ids) >= self.context:
            raise InputError(
                f"the prompt has {len(prompt_ids)} tokens but the model's context is {self.context}: shorten the prompt"
            )
        if len(prompt_ids) + max_new_tokens > self.context:
            raise InputError(
                f"prompt ({len(prompt_ids)} tokens) + max_new_tokens ({max_new_tokens}) exceeds the "
                f"context of {self.context} tokens: lower max_new_tokens to at most "
                f"{self.context - len(prompt_ids)}"
            )

    def stream(
        self,
        prompt: str,
        max_new_tokens: int = 64,
        sampling: Sampling = Sampling(),
        stop: Sequence[str] = (),
        use_cache: bool = True,
        prompt_lookup: PromptLookup | None = None,
    ) -> Iterator[str]:
        """Yield the continuation as text pieces, as soon as each is complete (whole UTF-8 characters)."""
        for piece in self.steps(prompt, max_new_tokens, sampling, stop, use_cache, prompt_lookup):
            if piece[1]:
                yield piece[1]

    def generate(
        self,
        prompt: str,
        max_new_tokens: int = 64,
        sampling: Sampling = Sampling(),
        stop: Sequence[str] = (),
        use_cache: bool = True,
        cancelled: Callable[[], bool] | None = None,
        prompt_lookup: PromptLookup | None = None,
    ) -> Generation:
        """The whole continuation; `cancelled()` is asked before each token (a server whose client left)."""
        ids: list[int] = []
        texts: list[str] = []
        stopped_by = "max_new_tokens"
        for token, text, reason in self.steps(prompt, max_new_tokens, sampling, stop, use_cache, prompt_lookup):
            if cancelled is not None and cancelled():
                raise Cancelled("the generation was cancelled")
            if token is not None:
                ids.append(token)
            texts.append(text)
            stopped_by = reason or stopped_by
        return Generation("".join(texts), ids, len(self.encode(prompt)), stopped_by, texts)

    def steps(
        self,
        prompt: str,
        max_new_tokens: int = 64,
        sampling: Sampling = Sampling(),
        stop: Sequence[str] = (),
        use_cache: bool = True,
        prompt_lookup: PromptLookup | None = None,
    ):
        """(token, new text, stop reason or None) per step; text is held back until its characters are whole."""
        prompt_ids = self.encode(prompt) if prompt and prompt.strip() else []
        self.check_request(prompt_ids, max_new_tokens)
        generated: list[int] = []
        emitted = ""
        tokens = self.token_stream(prompt_ids, max_new_tokens, sampling, use_cache, prompt_lookup)
        for token in tokens:
            generated.append(token)
            if token == self.eos_id:
                yield token, "", "eos"
                return
            text = self.decode_ids(generated)
            hit = next((s for s in stop if s and s in text), None)
            if hit:
                cut = text[: text.index(hit)]
                yield token, cut[len(emitted) :], f"stop:{hit}"
                return
            held = max((len(s) - 1 for s in stop if s), default=0)  # a stop sequence may be half written
            ready = text if text.endswith("\ufffd") is False else text.rstrip("\ufffd")
            ready = ready[: max(len(emitted), len(ready) - held)]
            yield token, ready[len(emitted) :], None
            emitted = ready
        text = self.decode_ids(generated)
        if len(text) > len(emitted):
            yield None, text[len(emitted) :], None


IN_PLACE_MARK = "seqlens_k"
"""An input of graphs whose attention keeps the cache in place (stage `export-fused`): the cache inputs
are buffers of the whole context, written at the position after `seqlens_k`."""


@dataclass
class InPlaceCache:
    """A decoder's KV cache kept where the graph writes it: one buffer of the whole context per cache
    input, and how many positions hold tokens. A step that takes it extends it; it is not a value."""

    buffers: list
    length: int = 0
    # one IO binding per graph that steps this cache, made on its first step and reused: the buffers
    # are bound once, not again at every token
    bindings: dict = field(default_factory=dict)


class CausalLM(TextGenerator):
    """An exported decoder (GPT-2 family, Optimum's KV-cache layout) with its tokenizer, from one folder:
    the ONNX graph on onnxruntime, or its OpenVINO IR (`engine="openvino"`). A folder with a
    `prefill.onnx` reads each prompt of a generation with that graph and decodes with the model's."""

    def __init__(
        self,
        folder: str | Path,
        threads: int = 1,
        model_file: str | Path | None = None,
        engine: str = "onnx",
        files: Files = PLAIN,
    ):
        from .engines import open_graph
        from .text import read_tokenizer

        folder = Path(folder)
        self.folder = folder
        # any engine that runs the exported graph by its input and output names (onnxruntime, OpenVINO)
        self.model = open_graph(engine, model_file or folder, threads=threads, files=files)
        config = files.json(folder / "config.json", default={})
        self.context, self.eos_id = context_of(config, folder / "config.json")
        self.past_names = [n for n in self.model.input_names if n.startswith("past_key_values.")]
        if not self.past_names:
            raise InputError(
                f"{folder} is not a decoder with a KV cache (no past_key_values inputs): export it for text-generation"
            )
        self.present_names = [n for n in self.model.output_names if n.startswith("present")]
        self.in_place = IN_PLACE_MARK in self.model.input_names
        if self.in_place:  # only onnxruntime runs these graphs: the stage openvino refuses to convert them
            # each cache input's output: past_key_values.N.key is written back as present.N.key
            self.present_names = [n.replace("past_key_values.", "present.", 1) for n in self.past_names]
        self._keeps_logits = LOGITS_TO_KEEP in [
            *self.model.input_names,
            *getattr(self.model, "optional_input_names", ()),
        ]
        self.prefill = None
        prefill_file = (Path(model_file).parent if model_file else folder) / PREFILL_GRAPH
        if engine == "onnx" and files.exists(prefill_file):
            self.prefill = open_graph(engine, prefill_file, threads=threads, files=files)
            if self.prefill.input_specs() != self.model.input_specs():
                raise InputError(
                    f"{prefill_file} takes other inputs than {folder}'s model: rebuild the variant "
                    "(stage split-prefill) from one export"
                )
        specs = self.model.input_specs()
        # (heads, head size) of each cache input: a pruned model keeps different head counts per block
        self._past_shapes = [(int(specs[n][0][1]), int(specs[n][0][3])) for n in self.past_names]
        # float32, float16, or int8 for a quantised cache (`quantize-kv`)
        self._past_dtype = np.dtype(specs[self.past_names[0]][1]).type
        self._tok = read_tokenizer(folder / "tokenizer.json", files)
        self._tok.no_padding()
        self._tok.no_truncation()

    # -- the model -----------------------------------------------------------------------------
    def feed(
        self, ids: np.ndarray, past: list[np.ndarray] | None = None, last_only: bool = False
    ) -> dict[str, np.ndarray]:
        """The graph's inputs for `ids` (batch, n) after the cached `past` (None: an empty cache)."""
        batch, n = ids.shape
        if past is None:
            past = [np.zeros((batch, heads, 0, size), dtype=self._past_dtype) for heads, size in self._past_shapes]
        if isinstance(past, InPlaceCache):
            return self._feed_in_place(ids, past.length, last_only)
        past_len = past[0].shape[2]
        if past_len + n > self.context:
            raise InputError(
                f"the sequence would reach {past_len + n} tokens but the model's context is "
                f"{self.context}: shorten the prompt or lower max_new_tokens"
            )
        feed = {
            "input_ids": ids,
            "attention_mask": np.ones((batch, past_len + n), dtype=np.int64),
            **dict(zip(self.past_names, past)),
        }
        if "position_ids" in self.model.input_names:
            feed["position_ids"] = np.arange(past_len, past_len + n, dtype=np.int64)[None, :].repeat(batch, 0)
        if self._keeps_logits:
            feed[LOGITS_TO_KEEP] = np.asarray([1 if last_only else 0], dtype=np.int64)
        if self.in_place:  # a batch of prompts with no cache: empty buffers, the graph allocates `present`
            feed |= self._feed_in_place(ids, 0, last_only)
            feed.pop("attention_mask")
        return feed

    def _feed_in_place(self, ids: np.ndarray, past_len: int, last_only: bool) -> dict[str, np.ndarray]:
        batch, n = ids.shape
        total = past_len + n
        if total > self.context:
            raise InputError(
                f"the sequence would reach {total} tokens but the model's context is "
                f"{self.context}: shorten the prompt or lower max_new_tokens"
            )
        feed = {
            "input_ids": ids,
            "position_ids": np.arange(past_len, total, dtype=np.int64)[None, :].repeat(batch, 0),
            "seqlens_k": np.full(batch, total - 1, dtype=np.int32),
            "total_sequence_length": np.asarray(total, dtype=np.int32),
        }
        if self._keeps_logits:
            feed[LOGITS_TO_KEEP] = np.asarray([1 if last_only else 0], dtype=np.int64)
        return feed

    def new_cache(self) -> InPlaceCache:
        """Zeroed buffers of the whole context (the pages are only touched as positions are written)."""
        return InPlaceCache(
            [self.model.buffer((1, heads, self.context, size), self._past_dtype) for heads, size in self._past_shapes]
        )

    def _step_in_place(self, graph, ids: np.ndarray, past: InPlaceCache | None, last_only: bool):
        if ids.shape[0] != 1:
            raise InputError(
                f"a decoder with its cache in place steps one sequence at a time, not {ids.shape[0]}: "
                "pass one prompt at a time"
            )
        past = past if past is not None else self.new_cache()
        feed = self._feed_in_place(ids, past.length, last_only)
        binding = past.bindings.get(id(graph))
        if binding is None:
            bound = {}
            for past_name, present_name, buffer in zip(self.past_names, self.present_names, past.buffers):
                bound[past_name] = bound[present_name] = buffer
            binding = past.bindings[id(graph)] = graph.bind(["logits"], bound)
        logits = graph.run_bound(binding, feed)[0]
        past.length += ids.shape[1]
        return logits, past

    def step(
        self, ids: np.ndarray, past: list[np.ndarray] | None, last_only: bool = False
    ) -> tuple[np.ndarray, list[np.ndarray]]:
        """One forward pass: logits for `ids` given the cache of everything before them (with `last_only`,
        at least the last position's; a graph exported with `logits_to_keep` computes only that one)."""
        # a generation's prompt (the last position only, no cache yet) goes through the prefill graph
        graph = self.prefill if (self.prefill is not None and last_only and past is None) else self.model
        if self.in_place:
            return self._step_in_place(graph, ids, past, last_only)
        outputs = graph.run_outputs(["logits", *self.present_names], self.feed(ids, past, last_only))
        return outputs[0], outputs[1:]

    def trim_past(self, past, length: int):  # type: ignore[override]
        if isinstance(past, InPlaceCache):  # the positions past `length` are written over by the next step
            past.length = min(past.length, length)
            return past
        return [np.ascontiguousarray(p[:, :, :length]) for p in past]

    def encode(self, text: str) -> list[int]:
        return self._tok.encode(text).ids

    def decode_ids(self, ids: Sequence[int]) -> str:
        return self._tok.decode(list(ids), skip_special_tokens=False)
