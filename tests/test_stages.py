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
from edgenlp.quantization import preflight
from edgenlp.quantization import tables as tables_module


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


def _logits(path, feed):
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    accepted = {i.name for i in session.get_inputs()}
    return session.run(None, {k: v for k, v in feed.items() if k in accepted})[0]


def _feed(seed: int, batch: int = 4, length: int = 12) -> dict:
    from conftest import VOCAB

    ids = np.random.default_rng(seed).integers(5, len(VOCAB), size=(batch, length))
    return {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}


def test_a_fused_graph_quantises_its_attention_weights_too(tiny_run, tmp_path):
    """Quantising MatMuls covers the packed Q/K/V weight of a fused Attention (QAttention): a fused parent
    used to keep those weights in float, so its INT8 child was bigger and slower than the unfused one's."""
    parent = tiny_run.variants["onnx-fp32-opt"]
    stage = stages.get("quantize")
    config = stage.Config(per_channel=True)
    art, _ = build(tmp_path / "q", parent, stage.NAME, config, run=lambda w: stage.run(parent, config, w))
    graph = onnx.load(str(art.onnx_path)).graph
    ops = [n.op_type for n in graph.node]
    assert ops.count("QAttention") == 2 and "Attention" not in ops
    float_weights = [t for t in graph.initializer if t.data_type == onnx.TensorProto.FLOAT and len(t.dims) == 2]
    assert not [t.name for t in float_weights if t.dims[0] * t.dims[1] >= 32 * 32], "every weight matrix is INT8"
    assert art.meta["metadata"]["quantized_nodes"]["QAttention"] == 2
    feed = _feed(0)
    assert np.abs(_logits(art.onnx_path, feed) - _logits(parent.onnx_path, feed)).max() < 0.2
    from edgenlp.quantization.calibration import quantisable_nodes

    nodes = onnx.load(str(parent.onnx_path)).graph.node
    attentions = [n.name for n in nodes if n.op_type == "Attention"]
    weight_matmuls = [n.name for n in nodes if n.op_type == "MatMul"]  # the fused graph's are all weight MatMuls
    # reading the mask does not put a fused Attention, or the MatMul after it, on the mask path
    assert set(quantisable_nodes(parent.onnx_path, ["MatMul", "Attention"])) == {*weight_matmuls, *attentions}
    first = attentions[0]
    kept = stage.Config(per_channel=True, nodes_to_exclude=[first])  # a fused attention can stay float by name
    art, _ = build(tmp_path / "kept", parent, stage.NAME, kept, run=lambda w: stage.run(parent, kept, w))
    ops = [n.op_type for n in onnx.load(str(art.onnx_path)).graph.node]
    assert ops.count("QAttention") == 1 and ops.count("Attention") == 1


def test_smoothing_a_fused_graph_folds_the_attention_output_into_v_and_stays_exact(tiny_run, tmp_path):
    """On a fused graph each Attention takes its input's scales like a MatMul, and the attention output's
    scales are absorbed by V's columns and bias instead of a Mul: the same logits with one Mul fewer a layer."""
    from edgenlp.quantization import smoothing

    path = tiny_run.variants["onnx-fp32-opt"].onnx_path
    model = onnx.load(str(path))
    groups = smoothing.weight_matmuls(model)
    attention_inputs = [x for x, nodes in groups.items() if any(n.op_type == "Attention" for n in nodes)]
    assert len(attention_inputs) == 2
    maxima = smoothing.activation_maxima(path, groups, [_feed(seed) for seed in range(3)])
    muls_before = [n.op_type for n in model.graph.node].count("Mul")
    done = smoothing.smooth(model, maxima, alpha=0.8)
    assert done.folded == 2 and done.inputs == len(groups) and done.matmuls == sum(map(len, groups.values()))
    assert [n.op_type for n in model.graph.node].count("Mul") == muls_before + done.inputs - done.folded
    assert done.scale_max > 1.01 or done.scale_min < 0.99, "the scales must move something for the test to mean it"
    onnx.save(model, str(tmp_path / "smoothed.onnx"))
    feed = _feed(7)
    np.testing.assert_allclose(_logits(tmp_path / "smoothed.onnx", feed), _logits(path, feed), atol=1e-4, rtol=1e-4)


