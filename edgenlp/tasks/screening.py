"""The accuracy-budget search's first latency look, shared by the encoder tasks: a median over a few passes."""

from __future__ import annotations

import time

import numpy as np


def median_ms(run, inputs: list, repeats: int = 3, warm: int = 5) -> float:
    """Median ms of `run(x)` over `repeats` passes of `inputs` after `warm` untimed runs: a short look, to
    shortlist candidates for the harness, which measures them properly."""
    for x in inputs[:warm]:
        run(x)
    times = []
    for _ in range(repeats):
        for x in inputs:
            t0 = time.perf_counter_ns()
            run(x)
            times.append((time.perf_counter_ns() - t0) / 1e6)
    return float(np.median(times))
