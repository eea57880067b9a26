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
