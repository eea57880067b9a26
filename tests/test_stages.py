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


def test_four_bit_embedding_tables_halve_their_bytes_and_keep_the_answers(tiny_run, tmp_path):
    """`embedding_bits: 4` stores every table as 4-bit blocks; the MatMuls stay as INT8 made them."""
    from onnx import helper, numpy_helper

    from edgenlp.bench.runners import open_runner
    from edgenlp.bundle import build as build_bundle
    from edgenlp.runtime import TextTokenizer, load

    parent, int8 = tiny_run.variants["onnx-fp32"], tiny_run.variants["onnx-int8-dynamic"]
    stage = stages.get("quantize")
    config = stage.Config(embedding_bits=4, embedding_block_size=16)
    art, _ = build(tmp_path / "q", parent, stage.NAME, config, run=lambda w: stage.run(parent, config, w))
    graph = onnx.load(str(art.onnx_path)).graph
    ops = [n.op_type for n in graph.node]
    assert ops.count("GatherBlockQuantized") == 3  # word, position and token-type tables
    assert art.meta["metadata"]["quantized_nodes"]["GatherBlockQuantized"] == 3
    assert art.meta["metadata"]["embedding_bits"] == 4
    int8_ops = [n.op_type for n in onnx.load(str(int8.onnx_path)).graph.node]
    assert ops.count("MatMulInteger") == int8_ops.count("MatMulInteger")

    # the word table, read back through onnxruntime's own kernel: every value within one step of its
    # block's scale (the block's largest magnitude over 8: rounding costs half a step, and a positive
    # extreme, clipped at +7, a whole one)
    node = next(n for n in graph.node if n.op_type == "GatherBlockQuantized" and "word_embeddings" in n.input[0])
    inits = {t.name: t for t in graph.initializer}
    fp32 = next(
        numpy_helper.to_array(t)
        for t in onnx.load(str(parent.onnx_path)).graph.initializer
        if t.name == "bert.embeddings.word_embeddings.weight"
    )
    reader = helper.make_model(
        helper.make_graph(
            [
                helper.make_node(
                    node.op_type,
                    list(node.input[:1]) + ["ids"] + list(node.input[2:]),
                    ["rows"],
                    domain=node.domain,
                    **{a.name: helper.get_attribute_value(a) for a in node.attribute},
                )
            ],
            "read",
            [helper.make_tensor_value_info("ids", onnx.TensorProto.INT64, [None])],
            [helper.make_tensor_value_info("rows", onnx.TensorProto.FLOAT, None)],
            [inits[name] for name in node.input if name in inits],
        ),
        opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)],
    )
    import onnxruntime as ort

    rows = ort.InferenceSession(reader.SerializeToString()).run(None, {"ids": np.arange(fp32.shape[0])})[0]
    blocks = np.abs(fp32).reshape(fp32.shape[0], -1, 16).max(-1, keepdims=True)
    error = np.abs(rows - fp32).reshape(blocks.shape[0], -1, 16)
    assert rows.shape == fp32.shape and (error <= blocks / 8 * 1.001 + 1e-7).all() and error.max() > 0
    table_bytes = {  # as stored: 4-bit values are packed two a byte
        name: sum(len(t.raw_data) for t in onnx.load(str(a.onnx_path)).graph.initializer if "word_embeddings" in t.name)
        for name, a in (("int8", int8), ("int4", art))
    }
    vocab, hidden = fp32.shape
    assert table_bytes["int8"] >= vocab * hidden  # a byte a value (and a scale)
    assert table_bytes["int4"] == vocab * hidden // 2 + vocab * (hidden // 16) * 4  # half a byte, a float per block

    # the tiny model's own INT8 is held to half the labels (conftest's recipe); so is this one
    texts = ["good movie", "bad film", "a fine and great day", "boring and bad"] * 4
    found = validate.against_parent(parent, art, texts, validate.Tolerance(min_label_agreement=0.5))
    assert found["passed"] and found["label_agreement"] >= 0.5
    # the bundle runs the same file: the same labels, text by text (dynamic INT8 scales per batch)
    runner, tokenizer = open_runner(art.path, "onnx", threads=1), TextTokenizer(art.path)
    labels = art.labels()
    expected = [labels[int(runner.logits(tokenizer.encode([text])).argmax(-1)[0])] for text in texts]
    bundle = load(build_bundle(art.path, tmp_path / "bundle"))
    assert [p["label"] for p in bundle.classify(texts, batch_size=1)] == expected


def test_four_bit_tables_without_gather_in_op_types_is_refused_in_one_line():
    with pytest.raises(ValueError, match="embedding_bits 4 quantises the embedding tables: add Gather to op_types"):
        stages.get("quantize").Config(embedding_bits=4, op_types=["MatMul"])


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
