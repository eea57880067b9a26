"""`python -m edgenlp.runtime BUNDLE [TEXT ...]`: answers as JSON lines, from arguments or stdin lines.

The same command as `edgenlp run`, for an app machine that installed only the runtime.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable
from typing import TextIO


def answers(
    bundle, texts: list[str], batch_size: int = 32, truncate: bool = True, max_new_tokens: int | None = None
) -> Iterable[dict]:
    """One JSON-ready answer per text: its label and probabilities, its vector, its entities, or its continuation."""
    if bundle.task == "text-classification":
        for text, answer in zip(texts, bundle.classify(texts, batch_size=batch_size, truncate=truncate)):
            yield {"text": text, **answer}
    elif bundle.task == "feature-extraction":
        vectors = bundle.embed(texts, batch_size=batch_size, truncate=truncate)
        for text, vector in zip(texts, vectors):
            yield {"text": text, "embedding": [round(float(x), 7) for x in vector]}
    elif bundle.task == "question-answering":  # each text: {"question": ..., "context": ...} as JSON
        questions = [question_of(text) for text in texts]
        for question, answer in zip(questions, bundle.answers(questions, batch_size=batch_size)):
            yield {**question, **answer}
    elif bundle.task == "token-classification":
        for text, entities in zip(texts, bundle.entities(texts, batch_size=batch_size, truncate=truncate)):
            yield {"text": text, "entities": entities}
    else:
        for prompt in texts:
            done = bundle.generate(prompt, max_new_tokens=max_new_tokens)
            yield {
                "prompt": prompt,
                "generated_text": done.text,
                "new_tokens": len(done.token_ids),
                "stopped_by": done.stopped_by,
            }


def question_of(text: str) -> dict:
    """A question-answering input given as a JSON object with `question` and `context`."""
    from .errors import InputError

    try:
        found = json.loads(text)
    except ValueError:
        found = None
    if not isinstance(found, dict) or not {"question", "context"} <= set(found):
        raise InputError(
            'a question-answering bundle reads {"question": ..., "context": ...} as JSON, one per argument or line'
        )
    return {"question": found["question"], "context": found["context"]}


def read_texts(arguments: list[str], stdin: TextIO) -> list[str]:
    if arguments:
        return arguments
    return [line.rstrip("\n") for line in stdin if line.strip()]


def run(
    bundle_path: str,
    texts: list[str],
    out: TextIO,
    err: TextIO,
    verify: bool = True,
    threads: int = 1,
    batch_size: int = 32,
    truncate: bool = True,
    max_new_tokens: int | None = None,
) -> int:
    from .bundle import load

    bundle = load(bundle_path, verify_hashes=verify, threads=threads)
    results = list(answers(bundle, texts, batch_size, truncate, max_new_tokens))
    cut = [i for i, r in enumerate(results) if r.get("truncated")]
    if cut:
        err.write(
            f"note: {len(cut)} text(s) (first: line {cut[0] + 1}) were longer than the model's maximum of "
            f"{bundle.manifest.get('max_length')} tokens and were cut there (--no-truncate refuses them)\n"
        )
    for r in results:
        out.write(json.dumps(r, ensure_ascii=False) + "\n")
    return 0


def main(argv: list[str] | None = None) -> int:
    from .errors import EdgeNLPError

    parser = argparse.ArgumentParser(prog="python -m edgenlp.runtime", description=__doc__.splitlines()[0])
    parser.add_argument("bundle", help="bundle folder or .zip")
    parser.add_argument("texts", nargs="*", help="texts (default: one per line on stdin)")
    parser.add_argument("--no-verify", action="store_true", help="skip the sha256 check (trusted storage only)")
    parser.add_argument("--no-truncate", action="store_true", help="refuse texts longer than the model's maximum")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-new-tokens", type=int, default=None, help="text-generation bundles")
    args = parser.parse_args(argv)
    try:
        return run(
            args.bundle,
            read_texts(args.texts, sys.stdin),
            sys.stdout,
            sys.stderr,
            not args.no_verify,
            args.threads,
            args.batch_size,
            not args.no_truncate,
            args.max_new_tokens,
        )
    except EdgeNLPError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2


if __name__ == "__main__":
    sys.exit(main())
