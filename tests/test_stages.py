"""Every stage on the tiny model, through the shared pipeline run and on its own."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest

from edgenlp import models, stages, validate
from edgenlp.artifact import Artifact, build
from edgenlp.errors import ArtifactError, RecipeError, ValidationFailed
from edgenlp.hardware import cpu_info


def test_finetune_writes_checkpoint_and_training_log(tiny_run):
    art = tiny_run.variants["pytorch-fp32"]
    assert art.format == "pytorch" and art.task == "text-classification"
    assert art.labels() == ["neg", "pos"]
    log = json.loads((art.path / "training_log.json").read_text())
    assert len(log["steps"]) == 30 and log["evals"] and log["best_step"] > 0
    assert {"accuracy", "macro_f1", "loss"} <= set(log["evals"][0])


def test_export_matches_pytorch_logits(tiny_run):
    art = tiny_run.variants["onnx-fp32"]
    assert art.format == "onnx" and art.meta["validation"]["passed"]
    assert art.meta["validation"]["max_abs_logit_diff"] < 1e-3
    assert {"input_ids", "attention_mask"} <= set(art.meta["metadata"]["inputs"])


def test_graph_optimisation_reports_fusions(tiny_run):
    fusions = tiny_run.variants["onnx-fp32-opt"].meta["metadata"]["fusions"]
    assert fusions.get("Attention", 0) == 2 and fusions.get("SkipLayerNormalization", 0) >= 2


def test_quantize_int8_matmuls_and_embeddings(tiny_run):
    art = tiny_run.variants["onnx-int8-dynamic"]
    meta = art.meta["metadata"]
    assert art.precision == "int8" and meta["isa"] in stages.get("quantize").ISAS and meta["reason"]
    graph = onnx.load(str(art.onnx_path)).graph
    eight_bit = {t.name for t in graph.initializer if t.data_type in (onnx.TensorProto.INT8, onnx.TensorProto.UINT8)}
    assert "bert.embeddings.word_embeddings.weight_quantized" in eight_bit, "the embedding table must be quantised"
    assert sum("MatMul" in n and n.endswith("_quantized") for n in eight_bit) == 2 * 6  # 6 weight MatMuls a layer
    assert meta["quantized_nodes"]["MatMulInteger"] >= 12


def test_attention_matmuls_are_quantised_on_request(tiny_run, tmp_path):
    """The MatMuls of two activations (scores, context: 2 a layer) stay float unless asked for."""
    parent = tiny_run.variants["onnx-fp32"]
    stage = stages.get("quantize")
    config = stage.Config(attention_matmuls=True)
    art, _ = build(tmp_path / "q", parent, stage.NAME, config, run=lambda w: stage.run(parent, config, w))
    ops = [n.op_type for n in onnx.load(str(art.onnx_path)).graph.node]
    default = [n.op_type for n in onnx.load(str(tiny_run.variants["onnx-int8-dynamic"].onnx_path)).graph.node]
    assert ops.count("MatMulInteger") == default.count("MatMulInteger") + 2 * 2
    assert "MatMul" not in ops and default.count("MatMul") == 2 * 2


@pytest.mark.parametrize("isa", ["avx2", "avx512", "avx512_vnni", "avx_vnni", "arm64", "arm64-dotprod", "generic"])
def test_quantize_settings_follow_the_measured_table(isa):
    """`auto` pins the detected ISA; reduce_range follows the measured table unless the recipe sets it."""
    quantize = stages.get("quantize")
    assert quantize.resolve(quantize.Config(isa=isa)).reduce_range is quantize.REDUCE_RANGE[isa] is False
    assert quantize.resolve(quantize.Config(isa=isa, reduce_range=True)).reduce_range is True
    assert quantize.resolve(quantize.Config()).isa == cpu_info().isa
    if isa in ("avx2", "avx512"):
        assert "measured on AVX2" in quantize._REASONS[isa]
    # the preflight's ARM settings: per-channel weights; x86 keeps per tensor (and its variants' ids)
    assert quantize.resolve(quantize.Config(isa=isa)).per_channel is isa.startswith("arm64")
    assert quantize.resolve(quantize.Config(isa=isa, per_channel=False)).per_channel is False


def test_a_recipe_override_of_reduce_range_is_stated(tiny_run, tmp_path):
    quantize = stages.get("quantize")
    out = quantize.run(tiny_run.variants["onnx-fp32"], quantize.Config(isa="avx2", reduce_range=True), tmp_path)
    assert out.metadata["reduce_range"] is True and "(reduce_range=True set by the recipe)" in out.metadata["reason"]


def test_validation_rejects_a_wrong_fp32_model(tiny_run, tiny_bert):
    parent = tiny_run.variants["pytorch-fp32"]
    wrong = tiny_run.variants["onnx-int8-dynamic"]
    fake_fp32 = Artifact(path=wrong.path, meta={**wrong.meta, "precision": "fp32"})
    with pytest.raises(ValidationFailed, match="FP32 logits differ"):
        validate.against_parent(parent, fake_fp32, ["good movie", "bad film"] * 8, validate.Tolerance(atol=1e-9))


def test_stages_refuse_the_wrong_input_format(tiny_run, tmp_path):
    torch_art = tiny_run.variants["pytorch-fp32"]
    with pytest.raises(ArtifactError, match="needs an ONNX variant"):
        stages.get("quantize").run(torch_art, stages.get("quantize").Config(), tmp_path)
    with pytest.raises(ArtifactError, match="already int8"):
        stages.get("quantize").run(tiny_run.variants["onnx-int8-dynamic"], stages.get("quantize").Config(), tmp_path)


def test_unknown_stage_is_a_recipe_error():
    with pytest.raises(RecipeError, match="unknown stage 'prune-it'"):
        stages.get("prune-it")


def test_export_of_a_base_model_is_an_embedding_graph(tiny_bert, tmp_path):
    """A bare encoder is for sentence embeddings: it exports as Optimum's feature-extraction, token vectors out."""
    source = models.resolve(str(tiny_bert))
    assert source.task == "feature-extraction"
    built, _ = build(
        tmp_path / "x",
        source,
        "export",
        {},
        run=lambda w: stages.get("export").run(source, stages.get("export").Config(), w),
    )
    assert built.task == "feature-extraction" and built.meta["metadata"]["outputs"] == ["last_hidden_state"]


