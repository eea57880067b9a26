"""transformers.js (the JavaScript loader of the Hugging Face ecosystem) loads edgenlp bundles as they are.

Runs web/checks/*.mjs under Node with the pinned @huggingface/transformers of web/package.json
(`.ci/run` installs it; without it these tests are skipped, except in CI).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from edgenlp.bundle import build
from edgenlp.runtime import load

WEB = Path(__file__).resolve().parents[1] / "web"
READY = (WEB / "node_modules" / "@huggingface" / "transformers").is_dir() and shutil.which("node")
if not READY and os.environ.get("CI"):
    raise RuntimeError("CI needs transformers.js: run `npm ci --ignore-scripts` in web/ (.ci/run does)")
pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not READY, reason="transformers.js not installed: run `npm ci --ignore-scripts` in web/"),
]

TEXTS = ["good film", "the plot was really boring and bad", "fun", "awful"]


def node(script: str, *args: str) -> object:
    done = subprocess.run(
        ["node", str(WEB / "checks" / script), *args], capture_output=True, text=True, cwd=WEB, check=False, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def fp32_and_int8(model, data: dict, tmp_path, train: dict, more: tuple = (), **spec) -> dict:
    """A tiny run's PyTorch model trained briefly, exported, and quantised per channel (no benchmark); `more`:
    further variants."""
    from edgenlp import pipeline, recipe

    run = pipeline.run(
        recipe.parse(
            {
                "name": "tiny-js",
                "model": str(model),
                "data": data,
                "variants": [
                    {"name": "pytorch-fp32", "stage": "finetune", "config": train},
                    {"name": "onnx-fp32", "stage": "export", "parent": "pytorch-fp32"},
                    {"name": "onnx-int8", "stage": "quantize", "parent": "onnx-fp32", "config": {"per_channel": True}},
                    *more,
                ],
                "validation": {"examples": 8, "min_label_agreement": 0.5},
                "bench": {"profiles": [{"name": "tiny-1t", "threads": 1, "seq_lengths": ["real"]}]},
                **spec,
            }
        ),
        tmp_path / "run",
        bench=False,
    )
    return run.variants


def test_transformers_js_classifies_like_the_runtime(tiny_run, tmp_path):
    fp32 = build(tiny_run.variants["onnx-fp32"].path, tmp_path / "fp32")
    int8 = build(tiny_run.variants["onnx-int8-dynamic"].path, tmp_path / "int8")
    ours = load(fp32).classify(TEXTS, batch_size=1)
    theirs = node("classify.mjs", str(tmp_path), "fp32", "fp32", json.dumps(TEXTS))
    assert [t["label"] for t in theirs] == [o["label"] for o in ours]
    assert np.allclose([t["score"] for t in theirs], [o["score"] for o in ours], atol=1e-4)
    quantised = node("classify.mjs", str(tmp_path), "int8", "q8", json.dumps(TEXTS))  # onnx/model_quantized.onnx
    assert len(quantised) == len(TEXTS) and {t["label"] for t in quantised} <= set(load(int8).labels)


def test_transformers_js_loads_a_pruned_classifier_with_four_bit_tables(tiny_run, tmp_path):
    """Layers dropped and heads cut (edgenlp's own model type, which transformers.js refuses unless the
    bundle says BERT) and the tables as 4-bit blocks: transformers.js classifies as the runtime does."""
    from edgenlp import stages
    from edgenlp.artifact import build as build_variant

    parent = tiny_run.variants["pytorch-fp32"]
    variants = {}
    for name, stage, config, source in (
        ("pruned", "prune", {"layers": 1, "ratio": 0.5}, parent),
        ("onnx", "export", {}, None),
        ("int8-e4", "quantize", {"embedding_bits": 4, "embedding_block_size": 16}, None),
    ):
        source = source or variants[list(variants)[-1]]
        module = stages.get(stage)
        cfg = module.Config(**config)
        variants[name], _ = build_variant(
            tmp_path / name, source, module.NAME, cfg, run=lambda w, m=module, s=source, c=cfg: m.run(s, c, w)
        )
    four_bit = variants["int8-e4"]
    assert json.loads((four_bit.path / "config.json").read_text())["model_type"] == "edgenlp-pruned-bert"
    folder = build(four_bit.path, tmp_path / "bundles" / "pruned-e4")
    ours = load(folder).classify(TEXTS, batch_size=1)
    theirs = node("classify.mjs", str(tmp_path / "bundles"), "pruned-e4", "q8", json.dumps(TEXTS))
    assert [t["label"] for t in theirs] == [o["label"] for o in ours]
    assert np.allclose([t["score"] for t in theirs], [o["score"] for o in ours], atol=1e-4)


def test_transformers_js_classifies_with_a_fused_int8_graph_like_the_runtime(tiny_run, tmp_path):
    """A fused graph quantised (QAttention, QEmbedLayerNormalization, SkipLayerNormalization: onnxruntime's
    contrib operators, which onnxruntime-web must have too): transformers.js classifies as the runtime does."""
    from edgenlp import stages
    from edgenlp.artifact import build as build_variant

    parent = tiny_run.variants["onnx-fp32-opt"]
    module = stages.get("quantize")
    cfg = module.Config(per_channel=True)
    art, _ = build_variant(tmp_path / "q", parent, module.NAME, cfg, run=lambda w: module.run(parent, cfg, w))
    assert art.meta["metadata"]["quantized_nodes"]["QAttention"] == 2
    folder = build(art.path, tmp_path / "bundles" / "fused")
    ours = load(folder).classify(TEXTS, batch_size=1)
    theirs = node("classify.mjs", str(tmp_path / "bundles"), "fused", "q8", json.dumps(TEXTS))
    assert [t["label"] for t in theirs] == [o["label"] for o in ours]
    assert np.allclose([t["score"] for t in theirs], [o["score"] for o in ours], atol=1e-4)


def test_transformers_js_generates_like_the_runtime(tiny_gpt2_run, tmp_path):
    fp32 = build(tiny_gpt2_run.variants["onnx-fp32"].path, tmp_path / "gpt2")
    build(tiny_gpt2_run.variants["onnx-int4"].path, tmp_path / "gpt2-q4")
    ours = load(fp32).generate("the movie was", max_new_tokens=8)
    theirs = node("generate.mjs", str(tmp_path), "gpt2", "fp32", "the movie was", "8")
    assert theirs["generated_text"] == ours.text
    q4 = node("generate.mjs", str(tmp_path), "gpt2-q4", "q4", "the movie was", "8")  # onnx/model_q4.onnx
    assert isinstance(q4["generated_text"], str) and q4["generated_text"]


def test_transformers_js_embeds_like_the_runtime(tiny_bert, tmp_path):
    """A feature-extraction bundle: transformers.js's pipeline, given the pooling its manifest names, gives
    the runtime's vectors (FP32: cosine > 0.99999; INT8, signed or unsigned weights: the same file, > 0.9999)."""
    from test_embedding import make_pairs, write_pairs

    pairs = write_pairs(tmp_path / "pairs.csv", make_pairs(200))
    unsigned = {"per_channel": True, "weight_type": "uint8"}
    variants = fp32_and_int8(
        tiny_bert,
        {"source": str(pairs)},
        tmp_path,
        {"max_steps": 5, "max_length": 32},
        more=({"name": "onnx-int8-u8", "stage": "quantize", "parent": "onnx-fp32", "config": unsigned},),
        task="feature-extraction",
    )
    for name, dtype in (("onnx-fp32", "fp32"), ("onnx-int8", "q8"), ("onnx-int8-u8", "q8")):
        bundle = build(variants[name].path, tmp_path / "bundles" / name)
        manifest = json.loads((bundle / "manifest.json").read_text())
        options = manifest["transformers_js"]["options"]
        ours = load(bundle).embed(TEXTS, batch_size=1)
        theirs = np.asarray(
            node(
                "embed.mjs",
                str(tmp_path / "bundles"),
                name,
                dtype,
                options["pooling"],
                str(options["normalize"]).lower(),
                json.dumps(TEXTS),
            )
        )
        cos = (ours * theirs).sum(1) / np.linalg.norm(ours, axis=1) / np.linalg.norm(theirs, axis=1)
        assert theirs.shape == ours.shape and cos.min() > 0.9999, (name, cos)