def test_four_bit_embedding_tables_halve_their_bytes_and_keep_the_answers(tiny_run, tmp_path):
    """`embedding_bits: 4` stores the tables as 4-bit blocks unpacked by standard operators; the MatMuls
    stay as INT8 made them, and the graph keeps its opset."""
    from onnx import helper, numpy_helper

    from edgenlp.bench.runners import open_runner
    from edgenlp.bundle import build as build_bundle
    from edgenlp.runtime import TextTokenizer, load

    parent, int8 = tiny_run.variants["onnx-fp32"], tiny_run.variants["onnx-int8-dynamic"]
    stage = stages.get("quantize")
    config = stage.Config(embedding_bits=4, embedding_block_size=16, embedding_min_rows=1)
    art, _ = build(tmp_path / "q", parent, stage.NAME, config, run=lambda w: stage.run(parent, config, w))
    model = onnx.load(str(art.onnx_path))
    graph = model.graph
    ops = [n.op_type for n in graph.node]
    packed = art.meta["metadata"]["four_bit_tables"]
    assert len(packed) == 3 and any("word_embeddings" in t for t in packed)  # word, position, token type
    assert art.meta["metadata"]["embedding_bits"] == 4
    int8_model = onnx.load(str(int8.onnx_path))
    assert ops.count("MatMulInteger") == [n.op_type for n in int8_model.graph.node].count("MatMulInteger")
    assert "GatherBlockQuantized" not in ops and list(model.opset_import) == list(int8_model.opset_import)
    inits = {t.name: t for t in graph.initializer}
    assert not any(n.op_type == "Gather" and n.input[0] in packed for n in graph.node)  # no float table left
    assert not any(name in inits for name in packed)

    # the word table, read back by the graph's own nodes: what `Blocks` says, and every value within half
    # a step of its block (plus float16's rounding of the minimum and step)
    fp32 = next(
        numpy_helper.to_array(t)
        for t in onnx.load(str(parent.onnx_path)).graph.initializer
        if t.name == "bert.embeddings.word_embeddings.weight"
    )
    word = next(n for n in graph.node if n.op_type == "Gather" and n.input[0].startswith(packed[0]))
    unpack = [n for n in graph.node if n.name.startswith(word.name.rsplit("/", 1)[0] + "/")]
    reader = helper.make_model(
        helper.make_graph(
            unpack,
            "read",
            [helper.make_tensor_value_info(word.input[1], onnx.TensorProto.INT64, [1, None])],
            [helper.make_tensor_value_info(unpack[-1].output[0], onnx.TensorProto.FLOAT, None)],
            [inits[name] for n in unpack for name in n.input if name in inits],
        ),
        opset_imports=model.opset_import,
    )
    import onnxruntime as ort

    ids = np.arange(fp32.shape[0])[None]
    rows = ort.InferenceSession(reader.SerializeToString()).run(None, {word.input[1]: ids})[0][0]
    assert np.allclose(rows, tables_module.Blocks.of(fp32, 16).values(), atol=1e-7)
    blocks = fp32.reshape(fp32.shape[0], -1, 16)
    step = (blocks.max(-1, keepdims=True) - blocks.min(-1, keepdims=True)) / tables_module.LEVELS
    slack = 2e-3 * (np.abs(blocks).max(-1, keepdims=True) + step)  # float16 minimum and step
    error = np.abs(rows.reshape(blocks.shape) - blocks)
    assert rows.shape == fp32.shape and (error <= step / 2 + slack).all() and error.max() > 0
    table_bytes = {  # as stored: 4-bit values are packed two a byte
        name: sum(len(t.raw_data) for t in onnx.load(str(a.onnx_path)).graph.initializer if "word_embeddings" in t.name)
        for name, a in (("int8", int8), ("int4", art))
    }
    vocab, hidden = fp32.shape
    assert table_bytes["int8"] >= vocab * hidden  # a byte a value (and a scale)
    # half a byte a value, a float16 minimum and step a block, the width
    assert table_bytes["int4"] == vocab * hidden // 2 + vocab * (hidden // 16) * 2 * 2 + 8

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


def test_four_bit_tables_by_default_are_the_large_ones_and_none_large_enough_is_one_line(tiny_run, tmp_path):
    parent = tiny_run.variants["onnx-fp32"]
    stage = stages.get("quantize")
    model = onnx.load(str(parent.onnx_path))
    sizes = {
        n.name: next(t.dims[0] for t in model.graph.initializer if t.name == n.input[0])
        for n in model.graph.node
        if n.op_type == "Gather" and any(t.name == n.input[0] for t in model.graph.initializer)
    }
    chosen = tables_module.tables_to_pack(model, 16, None, [])
    assert chosen and all(sizes[n] >= max(sizes.values()) / 8 for n in chosen)
    assert not any("token_type" in n for n in chosen)  # 2 rows: stays INT8
    config = stage.Config(embedding_bits=4, embedding_block_size=16, embedding_min_rows=10_000)
    with pytest.raises(ArtifactError, match="gathers from no float table of at least 10000 rows"):
        stage.run(parent, config, tmp_path)
    # the INT8 variants' ids do not see the 4-bit settings
    assert "embedding_min_rows" not in stage.Config().model_dump()
    assert "embedding_min_rows" in stage.Config(embedding_bits=4).model_dump()


