"""`python -m edgenlp.runtime.check BUNDLE REQUEST.json`: what a bundle answers on this machine, as JSON.

edgenlp runs this on the machine a bundle was built on and on the one it is built for (an emulated
ARM64, say), then compares the two answers (`edgenlp.targets`). It needs only the runtime, which is
all an app machine has, so the check runs the very code and kernels the app will. What it records
is what a comparison needs and nothing about speed: token ids (a tokenizer that differs shows here
first), a classifier's labels and probabilities, a decoder's greedy tokens and its top-1 token at
every position of each text, with the margin to the runner-up (a near tie explains a divergence).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from collections.abc import Sequence
from importlib import metadata

import numpy as np

PROMPT_TOKENS = 24
"""Tokens of each greedy prompt: the start of a text (the harness's comparison prompts are as long)."""
NEW_TOKENS = 16
TEXT_TOKENS = 128
"""Tokens of each text scored position by position for top-1 agreement."""

AT_HWCAP, AT_HWCAP2 = 16, 26
ARM_HWCAP = {
    "asimddp": (AT_HWCAP, 1 << 20),
    "sve": (AT_HWCAP, 1 << 22),
    "i8mm": (AT_HWCAP2, 1 << 13),
    "sme": (AT_HWCAP2, 1 << 23),
    "sme2": (AT_HWCAP2, 1 << 37),
}
"""Linux's aarch64 hwcap bits: the ones onnxruntime's INT8 kernels choose by (udot/sdot, SVE, smmla, SME)."""


def environment() -> dict:
    """The machine and libraries the answers come from."""
    found = {
        "machine": platform.machine(),
        "cpu": _cpu_model(),
        "python": platform.python_version(),
        **{name: _version(name) for name in ("onnxruntime", "tokenizers", "numpy", "edgenlp-runtime", "edgenlp")},
    }
    if platform.machine() in ("aarch64", "arm64") and sys.platform.startswith("linux"):
        found["cpu_features"] = _arm_features()
    return found


def _cpu_model() -> str:
    """The CPU as /proc/cpuinfo names it (x86: its model name; ARM: implementer and part numbers)."""
    fields: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                fields.setdefault(key.strip().lower(), value.strip())
    except OSError:
        return platform.processor() or "unknown"
    if "model name" in fields:
        return fields["model name"]
    if "cpu part" in fields:
        return f"ARM implementer {fields.get('cpu implementer', '?')} part {fields['cpu part']}"
    return platform.processor() or "unknown"


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _arm_features() -> list[str]:
    import ctypes

    getauxval = ctypes.CDLL(None).getauxval
    getauxval.restype = ctypes.c_ulong
    return sorted(name for name, (key, bit) in ARM_HWCAP.items() if getauxval(key) & bit)


def probe(bundle, texts: Sequence[str], prompt_tokens: int = PROMPT_TOKENS, new_tokens: int = NEW_TOKENS) -> dict:
    """The bundle's answers on `texts`: by label for a classifier, by token for a decoder."""
    found = {"environment": environment(), "task": bundle.task, "texts": len(texts)}
    if bundle.task == "text-classification":
        return {**found, **_classify(bundle.model, texts)}
    if bundle.task == "feature-extraction":  # one text a batch, as the benchmark measured
        return {**found, "embeddings": [bundle.model.embed([t], batch_size=1)[0].round(7).tolist() for t in texts]}
    if bundle.task == "question-answering":  # one question a batch, as the benchmark measured
        prepared = bundle.model.prepare(list(texts))
        return {
            **found,
            "token_ids": [list(w.ids) for q in prepared for w in q.windows],
            "answers": bundle.model.answer(prepared, batch_size=1),
        }
    if bundle.task == "token-classification":
        prepared = bundle.model.prepare(list(texts))
        return {
            **found,
            "token_ids": [list(p.ids) for p in prepared],
            "entities": [bundle.model.entities([t], batch_size=1)[0] for t in texts],
        }
    return {**found, **_generate(bundle.model, texts, prompt_tokens, new_tokens)}


def _classify(model, texts: Sequence[str]) -> dict:
    encodings = model.prepare(list(texts))
    # one text a batch: dynamic INT8 scales activations per batch, and the benchmark measured batch 1
    answers = model.answer(encodings, batch_size=1)
    names = model.labels or [str(i) for i in range(len(answers[0]["probabilities"]))]
    return {
        "token_ids": [list(e.ids) for e in encodings],
        "labels": [a["label"] for a in answers],
        "label_names": names,
        "probabilities": [[round(a["probabilities"][n], 6) for n in names] for a in answers],
    }


def _top2_margin(row: np.ndarray) -> float:
    best, second = np.partition(row.astype(np.float64), -2)[-2:][::-1]
    return float(best - second)


def _generate(model, texts: Sequence[str], prompt_tokens: int, new_tokens: int) -> dict:
    from .generation import decode, generation_step

    token_ids, greedy, greedy_margins, top1, top1_margins = [], [], [], [], []
    plain_step = generation_step(model)
    for text in texts:
        ids = model.encode(text)[: min(TEXT_TOKENS, model.context)]
        token_ids.append(ids)
        margins: list[float] = []

        def step(chunk, past, margins=margins):
            logits, past = plain_step(chunk, past)
            margins.append(_top2_margin(logits[0, -1]))
            return logits, past

        prompt = ids[: min(prompt_tokens, len(ids))]
        room = max(0, min(new_tokens, model.context - len(prompt)))
        greedy.append(list(decode(step, prompt, room, eos_id=model.eos_id)) if prompt else [])
        greedy_margins.append([round(m, 5) for m in margins[: len(greedy[-1])]])
        if len(ids) >= 2:
            logits = model.step(np.asarray([ids], dtype=np.int64), None)[0][0]
            top1.append(logits.argmax(-1).tolist())
            top1_margins.append([round(_top2_margin(r), 5) for r in logits])
        else:
            top1.append([])
            top1_margins.append([])
    return {
        "token_ids": token_ids,
        "prompt_tokens": prompt_tokens,
        "greedy": greedy,
        "greedy_margins": greedy_margins,
        "top1": top1,
        "top1_margins": top1_margins,
    }


def main(argv: list[str] | None = None) -> int:
    from .bundle import load
    from .errors import EdgeNLPError

    parser = argparse.ArgumentParser(prog="python -m edgenlp.runtime.check", description=__doc__.splitlines()[0])
    parser.add_argument("bundle", help="bundle folder or .zip")
    parser.add_argument(
        "request", help='JSON file: {"texts": [...], "prompt_tokens": 24, "new_tokens": 16, "model_form": "onnx"}'
    )
    parser.add_argument("--out", help="write the answers here (default: standard output)")
    args = parser.parse_args(argv)
    try:
        with open(args.request, encoding="utf-8") as f:
            request = json.load(f)
        texts = request.get("texts") if isinstance(request, dict) else None
        if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
            raise EdgeNLPError(f'{args.request} holds no list of texts: write {{"texts": ["...", ...]}}')
        bundle = load(args.bundle, model_form=str(request.get("model_form", "onnx")))
        found = probe(
            bundle,
            texts,
            int(request.get("prompt_tokens", PROMPT_TOKENS)),
            int(request.get("new_tokens", NEW_TOKENS)),
        )
    except (EdgeNLPError, OSError, ValueError) as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2
    text = json.dumps(found)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            f.write(text)
    else:
        sys.stdout.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
