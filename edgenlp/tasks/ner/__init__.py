"""Named entities (`token-classification`): every word tagged IOB2, read back as entity spans.

Data are sentences split into words with a tag each (WNUT-17, CoNLL files, JSONL, the hub); a bare
encoder is given a token-classification head and trained with each word judged by its first subword;
distillation is per-token KL to the teacher. The evaluation tags every test sentence one at a time and
scores entities as seqeval does (type and both ends exact), per type and against the reference; the
timed workloads are the encoder's (one sentence at real lengths, end to end with the spans read).
The runtime (`runtime/entities.py`) turns tags into spans with offsets into the text as given.

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
