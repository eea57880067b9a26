"""Shared fixtures: a tiny random BERT classifier and a small labelled data set, built in seconds."""

from __future__ import annotations

import csv
import random
from pathlib import Path

import pytest

FORBID_TORCH = """
import importlib.abc, sys

class Forbid(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "transformers", "optimum"):
            raise ImportError(f"{name} must not be imported by the runtime")
        return None

sys.meta_path.insert(0, Forbid())
"""
"""Prepended to a script run in a subprocess: importing torch, transformers or optimum fails there."""

POSITIVE = ["good", "great", "happy", "love", "excellent", "nice", "fun", "best"]
NEGATIVE = ["bad", "awful", "sad", "hate", "terrible", "poor", "boring", "worst"]
FILLER = ["the", "movie", "was", "really", "a", "film", "plot", "this", "very", "quite"]
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *POSITIVE, *NEGATIVE, *FILLER]


def make_rows(n: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = i % 2
        words = rng.sample(FILLER, 4) + [rng.choice(POSITIVE if label else NEGATIVE) for _ in range(2)]
        rng.shuffle(words)
        rows.append({"review": " ".join(words) + f" {i}", "sentiment": "pos" if label else "neg"})
    return rows


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory) -> Path:
    """A 2-layer BERT base model (not fine-tuned) with a real WordPiece tokenizer.json."""
    from transformers import BertConfig, BertModel, BertTokenizerFast

    folder = tmp_path_factory.mktemp("tiny-bert")
    vocab = folder / "vocab.txt"
    vocab.write_text("\n".join(VOCAB + [str(i) for i in range(10)]) + "\n")
    tokenizer = BertTokenizerFast(vocab_file=str(vocab), model_max_length=64)
    config = BertConfig(
        vocab_size=len(VOCAB) + 10,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_csv(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "reviews.csv"
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["review", "sentiment"])
        writer.writeheader()
        writer.writerows(make_rows(240))
    return path


@pytest.fixture(scope="session")
def tiny_recipe(tiny_bert, tiny_csv) -> dict:
    return {
        "name": "tiny",
        "model": str(tiny_bert),
        "data": {"source": str(tiny_csv), "text_column": "review", "label_column": "sentiment"},
        "variants": [
            {
                "name": "pytorch-fp32",
                "stage": "finetune",
                "config": {
                    "max_steps": 30,
                    "batch_size": 16,
                    "eval_every": 10,
                    "learning_rate": 1e-3,
                    "max_length": 32,
                    "max_eval_examples": 12,
                },
            },
            {"name": "onnx-fp32", "stage": "export", "parent": "pytorch-fp32"},
            {"name": "onnx-fp32-opt", "stage": "optimize-graph", "parent": "onnx-fp32"},
            {"name": "onnx-int8-dynamic", "stage": "quantize", "parent": "onnx-fp32"},
        ],
        "validation": {"examples": 16, "min_label_agreement": 0.5},
        "bench": {
            "profiles": [{"name": "tiny-1t", "threads": 1, "seq_lengths": ["real", 32], "memory_budget_mb": 512}],
            "iterations": 10,
            "rounds": 2,
            "warmup": 1,
            "throughput_batches": 2,
            "bootstrap": 200,
            "reference": "pytorch-fp32",
        },
    }


@pytest.fixture(scope="session")
def tiny_run(tiny_recipe, tmp_path_factory):
    """One full pipeline run on the tiny model, shared by the tests that inspect its outputs."""
    from edgenlp import pipeline, recipe

    out = tmp_path_factory.mktemp("run")
    return pipeline.run(recipe.parse(tiny_recipe), out)


KIT_HINT = (
    "the offline data kit is not at EDGENLP_DATA_DIR ({path}): put the kit's data/ folder there "
    "(the project's shared/data, with sst2/, wikitext2/, ...) or set EDGENLP_DATA_DIR to it"
)


EMULATOR_HINT = (
    "the emulated ARM64 needs Debian's qemu-user-static and debootstrap, and root for its first setup: "
    "apt-get install qemu-user-static debootstrap"
)


def _skip_emulated(items) -> None:
    """Without qemu and debootstrap the `emulated` tests are skipped with the fix, except in CI (a failure)."""
    import os
    import shutil

    emulated = [item for item in items if item.get_closest_marker("emulated")]
    ready = shutil.which("qemu-aarch64-static") or shutil.which("qemu-aarch64")
    ready = ready and (shutil.which("debootstrap") or Path("/usr/sbin/debootstrap").is_file())
    if not emulated or ready:
        return
    if os.environ.get("CI"):
        raise pytest.UsageError(f"CI needs the emulated tests: {EMULATOR_HINT}")
    for item in emulated:
        item.add_marker(pytest.mark.skip(reason=EMULATOR_HINT))


def pytest_collection_modifyitems(config, items):
    """Without the data kit the `real` tests are skipped with the fix, except in CI, where that is a failure."""
    import os

    from edgenlp import settings

    _skip_emulated(items)
    real = [item for item in items if item.get_closest_marker("real")]
    kit = settings.data_dir()
    if not real or (kit / "sst2" / "train.tsv").exists():
        return
    message = KIT_HINT.format(path=kit)
    if os.environ.get("CI"):
        raise pytest.UsageError(f"CI needs the real tests: {message}")
    for item in real:
        item.add_marker(pytest.mark.skip(reason=message))


def corpus_docs(n: int, seed: int = 0) -> list[str]:
    """Short documents of the fixture vocabulary, a little repetitive so that a tiny model can learn."""
    rng = random.Random(seed)
    return [". ".join(" ".join(rng.sample(FILLER + POSITIVE, 6)) for _ in range(4)) + "." for _ in range(n)]


@pytest.fixture(scope="session")
def tiny_gpt2(tmp_path_factory) -> Path:
    """A 2-layer GPT-2 with a byte-level BPE tokenizer trained on the fixture words (no data kit needed)."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import GPT2Config, GPT2LMHeadModel, GPT2TokenizerFast

    folder = tmp_path_factory.mktemp("tiny-gpt2")
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(corpus_docs(200), vocab_size=400, special_tokens=["<|endoftext|>"])
    tokenizer = GPT2TokenizerFast(
        tokenizer_object=bpe._tokenizer,
        eos_token="<|endoftext|>",
        bos_token="<|endoftext|>",
        unk_token="<|endoftext|>",
        model_max_length=64,
    )
    eos = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    config = GPT2Config(
        vocab_size=len(tokenizer), n_positions=64, n_embd=32, n_layer=2, n_head=2, bos_token_id=eos, eos_token_id=eos
    )
    import torch

    torch.manual_seed(0)
    GPT2LMHeadModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("corpus") / "docs.txt"
    path.write_text("\n\n".join(corpus_docs(300, seed=1)) + "\n")
    return path


@pytest.fixture(scope="session")
def tiny_gpt2_recipe(tiny_gpt2, tiny_corpus) -> dict:
    return {
        "name": "tiny-gpt2",
        "model": str(tiny_gpt2),
        "data": {"source": str(tiny_corpus)},
        "variants": [
            {
                "name": "pytorch-fp32",
                "stage": "finetune",
                "config": {
                    "max_steps": 20,
                    "batch_size": 8,
                    "eval_every": 10,
                    "learning_rate": 3e-3,
                    "max_length": 64,
                    "max_eval_examples": 8,
                },
            },
            {"name": "onnx-fp32", "stage": "export", "parent": "pytorch-fp32"},
            {"name": "onnx-int8", "stage": "quantize", "parent": "onnx-fp32"},
            {"name": "onnx-int4", "stage": "quantize-int4", "parent": "onnx-fp32", "config": {"block_size": 16}},
            {
                "name": "onnx-int4-int8-prefill",
                "stage": "split-prefill",
                "parent": "onnx-fp32",
                "config": {"decode": {"stage": "quantize-int4", "config": {"block_size": 16}}},
            },
        ],
        "validation": {"examples": 8, "atol": 1e-3, "min_label_agreement": 0.5},
        "bench": {
            "profiles": [{"name": "gen-1t", "threads": 1, "prompt_tokens": 16, "new_tokens": 8}],
            "rounds": 2,
            "generations": 2,
            "no_cache_generations": 1,
            "max_eval_tokens": 512,
            "eval_prompts": 4,
            "continuation_tokens": 8,
            "bootstrap": 200,
            "reference": "pytorch-fp32",
        },
    }


@pytest.fixture(scope="session")
def tiny_gpt2_run(tiny_gpt2_recipe, tmp_path_factory):
    from edgenlp import pipeline, recipe

    out = tmp_path_factory.mktemp("gpt2-run")
    return pipeline.run(recipe.parse(tiny_gpt2_recipe), out)


def openvino_of(run, tmp_path: Path, task: str) -> tuple:
    """The run's FP32 ONNX variant and the folder of OpenVINO's FP32 IR of it (skipped without openvino)."""
    from edgenlp import stages

    pytest.importorskip("openvino")
    onnx = run.variants["onnx-fp32"]
    work = tmp_path / "openvino"
    work.mkdir()
    out = stages.get("openvino").run(onnx, stages.get("openvino").Config(), work)
    assert out.format == "openvino" and out.task == task
    return onnx, work


def check_fused_graph(run, spec: dict, out: Path) -> None:
    """`optimize-graph` on the run's FP32 ONNX variant, then per-channel INT8 of the fused graph, each judged as
    the pipeline judges a child (the task's own check): the fused FP32 graph gives the parent's outputs, and
    its INT8 (fused attention as `QAttention`) keeps the parent's answers above the floor."""
    from edgenlp import stages, tasks
    from edgenlp.artifact import build
    from edgenlp.data import DataSpec
    from edgenlp.recipe import ValidationSettings

    task = tasks.get(run.results["task"])
    texts = task.validation_texts(task.load_data(DataSpec(**spec["data"])), 16)
    settings = ValidationSettings(min_label_agreement=0.5)

    def child_of(parent, name: str, config):
        stage = stages.get(name)
        art, _ = build(
            out / name,
            parent,
            stage.NAME,
            config,
            run=lambda work: stage.run(parent, config, work),
            check=lambda child: task.check_against_parent(parent, child, texts, settings),
        )
        return art

    fused = child_of(run.variants["onnx-fp32"], "optimize-graph", stages.get("optimize-graph").Config())
    int8 = child_of(fused, "quantize", stages.get("quantize").Config(per_channel=True))
    assert fused.meta["metadata"]["fusions"].get("Attention", 0) >= 1 and fused.meta["validation"]["passed"]
    assert int8.meta["validation"]["passed"] and int8.meta["metadata"]["quantized_nodes"].get("QAttention", 0) >= 1


def check_budget_search(spec: dict, out: Path) -> None:
    """`spec`'s model, fine-tuned and exported, searched for INT8 settings within a loose accuracy budget:
    two settings tried and scored on the tuning split by the task's own metric (a test of the task's path
    through the search, not of how good INT8 is on a tiny model)."""
    from edgenlp import pipeline, recipe, tasks

    train = next(v for v in spec["variants"] if v["stage"] == "finetune")
    spec = {
        **spec,
        "variants": [
            {**train, "config": {**train["config"], "max_eval_examples": 30}},
            {"name": "onnx-fp32", "stage": "export", "parent": train["name"]},
        ],
        "selection": {"max_accuracy_drop": 50.0},
        "search": {
            "modes": ["dynamic"],
            "per_channel": [False, True],
            "embeddings": [True],
            "attention_matmuls": [False],
            "probe_samples": 8,
            "measure_top": 1,
            "tuning_examples": 40,
            "min_tuning_examples": 20,
        },
    }
    outcome = pipeline.run(recipe.parse(spec), out)
    found = outcome.results["search"]
    task = tasks.get(outcome.results["task"])
    assert found["drop_unit"] == task.QUALITY.drop_unit
    assert {t["label"] for t in found["trials"]} == {"dynamic", "dynamic-per-channel"}
    for trial in found["trials"]:  # scored on the tuning split and judged by the task's own drop
        assert trial["tuning_drop"] == pytest.approx(
            task.quality_drop(found["reference_quality"], trial["tuning_quality"])
        )


def check_latency_target(spec: dict, out: Path, metric: str) -> None:
    """`spec`'s model, fine-tuned, exported and quantised, with one candidate of a latency target added
    (`structure`): the target is loose, so that the test is of the task's path through the search, not of
    this machine's speed. The candidate is pruned, recovered by the task's distillation and kept by `metric`."""
    import json

    from edgenlp import pipeline, recipe

    train = next(v for v in spec["variants"] if v["stage"] == "finetune")
    spec = {
        **spec,
        "variants": [
            train,
            {"name": "onnx-fp32", "stage": "export", "parent": train["name"]},
            {"name": "onnx-int8", "stage": "quantize", "parent": "onnx-fp32", "config": {"per_channel": True}},
        ],
        "structure": {
            "target_ms": 1000.0,
            "length": next(n for n in spec["bench"]["profiles"][0]["seq_lengths"] if n != "real"),
            "candidates": 1,
            "prune": {"importance": "taylor", "calibration_batches": 2, "batch_size": 8},
            "distill": {**train["config"], "max_steps": 10, "eval_every": 5, "alpha": 0.7},
        },
    }
    outcome = pipeline.run(recipe.parse(spec), out)
    found = outcome.results["structure_search"]
    (row,) = found["candidates"]
    assert found["chosen"] == row["variant"] and row["meets"] and row["measured_ms"] > 0
    pruned = outcome.variants[row["pruned"]].meta["metadata"]
    assert len(pruned["kept_layers"]) == row["shape"]["layers"]
    by_name = {v["name"]: v for v in outcome.results["variants"]}
    assert row["after_recovery"] == pytest.approx(by_name[row["recovered"]]["metrics"][metric])
    assert row["quality"] == pytest.approx(by_name[row["variant"]]["metrics"][metric])
    distilled = json.loads((outcome.variants[row["recovered"]].path / "training_log.json").read_text())
    assert distilled["metric"] == metric and "soft_loss" in distilled["steps"][0]  # the task's soft loss
