"""Is a new variant faithful to its parent? Judged on the questions as the reader sees them (question and
context as a pair, cut into windows): FP32 must give the same start and end logits within tolerance on
every real token; quantised, the same answer span, mostly.

A window without the answer has an almost flat start distribution, so whether its single most likely
token survives INT8 says little; the span the reader returns across windows is what a user sees."""

from __future__ import annotations

import json

import numpy as np


def check_against_parent(parent, child, texts: list[str], settings) -> dict:
    from ... import validate
    from ...runtime.answers import best_span
    from .session import open_answerer

    questions = [json.loads(line) for line in texts]
    theirs, mine = open_answerer(parent.path, parent.format, 2), open_answerer(child.path, child.format, 2)
    worst, same = 0.0, 0
    # one question at a time, as the harness and a deployed reader ask: dynamic INT8 scales its
    # activations per batch, so a batch of other questions would change the answer
    for item in theirs.prepare(questions):
        expected, got = theirs.span_scores([item])[0], mine.span_scores([item])[0]
        worst = max(worst, max(float(np.abs(e - g).max()) for e, g in zip(expected, got)))
        theirs_span, my_span = (best_span(scores, item.windows) for scores in (expected, got))
        same += (theirs_span and theirs_span[:2]) == (my_span and my_span[:2])  # start and end, not the score
    agreement = same / max(1, len(questions))
    result = {"examples": len(texts), "parent": parent.name, "max_abs_logit_diff": worst, "label_agreement": agreement}
    return validate.judged(
        result,
        child,
        parent.name,
        worst,
        agreement,
        validate.Tolerance(settings.atol, settings.min_label_agreement),
        outputs="start/end logits",
        kept="answers",
    )
