"""Sentence embeddings (`feature-extraction`): pooled encoder vectors, judged on STS pairs and retrieval.

Data are sentence pairs scored 0-5 (STS-B, or the user's own); a variant is faithful when its vectors
point where its parent's do; the evaluation embeds every distinct test sentence once, one at a time;
quality is Spearman's correlation of pair cosines with the gold scores, with fidelity to the reference
(cosine, nearest-neighbour agreement) beside it; the timed workloads are the encoder's (one sentence at
real lengths, end to end with pooling, batches of 32 for indexing). Pooling runs in numpy, in the
runtime: the graph is Optimum's `feature-extraction` export, which transformers.js also loads.

This module only gathers the task's interface (`tasks.protocol.Task`) from its layers.
"""

from __future__ import annotations

from .bundle import bundle_section, bundle_summary, compare_target_answers, target_check_set
from .data import (
    EvalSet,
    calibration_batches,
    claims_data,
    eval_set,
    fingerprint,
    load_data,
    payload,
    tuning_set,
    validation_texts,
)
from .measure import (
    check_profiles,
    eval_request,
    eval_section,
    metric,
    ratios,
    speed_targets,
    summarise,
    truncated_input,
    workloads,
)
from .report import figures, report_sections
from .session import Session
from .spec import (
    AUTO_MODEL,
    CALIBRATION_BATCH,
    EXPORT_TASK,
    GATE_METRICS,
    MODEL_MUST_BE,
    NAME,
    QUALITY,
    SPEED,
    USED_AS_TRAINED,
)
from .train import Trainer
from .tuning import quality_drop, screen_latency, tuning_quality
from .validate import check_against_parent

__all__ = [
    "AUTO_MODEL",
    "CALIBRATION_BATCH",
    "EXPORT_TASK",
    "GATE_METRICS",
    "MODEL_MUST_BE",
    "NAME",
    "QUALITY",
    "SPEED",
    "USED_AS_TRAINED",
    "EvalSet",
    "Session",
    "Trainer",
    "load_data",
    "claims_data",
    "fingerprint",
    "validation_texts",
    "eval_set",
    "payload",
    "tuning_set",
    "calibration_batches",
    "check_against_parent",
    "check_profiles",
    "truncated_input",
    "speed_targets",
    "eval_request",
    "workloads",
    "summarise",
    "eval_section",
    "ratios",
    "metric",
    "tuning_quality",
    "quality_drop",
    "screen_latency",
    "report_sections",
    "figures",
    "bundle_section",
    "bundle_summary",
    "target_check_set",
    "compare_target_answers",
]
