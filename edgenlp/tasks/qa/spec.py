"""What extractive question answering is to the rest of edgenlp: its name, model class, quality and speed axes."""

from __future__ import annotations

from ..protocol import Quality

NAME: str = "question-answering"
"""transformers.js's, Optimum's and the inference API's name for it."""
AUTO_MODEL: str = "AutoModelForQuestionAnswering"
QUALITY = Quality(metric="f1", higher_is_better=True, drop_metric="f1_drop", drop_unit="points", label="SQuAD F1 x100")
GATE_METRICS: tuple[str, ...] = ("f1", "f1_drop", "exact_match", "answer_agreement")
SPEED: tuple[str, str] = ("p50_ms", "lowest p50 latency of one question's first window at real lengths")
MODEL_MUST_BE: str | None = None
"""Any encoder can be given this task: a bare one gets a span head."""
CALIBRATION_BATCH: int = 8
"""Windows per calibration batch."""
EXPORT_TASK: str = "question-answering"
"""Optimum's export task: the graph returns every token's start and end logits."""
USED_AS_TRAINED: str | None = "a trained question-answering model; the questions serve evaluation and calibration"
"""Why `train: if-needed` uses a trained checkpoint of this task as given."""
