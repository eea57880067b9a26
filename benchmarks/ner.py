"""Named entities: MiniLM fine-tuned on WNUT-17, edgenlp's INT8 and pruned variants against Optimum's INT8, one run.

    python benchmarks/ner.py [--recipe recipes/minilm-wnut17.yaml] [--out runs/minilm-wnut17]

Every WNUT-17 test sentence tagged one at a time (entity F1, seqeval's reading), then one sentence
timed at real lengths; the checks are `encoder_task.py`'s (best INT8 within 1.0 entity-F1 point of
FP32 and at least as fast as Optimum's INT8; pruned + distilled INT8 >= 1.4x it at <= 1.0 point).
"""

from __future__ import annotations

import sys

from encoder_task import TaskBench, main


def per_type(v: dict) -> dict:
    m = v["metrics"]
    return {
        "precision_pct": round(m["entity_precision"], 2),
        "recall_pct": round(m["entity_recall"], 2),
        "per_type_f1": {k: round(x["f1"], 1) for k, x in m["per_type"].items()},
        "word_agreement_pct": round(100 * m.get("word_agreement_with_reference", 1.0), 2),
    }


BENCH = TaskBench(
    name="ner_minilm_wnut17",
    recipe="minilm-wnut17.yaml",
    metric="entity_f1",
    delta="entity_f1_delta_points",
    optimum_class="ORTModelForTokenClassification",
    optimum_runner="OptimumTokenClassification",
    extra=per_type,
)

if __name__ == "__main__":
    sys.exit(main(BENCH))
