"""Extractive question answering (`question-answering`): the answer is a span of the context.

Data are questions on paragraphs with answer spans (SQuAD's format; the kit's SQuAD v1.1 dev carved by
article into train, validation and test); a bare encoder is given a span head and trained on windows of
the context (384 tokens, stride 128, as the runtime reads them); distillation pulls the start and end
distributions to the teacher's. The evaluation answers every test question one at a time and scores
SQuAD's exact match and F1 (its official normalisation); the timed workloads are the encoder's, real
lengths being each question's first window. The runtime (`runtime/answers.py`) finds the best span
across windows, offsets into the context as given.

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
