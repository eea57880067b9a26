"""Text generation: a corpus, perplexity and fidelity to the FP32 parent, prefill + decode timings.

Data are plain-text corpora (`edgenlp/corpus.py`). Quality is sliding-window perplexity on held-out
text, with the KL divergence and top-1 agreement against the reference (`scoring.py`); greedy
continuations of the same prompts are compared token for token. The timed workload is one
generation with the KV cache (`measure.py`); speed is the per-token decode latency.

This module only gathers the task's interface (`tasks.protocol.Task`) from its layers.
"""

from __future__ import annotations

from .bundle import bundle_section, bundle_summary, compare_target_answers, target_check_set
from .data import (
    GenerationEvalSet,
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
    "GenerationEvalSet",
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
