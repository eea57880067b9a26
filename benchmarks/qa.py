"""Question answering: MiniLM fine-tuned on SQuAD v1.1 dev's training articles, against Optimum's INT8, one run.

    python benchmarks/qa.py [--recipe recipes/minilm-squad.yaml] [--out runs/minilm-squad]

Every question of the held-out articles answered one at a time (its context in 384-token windows,
stride 128; SQuAD's EM and F1, not comparable with official SQuAD dev results: the kit has no train
file), then one question's first window timed at real lengths and at 384 tokens; the checks are
`encoder_task.py`'s (best INT8 within 1.0 F1 point of FP32 and at least as fast as Optimum's INT8;
pruned + distilled INT8 >= 1.4x it at <= 1.0 point).
"""

from __future__ import annotations

import sys

from encoder_task import TaskBench, main


def answers(v: dict) -> dict:
    m = v["metrics"]
    return {
        "exact_match": round(m["exact_match"], 2),
        "answers_as_reference_pct": round(100 * m.get("answer_agreement_with_reference", 1.0), 2),
    }


BENCH = TaskBench(
    name="qa_minilm_squad",
    recipe="minilm-squad.yaml",
    metric="f1",
    delta="f1_delta_points",
    optimum_class="ORTModelForQuestionAnswering",
    optimum_runner="OptimumQuestionAnswering",
    lengths=["real", 384],
    extra=answers,
)

if __name__ == "__main__":
    sys.exit(main(BENCH))
