"""What text classification is to the rest of edgenlp: its name, model class, quality and speed axes."""

from __future__ import annotations

from ..protocol import Quality

NAME: str = "text-classification"
AUTO_MODEL: str = "AutoModelForSequenceClassification"
"""The transformers Auto class that loads a PyTorch model for this task."""
QUALITY = Quality(
    metric="accuracy", higher_is_better=True, drop_metric="accuracy_drop", drop_unit="points", label="accuracy, %"
)
GATE_METRICS: tuple[str, ...] = ("accuracy", "accuracy_drop", "macro_f1")
SPEED: tuple[str, str] = ("p50_ms", "lowest p50 latency at real lengths")
MODEL_MUST_BE: str | None = None
"""Any encoder can be given this task: a bare one gets a classification head."""
CALIBRATION_BATCH: int = 16
"""Sentences per calibration batch."""
EXPORT_TASK: str = "text-classification"
"""Optimum's export task for these models."""
USED_AS_TRAINED: str | None = None
"""Why `train: if-needed` uses a trained checkpoint of this task as given (None: decided by the data)."""
