"""Is a new variant faithful to its parent? FP32: start and end logits within tolerance on every real token;
quantised: the same most likely start and end token, mostly."""

from __future__ import annotations

import numpy as np


def check_against_parent(parent, child, texts: list[str], settings, batch_size: int = 8) -> dict:
    from ... import validate
    from ...runtime import TextTokenizer
    from .session import open_answerer

    tokenizer = TextTokenizer(child.path)
    theirs, mine = open_answerer(parent.path, parent.format, 2), open_answerer(child.path, child.format, 2)
    worst, same, ends = 0.0, 0, 0
    for start in range(0, len(texts), batch_size):
        inputs = tokenizer.encode(texts[start : start + batch_size])
        pad = inputs["attention_mask"][..., None] == 0
        expected = np.where(pad, -1e4, theirs.model.run(inputs))
        got = np.where(pad, -1e4, mine.model.run(inputs))
        real = ~pad[..., 0]
        worst = max(worst, float(np.abs(expected - got)[real].max()))
        same += int((expected.argmax(1) == got.argmax(1)).sum())  # per text: its start and its end
        ends += expected.shape[0] * 2
    agreement = same / max(1, ends)
    result = {"examples": len(texts), "parent": parent.name, "max_abs_logit_diff": worst, "label_agreement": agreement}
    return validate.judged(
        result,
        child,
        parent.name,
        worst,
        agreement,
        validate.Tolerance(settings.atol, settings.min_label_agreement),
        outputs="start/end logits",
        kept="most likely starts and ends",
    )