def test_unsigned_weights_are_stored_as_uint8_and_named_in_the_record(tiny_run, tmp_path):
    parent = tiny_run.variants["onnx-fp32"]
    stage = stages.get("quantize")
    config = stage.Config(weight_type="uint8", per_channel=True)
    art, _ = build(tmp_path / "q", parent, stage.NAME, config, run=lambda w: stage.run(parent, config, w))
    graph = onnx.load(str(art.onnx_path)).graph
    weights = {t.name: t.data_type for t in graph.initializer if t.name.endswith("_quantized")}
    assert (
        set(weights.values()) == {onnx.TensorProto.UINT8}
        and "bert.embeddings.word_embeddings.weight_quantized" in weights
    )
    assert sum("MatMul" in name for name in weights) >= 2 * 6
    meta = art.meta["metadata"]
    assert meta["weight_type"] == "uint8" and "exact" in meta["reason"]
    texts = ["a good film", "a bad plot, really bad"]
    assert validate.against_parent(parent, art, texts, validate.Tolerance(min_label_agreement=0.5))["passed"]
    # signed weights stay out of the dump, so variants built before the setting keep their ids
    assert (
        "weight_type" not in stage.Config().model_dump()
        and stage.Config(weight_type="uint8").model_dump()["weight_type"] == "uint8"
    )


def _matmul_integer(a: np.ndarray, b: np.ndarray, b_zero: np.ndarray) -> np.ndarray:
    import onnxruntime as ort
    from onnx import helper

    from edgenlp.runtime import session_options

    dtype = helper.np_dtype_to_tensor_dtype(b.dtype)
    graph = helper.make_graph(
        [helper.make_node("MatMulInteger", ["a", "b", "a_zero", "b_zero"], ["y"])],
        "mmi",
        [helper.make_tensor_value_info("a", onnx.TensorProto.UINT8, list(a.shape))],
        [helper.make_tensor_value_info("y", onnx.TensorProto.INT32, None)],
        [
            helper.make_tensor("b", dtype, b.shape, b.tobytes(), raw=True),
            helper.make_tensor("a_zero", onnx.TensorProto.UINT8, [], [0]),
            helper.make_tensor("b_zero", dtype, b_zero.shape, b_zero.tobytes(), raw=True),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    session = ort.InferenceSession(model.SerializeToString(), session_options(1), providers=["CPUExecutionProvider"])
    return session.run(None, {"a": a})[0]


def test_unsigned_weights_multiply_exactly_where_signed_ones_saturate_without_vnni():
    """Why `weight_type: uint8` exists: u8 x u8 is exact on this CPU whatever it is; u8 x s8 is exact with VNNI
    and, without it, sums pairs of products in 16 bits, so large activations times large weights saturate."""
    rng = np.random.default_rng(0)
    a = rng.integers(200, 256, size=(4, 64), dtype=np.uint8)  # post-GELU activations near the top of the range
    signed = rng.choice(np.array([-128, -127, 126, 127], dtype=np.int8), size=(64, 16))
    exact = a.astype(np.int64) @ signed.astype(np.int64)
    unsigned, zero = (signed.astype(np.int16) + 128).astype(np.uint8), np.full(16, 128, dtype=np.uint8)
    assert np.array_equal(_matmul_integer(a, unsigned, zero), exact)
    with_signed = _matmul_integer(a, signed, np.zeros(16, dtype=np.int8))
    if cpu_info().isa in ("avx2", "avx512"):
        assert not np.array_equal(with_signed, exact)
    elif cpu_info().isa in ("avx512_vnni", "avx_vnni"):
        assert np.array_equal(with_signed, exact)


@pytest.mark.parametrize("isa", ["avx2", "avx512", "avx512_vnni", "avx_vnni", "arm64", "arm64-dotprod", "generic"])
def test_quantize_settings_follow_the_measured_table(isa):
    """`auto` pins the detected ISA; reduce_range follows the measured table unless the recipe sets it."""
    quantize = stages.get("quantize")
    assert quantize.resolve(quantize.Config(isa=isa)).reduce_range is quantize.REDUCE_RANGE[isa] is False
    assert quantize.resolve(quantize.Config(isa=isa, reduce_range=True)).reduce_range is True
    assert quantize.resolve(quantize.Config()).isa == cpu_info().isa
    if isa in ("avx2", "avx512"):
        assert "measured on AVX2" in quantize._REASONS[isa]
    # unsigned weights are advised where u8 x s8 saturates, and warned against where nothing saturates
    unsigned = preflight.advise(isa, weight_type="uint8")
    saturates = isa in ("avx2", "avx512")
    assert any("uint8 weights" in line for line in unsigned["suits"]) is saturates
    assert any("uint8 weights" in line for line in unsigned["warnings"]) is not saturates
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
