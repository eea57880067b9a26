from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import FORBID_TORCH

TORCH_FORBIDDEN = (
    FORBID_TORCH
    + """
import json
from edgenlp.runtime import TextClassifier
from edgenlp.tasks.classification import Session as Worker

clf = TextClassifier(sys.argv[1])
labels = [o["label"] for o in clf.classify(["the movie was great", "awful boring plot"])]
worker = Worker(sys.argv[1], "onnx", 1, sys.argv[2])
timed = worker.handle({"op": "latency", "shape": "real", "n": 3, "warmup": 1})
preds = worker.handle({"op": "eval"})["preds"]
print(json.dumps({"labels": labels, "timed": len(timed["ms"]), "preds": preds}))
"""
)


def test_runtime_and_worker_run_where_torch_cannot_be_imported(tiny_run, tmp_path):
    """Run the real inference path in a process where importing torch, transformers or optimum fails."""
    import json

    texts = tmp_path / "eval.json"
    texts.write_text(json.dumps({"texts": ["good film", "bad plot", "fun"]}))
    done = subprocess.run(
        [sys.executable, "-c", TORCH_FORBIDDEN, str(tiny_run.variants["onnx-int8-dynamic"].path), str(texts)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert set(out["labels"]) <= {"neg", "pos"} and len(out["labels"]) == 2
    assert out["timed"] == 3 and len(out["preds"]) == 3


def test_tokenizer_pads_and_truncates(tiny_run):
    from edgenlp.runtime import TextTokenizer

    tok = TextTokenizer(tiny_run.variants["onnx-fp32"].path)
    enc = tok.encode(["good", "the movie was really a very good film"])
    assert enc["input_ids"].shape == enc["attention_mask"].shape
    assert enc["attention_mask"][0].sum() < enc["attention_mask"][1].sum()
    long = tok.encode(["good " * 500])
    assert long["input_ids"].shape[1] == tok.max_length == 32
    assert tok.encode(["good"], pad_to=16)["input_ids"].shape == (1, 16)


def test_worker_fills_fixed_lengths_with_real_text_not_padding(tiny_run, tmp_path):
    import json

    from edgenlp.tasks.classification import Session as Worker

    texts = tmp_path / "eval.json"
    texts.write_text(json.dumps({"texts": ["good", "bad film", "the plot was fun"]}))
    worker = Worker(str(tiny_run.variants["onnx-int8-dynamic"].path), "onnx", 1, str(texts))
    fixed = worker._single(16)
    assert len(fixed) == 3 and all(x["input_ids"].shape == (1, 16) for x in fixed)
    assert all(x["attention_mask"].all() for x in fixed)
    real = worker._single("real")
    assert [x["input_ids"].shape[1] for x in real] == [3, 4, 6]
    timed = worker.handle({"op": "latency", "shape": 16, "n": 5, "warmup": 2})
    assert len(timed["ms"]) == 5 and min(timed["ms"]) > 0


def test_throughput_counts_real_sequences_and_tokens_including_a_short_last_batch(tiny_run, tmp_path):
    import json

    from edgenlp.tasks.classification import Session as Worker
    from edgenlp.tasks.classification.measure import throughput_figures as _throughput

    texts = tmp_path / "eval.json"
    texts.write_text(json.dumps({"texts": ["good", "bad film", "the plot was fun", "awful", "nice movie"]}))
    worker = Worker(str(tiny_run.variants["onnx-fp32"].path), "onnx", 1, str(texts))
    reply = worker.handle({"op": "throughput", "batch": 2, "n": 3, "warmup": 0})
    assert reply["sequences"] == [2, 2, 1]  # five texts: the last batch holds one, and counts as one
    assert reply["tokens"] == [3 + 4, 6 + 3, 4] and reply["positions"] == [2 * 4, 2 * 6, 1 * 4]
    stacked = worker.handle({"op": "latency", "shape": 8, "batch": 2, "n": 2, "warmup": 0})
    assert len(stacked["ms"]) == 2
    rows = worker._latency_inputs(8, 2)
    assert all(x["input_ids"].shape == (2, 8) and x["attention_mask"].all() for x in rows)  # real text, no padding
    summary = _throughput([reply], 2)
    assert summary["sequences"] == 5
    assert summary["seq_per_s"] == pytest.approx(5000.0 / sum(reply["ms"]))
    assert summary["padding_share"] == pytest.approx(1 - 20 / 24)


def _saturating_matmul(path):
    """x (float, all 1.0: quantised to 255) times s8 weights of 127: every pair of products is 64,770, past
    the 32,767 that a 16-bit sum holds."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    depth, width = 64, 8
    weights = np.full((depth, width), 127, dtype=np.int8)
    weights[:, 1::2] = -127
    nodes = [
        helper.make_node("DynamicQuantizeLinear", ["x"], ["xq", "scale", "zero"]),
        helper.make_node("MatMulInteger", ["xq", "w", "zero", "w_zero"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "saturating",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, depth])],
        [helper.make_tensor_value_info("y", TensorProto.INT32, [1, width])],
        [numpy_helper.from_array(weights, "w"), numpy_helper.from_array(np.array(0, dtype=np.int8), "w_zero")],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)
    return np.ones((1, depth), dtype=np.float32), 255 * weights.astype(np.int32).sum(0, keepdims=True)


def test_exact_int8_sums_every_product_in_32_bits_where_the_default_kernel_saturates(tmp_path):
    import numpy as np

    from edgenlp.hardware import cpu_info
    from edgenlp.runtime.session import OnnxModel, exact_int8

    x, truth = _saturating_matmul(tmp_path / "m.onnx")
    with exact_int8():
        exact = OnnxModel(tmp_path / "m.onnx").run({"x": x})
    default = OnnxModel(tmp_path / "m.onnx").run({"x": x})  # outside the block: the CPU's default kernels
    assert np.array_equal(exact, truth), (exact, truth)
    # x86 without VNNI (vpmaddubsw) clips each pair at 32,767; VNNI and ARM accumulate in 32 bits
    assert np.array_equal(default, truth) != cpu_info().int8_saturates, (default, truth)


def test_a_bundle_loads_with_exact_int8_on_request_and_only_then(tiny_run, tmp_path, monkeypatch):
    import edgenlp.runtime.session as session
    from edgenlp.bundle import build
    from edgenlp.runtime import load

    folder = build(tiny_run.variants["onnx-int8-dynamic"].path, tmp_path / "bundle")
    opened, original = [], session.session_options

    def recording(*args, **kwargs):
        options = original(*args, **kwargs)
        try:
            opened.append(options.get_session_config_entry("session.x64quantprecision") == "1")
        except RuntimeError:  # onnxruntime's answer for a key never set
            opened.append(False)
        return options

    monkeypatch.setattr(session, "session_options", recording)
    exact = load(folder, exact_int8=True).classify(["the movie was great"])
    plain = load(folder).classify(["the movie was great"])
    assert opened == [True, False]
    assert exact[0]["label"] in {"neg", "pos"} and plain[0]["label"] in {"neg", "pos"}
