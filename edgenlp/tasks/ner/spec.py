"""What named-entity recognition is to the rest of edgenlp: its name, model class, quality and speed axes."""

from __future__ import annotations

from ..protocol import Quality

NAME: str = "token-classification"
"""transformers.js's, Optimum's and the inference API's name for it."""
AUTO_MODEL: str = "AutoModelForTokenClassification"
QUALITY = Quality(
    metric="entity_f1",
    higher_is_better=True,
    drop_metric="entity_f1_drop",
    drop_unit="points",
    label="entity F1 x100 (seqeval)",
)
GATE_METRICS: tuple[str, ...] = ("entity_f1", "entity_f1_drop", "entity_precision", "entity_recall", "word_agreement")
SPEED: tuple[str, str] = ("p50_ms", "lowest p50 latency of one sentence at real lengths")
MODEL_MUST_BE: str | None = None
"""Any encoder can be given this task: a bare one gets a token-classification head."""
CALIBRATION_BATCH: int = 16
"""Sentences per calibration batch."""
EXPORT_TASK: str = "token-classification"
"""Optimum's export task: the graph returns every token's tag logits."""
USED_AS_TRAINED: str | None = None
"""A tagger is used as given when it was trained on the data's tags (decided by the data, as a classifier's labels)."""
