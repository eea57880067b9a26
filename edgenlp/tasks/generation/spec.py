"""What text generation is to the rest of edgenlp: its name, model class, quality and speed axes."""

from __future__ import annotations

from ..protocol import Quality

NAME: str = "text-generation"
AUTO_MODEL: str = "AutoModelForCausalLM"
"""The transformers Auto class that loads a PyTorch model for this task."""
QUALITY = Quality(
    metric="perplexity", higher_is_better=False, drop_metric="perplexity_increase", drop_unit="%", label="perplexity"
)
GATE_METRICS: tuple[str, ...] = (
    "perplexity",
    "perplexity_increase",
    "kl_mean",
    "kl_p99",
    "top1_agreement",
    "greedy_identical",
    "tokens_per_s",
    "decode_tokens_per_s",
    "ttft_ms",
    "decode_p50_ms",
    "decode_p90_ms",
)
MODEL_MUST_BE: str | None = "a language model (a GPT-2-family decoder)"
SPEED: tuple[str, str] = ("decode_p50_ms", "lowest per-token decode p50 (KV cache, batch 1)")
PROMPT_WORDS = 24
"""Tokens of each comparison prompt (the start of a held-out document)."""
SHOWN_CONTINUATIONS = 3
"""Greedy continuations the results and the report show per variant."""
CALIBRATION_BATCH: int = 4
"""128-token windows per calibration batch (the logits dominate memory)."""
CALIBRATION_WINDOW = 128
"""Tokens of each calibration window."""
TUNING_TOKENS = 8192
"""Tokens of tuning text each search trial is scored on."""
EXPORT_TASK: str = "text-generation-with-past"
"""Optimum's export task for these models."""
USED_AS_TRAINED: str | None = (
    "a trained language model; the corpus serves evaluation and calibration (--finetune trains it)"
)
"""Why `train: if-needed` uses a trained checkpoint of this task as given (None: decided by the data)."""
