"""Vocabulary trimming: the domain's pieces kept and renumbered consistently in the embedding and tokenizer."""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import FILLER, NEGATIVE, POSITIVE

from edgenlp import architectures, models
from edgenlp.artifact import build
from edgenlp.data import DataSpec
from edgenlp.errors import ArtifactError, RecipeError
from edgenlp.stages import trim_vocab

UNUSED = {"boring", "worst", "quite", "very", "excellent"}


def _write(path: Path, rows: list[tuple[str, str]]) -> Path:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["review", "sentiment"])
        writer.writerows(rows)
    return path


@pytest.fixture(scope="module")
def domain_csv(tmp_path_factory) -> Path:
    """Reviews that never use the UNUSED words (nor any digit)."""
    import random

    rng = random.Random(0)
    pos = [w for w in POSITIVE if w not in UNUSED]
    neg = [w for w in NEGATIVE if w not in UNUSED]
    filler = [w for w in FILLER if w not in UNUSED]
    rows = []
    for i in range(200):
        words = rng.sample(filler, 3) + [rng.choice(pos if i % 2 else neg)]
        rng.shuffle(words)
        rows.append((" ".join(words), "pos" if i % 2 else "neg"))
    return _write(tmp_path_factory.mktemp("domain") / "reviews.csv", rows)


def _trim(source: Path, out: Path, data: Path, **config):
    parent = models.resolve(str(source))
    cfg = trim_vocab.Config(data=DataSpec(source=str(data), text_column="review", label_column="sentiment"), **config)
    art, _ = build(
        out,
        parent,
        trim_vocab.NAME,
        cfg,
        run=lambda work: trim_vocab.run(parent, cfg, work),
        libraries=trim_vocab.LIBRARIES,
    )
    return art


def test_the_kept_vocabulary_gives_the_same_outputs_and_the_rest_is_unknown(tiny_run, domain_csv, tmp_path):
    from tokenizers import Tokenizer
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    source = tiny_run.variants["pytorch-fp32"].path
    art = _trim(source, tmp_path / "t", domain_csv, keep_characters=False)
    meta = art.meta["metadata"]
    vocab = json.loads((art.path / "tokenizer.json").read_text())["model"]["vocab"]
    assert not UNUSED & set(vocab) and "good" in vocab and "[UNK]" in vocab and "[CLS]" in vocab
    assert sorted(vocab.values()) == list(range(len(vocab))) == list(range(meta["vocab_after"]))
    assert meta["vocab_after"] < meta["vocab_before"] and meta["test_pieces_outside"] == 0.0
    assert meta["embedding_parameters"]["after"] == meta["vocab_after"] * 32
    architectures.register()
    before = AutoModelForSequenceClassification.from_pretrained(str(source)).eval()
    after = AutoModelForSequenceClassification.from_pretrained(str(art.path)).eval()
    assert after.config.vocab_size == meta["vocab_after"]
    old_tok, new_tok = AutoTokenizer.from_pretrained(str(source)), AutoTokenizer.from_pretrained(str(art.path))
    inside = ["the movie was good", "this plot was really bad", "a fun film"]
    with torch.no_grad():
        torch.testing.assert_close(
            after(**new_tok(inside, padding=True, return_tensors="pt")).logits,
            before(**old_tok(inside, padding=True, return_tensors="pt")).logits,
            atol=1e-5,
            rtol=1e-5,
        )
    # the tokenizers library alone (what edgenlp's runtime and transformers.js read) agrees
    plain = Tokenizer.from_file(str(art.path / "tokenizer.json"))
    assert plain.encode("the movie was boring").tokens == ["[CLS]", "the", "movie", "was", "[UNK]", "[SEP]"]
    assert plain.encode("good").ids == [vocab["[CLS]"], vocab["good"], vocab["[SEP]"]]
    assert (art.path / "vocab.txt").read_text().split("\n")[: len(vocab)] == sorted(vocab, key=vocab.get)


def test_characters_and_a_margin_are_kept_on_request(tiny_run, domain_csv, tmp_path):
    source = tiny_run.variants["pytorch-fp32"].path
    bare = _trim(source, tmp_path / "bare", domain_csv, keep_characters=False).meta["metadata"]
    chars = _trim(source, tmp_path / "chars", domain_csv).meta["metadata"]
    assert chars["vocab_after"] == bare["vocab_after"] + 10  # the digits, which no review uses ("a" is used)
    vocab = json.loads((tmp_path / "chars" / "tokenizer.json").read_text())["model"]["vocab"]
    assert {str(d) for d in range(10)} <= set(vocab)
    # the margin: the most frequent ids beyond the training split's, ties broken by id
    vocab = {"[UNK]": 0, "a": 1, "##b": 2, "cat": 3, "dog": 4, "eel": 5, "fox": 6}
    others = Counter({4: 5, 5: 9, 6: 5, 3: 1})
    config = trim_vocab.Config(margin=2, keep_characters=False)
    assert trim_vocab.kept_ids(vocab, {0}, Counter({3: 4}), others, config) == [0, 3, 4, 5]
    rare = trim_vocab.Config(min_count=2, keep_characters=False)  # "dog" seen once in training: dropped
    assert trim_vocab.kept_ids(vocab, {0}, Counter({3: 4, 4: 1}), Counter(), rare) == [0, 3]
    with_chars = trim_vocab.Config(margin=1)
    assert trim_vocab.kept_ids(vocab, {0}, Counter({3: 4}), others, with_chars) == [0, 1, 2, 3, 5]