def test_transformers_js_tags_tokens_like_the_runtime(tmp_path):
    """A token-classification bundle: transformers.js's pipeline tags the very tokens the runtime tags, with the
    same tags (FP32: scores within 1e-4; INT8, the same file: the same tags)."""
    from test_ner import build_tagger_bert, make_sentences, write_conll

    data = tmp_path / "conll"
    data.mkdir()
    for name, n, seed in (("train", 120, 0), ("dev", 40, 1), ("test", 20, 2)):
        write_conll(data / f"{name}.conll", make_sentences(n, seed))
    model = build_tagger_bert(tmp_path / "bert")
    variants = fp32_and_int8(
        model, {"source": str(data)}, tmp_path, {"max_steps": 40, "max_length": 32, "learning_rate": 2e-3}
    )
    # words of the tiny vocabulary only (see test_transformers_js_answers_like_the_runtime)
    texts = ["the movie was awful a boring", "a goods film", "great fun a best plot", "the plot"]
    for name, dtype in (("onnx-fp32", "fp32"), ("onnx-int8", "q8")):
        bundle = build(variants[name].path, tmp_path / "bundles" / name)
        # one text at a time, as transformers.js's pipeline tags them: dynamic INT8 scales per batch
        tagger = load(bundle).model
        ours = [tagger.token_tags([text])[0] for text in texts]
        theirs = node("tag.mjs", str(tmp_path / "bundles"), name, dtype, json.dumps(texts))
        assert [[(t["index"], t["entity"]) for t in one] for one in theirs] == [
            [(t["index"], t["entity"]) for t in one] for one in ours
        ], name
        assert any(ours), "the tiny tagger tags something"
        if dtype == "fp32":
            flat = [(a["score"], b["score"]) for x, y in zip(ours, theirs) for a, b in zip(x, y)]
            assert np.allclose([a for a, _ in flat], [b for _, b in flat], atol=1e-4)


