from __future__ import annotations

import subprocess
import sys


def test_runtime_and_bench_worker_import_no_torch():
    code = ("import sys, edgenlp.runtime, edgenlp.bench.worker, edgenlp.bench.runners; "
            "bad = [m for m in ('torch', 'transformers', 'optimum') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


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

    from edgenlp.bench.worker import Worker

    texts = tmp_path / "t.jsonl"
    texts.write_text("".join(json.dumps({"text": t}) + "\n" for t in ["good", "bad film", "the plot was fun"]))
    worker = Worker(str(tiny_run.variants["onnx-int8-dynamic"].path), "onnx", 1, str(texts))
    fixed = worker._single(16)
    assert len(fixed) == 3 and all(x["input_ids"].shape == (1, 16) for x in fixed)
    assert all(x["attention_mask"].all() for x in fixed)
    real = worker._single("real")
    assert [x["input_ids"].shape[1] for x in real] == [3, 4, 6]
    timed = worker.handle({"op": "latency", "shape": 16, "n": 5, "warmup": 2})
    assert len(timed["ms"]) == 5 and min(timed["ms"]) > 0
