"""What sentence embedding is to the rest of edgenlp: its name, model class, quality and speed axes."""

from __future__ import annotations

from ..protocol import Quality

NAME: str = "feature-extraction"
"""transformers.js's and Optimum's name for it; TEI serves such models."""
AUTO_MODEL: str = "AutoModel"
"""A bare encoder: its token vectors are pooled into the sentence's."""
QUALITY = Quality(
    metric="spearman",
    higher_is_better=True,
    drop_metric="spearman_drop",
    drop_unit="points",
    label="Spearman x100 (STS)",
)
GATE_METRICS: tuple[str, ...] = (
    "spearman",
    "spearman_drop",
    "cosine_mean",
    "cosine_p1",
    "retrieval_agreement",
    "ms_per_sentence_batch",
)
SPEED: tuple[str, str] = ("p50_ms", "lowest p50 latency of one sentence at real lengths")
MODEL_MUST_BE: str | None = None
"""Any encoder embeds: a bare one, a sentence-transformers folder, a fine-tuned one (its head unused)."""
CALIBRATION_BATCH: int = 16
"""Sentences per calibration batch."""
EXPORT_TASK: str = "feature-extraction"
"""Optimum's export task: the graph returns every token's vector (`last_hidden_state`)."""
USED_AS_TRAINED: str | None = (
    "a trained embedding model; the pairs serve evaluation and calibration (--finetune trains it)"
)
"""Why `train: if-needed` uses a trained checkpoint of this task as given (None: decided by the data)."""