def test_transformers_js_answers_like_the_runtime(tiny_bert, tmp_path):
    """A question-answering bundle: transformers.js's pipeline (one window: these contexts fit in one) gives the
    runtime's answers (SQuAD-normalised: it decodes tokens, the runtime cuts the context) and scores."""
    from test_qa import make_squad

    from edgenlp.tasks.qa.scoring import normalize

    data = tmp_path / "squad.json"
    data.write_text(json.dumps(make_squad(20)))
    variants = fp32_and_int8(
        tiny_bert,
        {"source": str(data), "test_fraction": 0.2},
        tmp_path,
        {"max_steps": 40, "max_length": 64, "learning_rate": 2e-3},
    )
    questions = [
        # words of the tiny vocabulary only: on an out-of-vocabulary word transformers.js's WordPiece and
        # tokenizers' part ways with this toy vocabulary (no continuation pieces), not with a real one
        {"question": "what was very good", "context": "the film was very fun a quite bad"},
        {"question": "the very good one", "context": "a plot this very great movie quite nice awful"},
        {"question": "what was really very good", "context": "very happy the movie was boring quite best"},
    ]
    for name, dtype in (("onnx-fp32", "fp32"), ("onnx-int8", "q8")):
        bundle = build(variants[name].path, tmp_path / "bundles" / name)
        ours = load(bundle).answers(questions, batch_size=1)
        theirs = node("answer.mjs", str(tmp_path / "bundles"), name, dtype, json.dumps(questions))
        assert [normalize(t["answer"]) for t in theirs] == [normalize(o["answer"]) for o in ours], name
        if dtype == "fp32":
            assert np.allclose([t["score"] for t in theirs], [o["score"] for o in ours], atol=1e-4)