def test_export_of_a_model_no_task_takes_asks_for_finetuning(tiny_bert, tmp_path):
    from edgenlp.artifact import Artifact

    source = models.resolve(str(tiny_bert))
    stranger = Artifact(source.path, {**source.meta, "task": "fill-mask"})
    with pytest.raises(ArtifactError, match="fine-tune it for one of"):
        stages.get("export").run(stranger, stages.get("export").Config(), tmp_path / "y")


def test_runtime_classifier_agrees_with_pytorch(tiny_run):
    from edgenlp.bench.runners import PytorchRunner
    from edgenlp.runtime import TextClassifier

    clf = TextClassifier(tiny_run.variants["onnx-fp32"].path)
    texts = ["the movie was great", "awful boring plot", "ünïcödé ✓ \ufffd"]
    out = clf.classify(texts)
    torch_logits = PytorchRunner(tiny_run.variants["pytorch-fp32"].path, 1).logits(clf.tokenizer.encode(texts))
    np.testing.assert_allclose(clf.logits(clf.tokenizer.encode(texts)), torch_logits, atol=1e-4)
    expected = np.exp(torch_logits) / np.exp(torch_logits).sum(-1, keepdims=True)
    assert [o["label"] for o in out] == [["neg", "pos"][i] for i in torch_logits.argmax(-1)]
    np.testing.assert_allclose([o["score"] for o in out], expected.max(-1), atol=1e-4)


def test_size_counts_the_files_the_runner_loads_once(tmp_path, tiny_run):
    import shutil

    from edgenlp.artifact import loaded_model_files
    from edgenlp.model_facts import model_size_bytes

    ckpt = tmp_path / "ckpt"
    shutil.copytree(tiny_run.variants["pytorch-fp32"].path, ckpt)
    weights = (ckpt / "model.safetensors").stat().st_size
    (ckpt / "pytorch_model.bin").write_bytes(b"x" * 1000)  # a second copy of the weights
    (ckpt / "training_args.bin").write_bytes(b"x" * 100)
    assert model_size_bytes(ckpt) == weights
    onnx_dir = tmp_path / "onnx"
    shutil.copytree(tiny_run.variants["onnx-fp32"].path, onnx_dir)
    graph = (onnx_dir / "model.onnx").stat().st_size
    (onnx_dir / "model_quantized.onnx_data").write_bytes(b"x" * 5000)  # another model's external data
    assert model_size_bytes(onnx_dir / "model.onnx") == graph == model_size_bytes(onnx_dir)
    assert [p.name for p in loaded_model_files(onnx_dir)] == ["model.onnx"]


def test_size_includes_the_external_data_a_graph_names(tmp_path, tiny_run):
    from edgenlp.model_facts import model_size_bytes

    model = onnx.load(str(tiny_run.variants["onnx-fp32"].path / "model.onnx"))
    onnx.save_model(
        model,
        str(tmp_path / "model.onnx"),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location="weights.data",
        size_threshold=0,
    )
    total = (tmp_path / "model.onnx").stat().st_size + (tmp_path / "weights.data").stat().st_size
    assert model_size_bytes(tmp_path / "model.onnx") == total
