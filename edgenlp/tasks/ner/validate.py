"""Is a new variant faithful to its parent? FP32: every real token's logits within tolerance; quantised:
every real token's tag kept, mostly."""

from __future__ import annotations

import numpy as np


def check_against_parent(parent, child, texts: list[str], settings, batch_size: int = 16) -> dict:
    from ... import validate
    from ...runtime import TextTokenizer
    from .session import open_tagger

    tokenizer = TextTokenizer(child.path)
    theirs, mine = open_tagger(parent.path, parent.format, 2), open_tagger(child.path, child.format, 2)
    worst, same, tokens = 0.0, 0, 0
    for start in range(0, len(texts), batch_size):
        inputs = tokenizer.encode(texts[start : start + batch_size])
        real = inputs["attention_mask"].astype(bool)
        expected, got = theirs.model.run(inputs)[real], mine.model.run(inputs)[real]
        worst = max(worst, float(np.abs(expected - got).max()))
        same += int((expected.argmax(-1) == got.argmax(-1)).sum())
        tokens += int(real.sum())
    agreement = same / max(1, tokens)
    result = {
        "examples": len(texts),
        "tokens": tokens,
        "parent": parent.name,
        "max_abs_logit_diff": worst,
        "label_agreement": agreement,
    }
    return validate.judged(
        result,
        child,
        parent.name,
        worst,
        agreement,
        validate.Tolerance(settings.atol, settings.min_label_agreement),
        outputs="token logits",
        kept="tokens' tags",
    )
