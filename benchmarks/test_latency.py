"""Latency suites under pytest-benchmark, so numbers can be compared across commits.

    pytest benchmarks/ --benchmark-json=.benchmarks/now.json
    pytest-benchmark compare .benchmarks/before.json .benchmarks/now.json

Measures each ONNX variant of a run folder (`EDGENLP_BENCH_RUN`, default `runs/minilm-tweets`, made
by `edgenlp optimize`) through the torch-free runtime at batch 1 with one thread, at the data's real
lengths (cycling through its test texts) and at 128 tokens of real text. pytest-benchmark gives the
same inputs to every variant in a session, so its comparison tables are ratios measured side by side.
"""

from __future__ import annotations

import itertools
import json
import os
from pathlib import Path

import pytest

RUN = Path(os.environ.get("EDGENLP_BENCH_RUN", "runs/minilm-tweets"))
VARIANTS = (
    sorted(
        p
        for p in (RUN / "variants").glob("*")
        if (p / "artifact.json").exists() and json.loads((p / "artifact.json").read_text())["format"] == "onnx"
    )
    if RUN.exists()
    else []
)
pytestmark = pytest.mark.skipif(not VARIANTS, reason=f"no ONNX variants under {RUN}: run `edgenlp optimize` first")


@pytest.fixture(scope="module")
def texts() -> list[str]:
    from edgenlp import data

    return data.load("tweets").test.texts[:300]


@pytest.mark.parametrize("variant", VARIANTS, ids=[p.name for p in VARIANTS])
@pytest.mark.parametrize("shape", ["real", 128])
def test_batch1_latency(benchmark, variant, shape, texts):
    from edgenlp.runtime import OnnxModel, TextTokenizer

    model = OnnxModel(variant / "model.onnx", threads=1)
    tokenizer = TextTokenizer(variant)
    if shape == "real":
        inputs = [tokenizer.encode([t]) for t in texts]
    else:
        joined = " ".join(texts)
        inputs = [tokenizer.encode([joined[i * 400 :]], pad_to=shape) for i in range(50)]
    for x in inputs[:10]:
        model.run(x)
    cycle = itertools.cycle(inputs)
    benchmark.extra_info.update(variant=variant.name, shape=str(shape), threads=1)
    benchmark.pedantic(
        lambda: model.run(next(cycle)), rounds=200 if shape == "real" else 60, iterations=1, warmup_rounds=5
    )
