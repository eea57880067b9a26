"""Target profiles: the CPU budget a variant must run in (threads, shapes, a memory budget)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..errors import BenchError, validation_line


class Profile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    description: str = ""
    threads: int = Field(ge=1, le=256)
    batch_size: int = Field(1, ge=1)
    """Batch size of the latency measurements."""
    seq_lengths: list[Literal["real"] | int] = ["real", 128]
    """`real` replays the evaluation data's own lengths; an integer pads or truncates every input to it."""
    throughput_batch: int | None = Field(32, ge=1)
    memory_budget_mb: float | None = Field(None, gt=0)
    prompt_tokens: int = Field(128, ge=1)
    """Text generation: tokens of real text in each timed prompt."""
    new_tokens: int = Field(128, ge=1)
    """Text generation: tokens generated per timed request (a fixed count: end-of-text does not stop it)."""


BUILTIN = {
    "edge-1t": Profile(
        name="edge-1t",
        threads=1,
        memory_budget_mb=256,
        description="one core of a small edge CPU; the primary, least noisy profile",
    ),
    "laptop-2t": Profile(
        name="laptop-2t", threads=2, memory_budget_mb=1024, description="two cores of a laptop-class CPU"
    ),
}


def load(spec: str | dict | Profile) -> Profile:
    """A built-in name, a YAML file path, or a mapping."""
    if isinstance(spec, Profile):
        return spec
    if isinstance(spec, str):
        if spec in BUILTIN:
            return BUILTIN[spec]
        path = Path(spec)
        if not path.exists():
            raise BenchError(
                f"profile '{spec}' is neither built in ({', '.join(BUILTIN)}) nor a YAML file: fix the name or the path"
            )
        if not path.is_file():
            raise BenchError(f"profile {path} is a folder: pass a YAML file or a built-in name ({', '.join(BUILTIN)})")
        try:
            spec = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except (yaml.YAMLError, UnicodeDecodeError) as exc:
            raise BenchError(f"profile file {path} is not valid YAML: {str(exc).splitlines()[0]}") from exc
        if not isinstance(spec, dict):
            raise BenchError(
                f"profile file {path} holds a YAML {type(spec).__name__}, not a mapping: write keys "
                "such as threads, seq_lengths and memory_budget_mb"
            )
        spec.setdefault("name", path.stem)
    try:
        return Profile(**spec)
    except ValidationError as exc:
        raise BenchError(validation_line(exc, f"profile '{spec.get('name', '?')}'")) from exc


class BenchSettings(BaseModel):
    """How much to measure. Defaults give stable p50s at a few minutes for a handful of variants."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    profiles: list[str | Profile] = ["edge-1t", "laptop-2t"]
    iterations: int = Field(200, ge=10)
    """Timed batch-1 inferences per candidate, profile and sequence length (spread over the rounds)."""
    rounds: int = Field(8, ge=1)
    """Interleaving rounds: each round visits every candidate in a seeded random order. The confidence
    intervals resample rounds, so more rounds give intervals that hold across runs."""
    warmup: int = Field(10, ge=0)
    throughput_batches: int = Field(10, ge=1)
    max_eval_examples: int | None = Field(None, ge=1)
    reference: str | None = None
    """Candidate that ratios and paired tests compare with; default the first one."""
    seed: int = 0
    bootstrap: int = Field(1000, ge=100)
    generations: int = Field(8, ge=1)
    """Text generation: timed generations per candidate and profile (spread over the rounds)."""
    no_cache_variant: str | None = None
    """Text generation: the variant also timed without its KV cache (default: the reference)."""
    no_cache_generations: int = Field(2, ge=0)
    max_eval_tokens: int | None = Field(16384, ge=64)
    """Text generation: tokens of each held-out text scored for perplexity and divergence."""
    eval_prompts: int = Field(16, ge=1)
    """Text generation: prompts whose greedy continuations are compared with the reference's."""
    continuation_tokens: int = Field(32, ge=1)
