"""Plain-text corpora: the text a decoder trains on, the held-out streams it is scored on, and the
tuning and calibration text the searches and static quantisation read.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .spec import CALIBRATION_WINDOW, NAME, SHOWN_CONTINUATIONS


@dataclass
class GenerationEvalSet:
    streams: dict[str, str]
    """Held-out texts by name (the corpus test split, WikiText-2 test): each scored as one stream."""
    prompts: list[str]
    name: str = "eval"
    notes: list[str] = field(default_factory=list)
    task: str = NAME


def load_data(spec):
    from ... import corpus

    return corpus.load(spec)


def claims_data(spec) -> bool:
    """Never: a decoder is a language model by its config, not by its data."""
    return False


def fingerprint(spec) -> str:
    from ... import corpus

    return corpus.fingerprint(spec)


def validation_texts(corpus, n: int) -> list[str]:
    return corpus.validation[:n]


def eval_set(corpus, model_labels: list[str] | None = None) -> GenerationEvalSet:
    """The corpus test split and, where the kit has it, WikiText-2 test; prompts from the test split."""
    from ... import corpus as corpus_module
    from ...errors import EdgeNLPError

    streams = {f"{corpus.name}/test": "\n\n".join(corpus.test)}
    notes = list(corpus.notes)
    if corpus.name != corpus_module.WIKITEXT:
        try:
            streams["wikitext2/test"] = "\n\n".join(corpus_module.load(corpus_module.WIKITEXT).test)
        except EdgeNLPError as exc:
            notes.append(f"WikiText-2 test not scored: {exc}")
    prompts = [doc for doc in corpus.test if len(doc.split()) >= 8]
    return GenerationEvalSet(streams, prompts, name=f"{corpus.name}/test", notes=notes)


def payload(eval_set: GenerationEvalSet, settings) -> dict:
    return {
        "task": NAME,
        "name": eval_set.name,
        "streams": eval_set.streams,
        "notes": eval_set.notes,
        "prompts": eval_set.prompts[: max(settings.eval_prompts, SHOWN_CONTINUATIONS)],
        "max_eval_tokens": settings.max_eval_tokens,
        "continuation_tokens": settings.continuation_tokens,
    }


def tuning_set(
    corpus, model_labels=None, limit: int | None = None, seed: int = 0, seen: list[dict] = (), minimum: int = 0
) -> str:
    """The validation text carved from the training corpus (the search never reads the test split).
    Training stages pick checkpoints on its first windows, so `tuning_quality` scores its end."""
    return "\n\n".join(corpus.validation)


def calibration_batches(corpus, model_dir, samples: int, batch_size: int, seed: int = 0):
    """`samples` windows of training text as prompt feeds (empty KV cache), streamed batch by batch."""
    from ...quantization.calibration import check_sample_count
    from ...runtime.generation import CausalLM

    model = CausalLM(model_dir)
    window = min(CALIBRATION_WINDOW, model.context)
    ids: list[int] = []
    for doc in corpus.train:
        ids.extend(model.encode(doc) + ([model.eos_id] if model.eos_id is not None else []))
        if len(ids) >= samples * window:
            break
    windows = [ids[i : i + window] for i in range(0, len(ids) - window + 1, window)][:samples]
    check_sample_count(len(windows), samples, f"the training text of {corpus.name} ({window}-token windows)")

    def stream():
        for start in range(0, len(windows), batch_size):
            yield model.feed(np.asarray(windows[start : start + batch_size], dtype=np.int64))

    return stream()