def test_a_vocabulary_that_leaves_a_test_text_unknown_is_one_line(tiny_run, tmp_path):
    source = tiny_run.variants["pytorch-fp32"].path
    words = [*POSITIVE, *NEGATIVE, *FILLER]
    rows = [(w, "pos" if i % 2 else "neg") for i, w in enumerate(words)] * 1
    data = _write(tmp_path / "single.csv", rows)
    with pytest.raises(RecipeError, match=r"nothing but \[UNK\]: raise margin"):
        trim_vocab.run(
            models.resolve(str(source)),
            trim_vocab.Config(
                data=DataSpec(source=str(data), text_column="review", label_column="sentiment", test_fraction=0.3),
                keep_characters=False,
            ),
            tmp_path / "out",
        )


def test_a_decoder_is_refused(tiny_gpt2, domain_csv, tmp_path):
    with pytest.raises(ArtifactError, match="BERT-family encoders"):
        _trim(tiny_gpt2, tmp_path / "g", domain_csv)


@pytest.fixture(scope="module")
def trimmed_run(tiny_run, domain_csv, tmp_path_factory):
    """The tiny classifier trimmed to the domain's vocabulary, exported and quantised by a recipe."""
    from edgenlp import pipeline, recipe

    spec = {
        "name": "trimmed",
        "model": str(tiny_run.variants["pytorch-fp32"].path),
        "data": {"source": str(domain_csv), "text_column": "review", "label_column": "sentiment"},
        "variants": [
            {"name": "trimmed", "stage": "trim-vocab", "config": {"keep_characters": False}},
            {"name": "onnx-trimmed", "stage": "export", "parent": "trimmed"},
            {"name": "int8-trimmed", "stage": "quantize", "parent": "onnx-trimmed"},
        ],
        "validation": {"examples": 16, "min_label_agreement": 0.5},
    }
    r = recipe.parse(spec)
    source = models.resolve(r.model)
    task = pipeline.task_of(r, source)
    built, _ = pipeline.build_variants(r, tmp_path_factory.mktemp("trimmed"), task.load_data(r.data), source, task)
    return built


TEXTS = ["the movie was good", "a boring film", "really bad plot"]


def test_a_trimmed_model_exports_quantises_and_bundles(tiny_run, trimmed_run, tmp_path):
    from edgenlp.bundle import build as bundle
    from edgenlp.runtime import load

    assert trimmed_run["onnx-trimmed"].meta["validation"]["max_abs_logit_diff"] < 1e-3
    assert trimmed_run["int8-trimmed"].meta["validation"]["passed"]
    ours = load(bundle(trimmed_run["onnx-trimmed"].path, tmp_path / "trimmed"))
    full = load(bundle(tiny_run.variants["onnx-fp32"].path, tmp_path / "full"))
    a, b = ours.classify(TEXTS[::2]), full.classify(TEXTS[::2])  # inside the kept vocabulary: the same
    assert [x["label"] for x in a] == [y["label"] for y in b]
    assert np.allclose([x["score"] for x in a], [y["score"] for y in b], atol=1e-4)
    assert _size(tmp_path / "trimmed") < _size(tmp_path / "full")


def _size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


@pytest.mark.browser
def test_transformers_js_loads_a_trimmed_bundle_unchanged(trimmed_run, tmp_path):
    from test_bundle_js import READY, node

    from edgenlp.bundle import build as bundle
    from edgenlp.runtime import load

    if not READY:
        pytest.skip("transformers.js not installed: run `npm ci --ignore-scripts` in web/")
    ours = load(bundle(trimmed_run["onnx-trimmed"].path, tmp_path / "trimmed")).classify(TEXTS, batch_size=1)
    theirs = node("classify.mjs", str(tmp_path), "trimmed", "fp32", json.dumps(TEXTS))
    assert [t["label"] for t in theirs] == [o["label"] for o in ours]
    assert np.allclose([t["score"] for t in theirs], [o["score"] for o in ours], atol=1e-4)


def test_a_strangers_tokenizer_files_fail_as_one_line_and_added_tokens_stay(tiny_run, domain_csv, tmp_path):
    """A malformed tokenizer.json or tokenizer_config.json is an ArtifactError naming the file; a non-special
    added token (matched before WordPiece) is kept even when the domain never uses it."""
    import shutil

    source = tiny_run.variants["pytorch-fp32"].path
    broken = tmp_path / "broken"
    shutil.copytree(source, broken)
    (broken / "artifact.json").unlink(missing_ok=True)
    spec = json.loads((source / "tokenizer.json").read_text())
    spec["model"]["vocab"] = ["not", "a", "mapping"]
    (broken / "tokenizer.json").write_text(json.dumps(spec))
    with pytest.raises(ArtifactError, match="not a well-formed WordPiece tokenizer.json"):
        _trim(broken, tmp_path / "a", domain_csv)
    (broken / "tokenizer.json").write_text((source / "tokenizer.json").read_text())
    (broken / "tokenizer_config.json").write_text(json.dumps({"added_tokens_decoder": {"x": {}}}))
    with pytest.raises(ArtifactError, match="tokenizer_config.json is not a readable tokenizer file"):
        _trim(broken, tmp_path / "b", domain_csv)

    added = tmp_path / "added"
    shutil.copytree(source, added)
    (added / "artifact.json").unlink(missing_ok=True)
    spec = json.loads((source / "tokenizer.json").read_text())
    boring = spec["model"]["vocab"]["boring"]
    spec["added_tokens"].append(
        {
            "id": boring,
            "content": "boring",
            "single_word": False,
            "lstrip": False,
            "rstrip": False,
            "normalized": True,
            "special": False,
        }
    )
    (added / "tokenizer.json").write_text(json.dumps(spec))
    art = _trim(added, tmp_path / "c", domain_csv, keep_characters=False)
    assert "boring" in json.loads((art.path / "tokenizer.json").read_text())["model"]["vocab"]
