"""What static INT8 needs beyond a stage: calibration, per-node sensitivity and a CPU preflight.

    calibration.py   activation ranges from streamed batches (MinMax, Entropy, Percentile), with the
                     attention-mask subgraph kept out on purpose; QDQ models built from those ranges
    sensitivity.py   per node: the damage of quantising it alone, ranked
    preflight.py     which settings suit this CPU, and warnings for those known to hurt here

The stages (`stages/quantize.py`, `stages/quantize_static.py`) and the accuracy-budget search
(`search/budget.py`) use these; none of them imports torch.
"""

MIN_CALIBRATION_SAMPLES = 8
"""Fewer calibration samples than this give activation ranges too noisy to quantise with."""
