"""Stage export-fused: a GPT-2 written with onnxruntime's fused operators, its KV cache kept in place."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest

from edgenlp.errors import ArtifactError


@pytest.fixture(scope="module")
def fused_run(tiny_gpt2_run, tiny_gpt2_recipe, tmp_path_factory):
    """The trained tiny GPT-2 of `tiny_gpt2_run` as the model, fused, then quantised like an export."""
    from edgenlp import pipeline, recipe

    spec = {
        **tiny_gpt2_recipe,
        "name": "tiny-gpt2-fused",
        "model": str(tiny_gpt2_run.variants["pytorch-fp32"].path),
        "variants": [
            {"name": "fused-fp32", "stage": "export-fused"},
            {"name": "fused-int4", "stage": "quantize-int4", "parent": "fused-fp32", "config": {"block_size": 16}},
            {"name": "fused-int8", "stage": "quantize", "parent": "fused-fp32"},
            {
                "name": "fused-int4-int8-prefill",
                "stage": "split-prefill",
                "parent": "fused-fp32",
                "config": {"decode": {"stage": "quantize-int4", "config": {"block_size": 16}}},
            },
            {"name": "fused-int4-kv8", "stage": "quantize-kv", "parent": "fused-int4"},
            {"name": "fused-split-kv8", "stage": "quantize-kv", "parent": "fused-int4-int8-prefill"},
        ],
        "bench": {**tiny_gpt2_recipe["bench"], "reference": "fused-fp32"},
    }
    return pipeline.run(recipe.parse(spec), tmp_path_factory.mktemp("fused-run"))


def _ops(path) -> Counter:
    import onnx

    return Counter(n.op_type for n in onnx.load(str(path / "model.onnx"), load_external_data=False).graph.node)


def test_the_fused_graph_is_nine_nodes_a_block_and_matches_pytorch(fused_run, tiny_gpt2_run):
    from edgenlp.bench.runners import PytorchCausalLM
    from edgenlp.runtime.generation import CausalLM

    variant = fused_run.variants["fused-fp32"]
    ops = _ops(variant.path)
    layers = 2
    assert ops["GroupQueryAttention"] == ops["FastGelu"] == layers
    assert ops["SkipLayerNormalization"] == 2 * layers + 1 and ops["MatMul"] == 4 * layers + 1
    assert (
        variant.meta["validation"]["check"] == "greedy+logits" and variant.meta["validation"]["greedy_identical"] == 1
    )
    fused = CausalLM(variant.path)
    assert fused.in_place
    torch_model = PytorchCausalLM(tiny_gpt2_run.variants["pytorch-fp32"].path, 1)
    optimum = CausalLM(tiny_gpt2_run.variants["onnx-fp32"].path)
    ids = np.asarray([fused.encode("the movie was great and the acting was good")], dtype=np.int64)
    np.testing.assert_allclose(fused.step(ids, None)[0], torch_model.step(ids, None)[0], atol=1e-4)
    np.testing.assert_allclose(fused.step(ids, None)[0], optimum.step(ids, None)[0], atol=1e-4)
    prompt = "the plot was fun and"
    assert fused.generate(prompt, 20).token_ids == optimum.generate(prompt, 20).token_ids


def test_the_cache_stays_in_place_and_equals_a_copied_cache_exactly(fused_run):
    """Every step writes into the same buffers (no new cache memory per token), and gives exactly the
    logits of the same graph run with its cache copied in and out as plain arrays."""
    from edgenlp.runtime.generation import CausalLM

    model = CausalLM(fused_run.variants["fused-fp32"].path)
    ids = model.encode("the movie was great and the acting was good. the film")
    copied = [np.zeros((1, h, model.context, s), np.float32) for h, s in model._past_shapes]
    cache, buffers, done = None, None, 0
    for chunk in (ids[:6], *([t] for t in ids[6:])):
        chunk = np.asarray([chunk], dtype=np.int64)
        logits, cache = model.step(chunk, cache)
        buffers = buffers or [b.data_ptr() for b in cache.buffers]
        assert [b.data_ptr() for b in cache.buffers] == buffers
        feed = model._feed_in_place(chunk, done, last_only=False) | dict(zip(model.past_names, copied))
        outputs = model.model.run_outputs(["logits", *model.present_names], feed)
        np.testing.assert_array_equal(logits, outputs[0])
        copied, done = outputs[1:], done + chunk.shape[1]
        assert cache.length == done
    for buffer, array in zip(cache.buffers, copied):
        np.testing.assert_array_equal(buffer.numpy()[:, :, :done], array[:, :, :done])


def test_quantised_and_split_fused_variants_validate_and_are_measured(fused_run):
    from edgenlp.runtime.generation import CausalLM

    int4, int8 = fused_run.variants["fused-int4"], fused_run.variants["fused-int8"]
    assert _ops(int4.path)["MatMulNBits"] > 0 and _ops(int4.path)["GroupQueryAttention"] == 2
    assert _ops(int8.path)["MatMulInteger"] > 0
    split = fused_run.variants["fused-int4-int8-prefill"]
    model = CausalLM(split.path)
    assert model.in_place and model.prefill is not None
    assert model.generate("the movie was", 10).token_ids  # prompt through INT8, tokens through INT4, one cache
    by_name = {v["name"]: v for v in fused_run.results["variants"]}
    for name in ("fused-fp32", "fused-int4", "fused-int8", "fused-int4-int8-prefill"):
        assert by_name[name]["latency_ms"]["gen-1t"]["decode"]["n"] > 0 and by_name[name]["metrics"]["perplexity"] > 1


def test_prompt_lookup_on_the_in_place_cache_equals_greedy(fused_run):
    from edgenlp.runtime.generation import CausalLM, PromptLookup

    model = CausalLM(fused_run.variants["fused-fp32"].path)
    prompt = "the movie was great and the acting was good. the movie was great and the"
    assert (
        model.generate(prompt, 16, prompt_lookup=PromptLookup(4, 2)).token_ids == model.generate(prompt, 16).token_ids
    )


def test_export_fused_refusals(tiny_run, tiny_gpt2_run, tmp_path):
    from edgenlp.stages import export_fused

    with pytest.raises(ArtifactError, match="GPT-2 decoder from its PyTorch checkpoint"):
        export_fused.check_parent(tiny_run.variants["pytorch-fp32"])
    with pytest.raises(ArtifactError, match="GPT-2 decoder from its PyTorch checkpoint"):
        export_fused.check_parent(tiny_gpt2_run.variants["onnx-fp32"])
    parent = tiny_gpt2_run.variants["pytorch-fp32"]
    config = parent.config()
    for change, message in (
        ({"n_embd": 36, "n_head": 3}, "multiple of 8"),
        ({"activation_function": "relu"}, "activation 'relu'"),
        ({"scale_attn_by_inverse_layer_idx": True}, "layer index"),
    ):

        class Changed:
            path, format, task = parent.path, parent.format, parent.task

            def config(self, change=change):
                return {**config, **change}

        with pytest.raises(ArtifactError, match=message):
            export_fused.check_parent(Changed())


def test_openvino_refuses_a_graph_of_onnxruntime_operators(fused_run):
    from edgenlp.stages import openvino

    with pytest.raises(ArtifactError, match=r"onnxruntime's own operators \(FastGelu, GroupQueryAttention"):
        openvino.check_parent(fused_run.variants["fused-fp32"])


def test_a_quantised_embedding_table_is_not_counted_as_read_each_token(fused_run):
    """`decode_weight_bytes` leaves out tables only looked up by row (GatherBlockQuantized data and scales)."""
    import onnx
    from onnx import numpy_helper

    from edgenlp.model_facts import decode_weight_bytes

    path = fused_run.variants["fused-int4"].path
    graph = onnx.load(str(path / "model.onnx")).graph
    sizes = {t.name: numpy_helper.to_array(t).nbytes for t in graph.initializer}
    tables = {n.input[0] for n in graph.node if n.op_type == "GatherBlockQuantized"}
    assert tables, "the INT4 stage quantises the embedding tables"
    used_elsewhere = {i for n in graph.node if n.op_type != "GatherBlockQuantized" for i in n.input}
    only_gathered = {n for n in tables if n not in used_elsewhere}
    assert only_gathered and decode_weight_bytes(path) <= sum(sizes.values()) - sum(sizes[n] for n in only_gathered)


def test_a_fused_bundle_says_its_cache_is_in_place_and_generates_like_the_variant(fused_run, tmp_path):
    """The manifest describes the in-place layout and offers no transformers.js or Optimum loader for it;
    edgenlp's runtime loads it with the cache in place and generates what the variant generates."""
    from edgenlp.bundle import build
    from edgenlp.runtime import load
    from edgenlp.runtime.generation import CausalLM

    variant = fused_run.variants["fused-int4"]
    folder = build(variant.path, tmp_path / "fused")
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["kv_cache"]["layout"].startswith("in place") and "seqlens_k" in manifest["kv_cache"]["layout"]
    assert "transformers.js" not in manifest["layouts"] and "optimum" not in manifest["layouts"]
    bundle = load(folder)
    assert bundle.generate("the movie was", max_new_tokens=6).token_ids == (
        CausalLM(variant.path).generate("the movie was", max_new_tokens=6).token_ids
    )


def test_an_int8_kv_cache_holds_a_quarter_of_the_bytes_and_keeps_the_parent_s_tokens(fused_run):
    from edgenlp.model_facts import cache_bytes_per_position
    from edgenlp.runtime.generation import CausalLM

    parent, child = fused_run.variants["fused-int4"], fused_run.variants["fused-int4-kv8"]
    model = CausalLM(child.path)
    cache = model.new_cache()
    assert model.in_place and {b.numpy().dtype for b in cache.buffers} == {np.dtype(np.int8)}
    assert sum(b.numpy().nbytes for b in cache.buffers) * 4 == sum(
        b.numpy().nbytes for b in CausalLM(parent.path).new_cache().buffers
    )
    assert cache_bytes_per_position(child.path) * 4 == cache_bytes_per_position(parent.path)
    assert child.meta["metadata"]["kv_cache"].startswith("int8") and child.meta["metadata"]["block_size"] == 16
    validation = child.meta["validation"]
    assert validation["check"] == "top1_agreement" and validation["top1_agreement"] >= 0.95, validation
    prompt = "the movie was great and the acting was"
    assert model.generate(prompt, 12).token_ids == CausalLM(parent.path).generate(prompt, 12).token_ids
    ids = model.encode(prompt)
    int8_logits = model.step(np.asarray([ids], dtype=np.int64), None)[0]
    float_logits = CausalLM(parent.path).step(np.asarray([ids], dtype=np.int64), None)[0]
    assert 0 < np.abs(int8_logits - float_logits).max() < 0.5  # the cache is int8, and close
    by_name = {v["name"]: v for v in fused_run.results["variants"]}
    profile = by_name["fused-int4-kv8"]["profiles"]["gen-1t"]
    assert profile["decode_bytes_a_token"] == profile["decode_weight_bytes"] + profile["decode_cache_bytes"]


def test_an_int8_kv_cache_bundle_says_so_and_generates_like_its_variant(fused_run, tmp_path):
    from edgenlp.bundle import build
    from edgenlp.runtime import load
    from edgenlp.runtime.generation import CausalLM

    variant = fused_run.variants["fused-int4-kv8"]
    manifest = json.loads((build(variant.path, tmp_path / "kv8") / "manifest.json").read_text())
    assert manifest["kv_cache"]["dtype"] == "int8" and "INT8 KV cache" in manifest["onnxruntime"]["because"]
    assert load(tmp_path / "kv8").generate("the movie was", max_new_tokens=6).token_ids == (
        CausalLM(variant.path).generate("the movie was", max_new_tokens=6).token_ids
    )


def test_an_int8_kv_cache_is_shared_by_the_prefill_and_decode_graphs(fused_run):
    import onnx

    from edgenlp.runtime.generation import PREFILL_GRAPH, CausalLM

    variant = fused_run.variants["fused-split-kv8"]
    for graph in ("model.onnx", PREFILL_GRAPH):
        inputs = onnx.load(str(variant.path / graph), load_external_data=False).graph.input
        assert {i.type.tensor_type.elem_type for i in inputs if i.name.startswith("past_key_values.")} == {
            onnx.TensorProto.INT8
        }
    model = CausalLM(variant.path)
    assert model.prefill is not None and len(model.generate("the movie was", 8).token_ids) == 8


def test_quantize_kv_refusals(fused_run, tiny_gpt2_run):
    from edgenlp.stages import quantize_kv

    with pytest.raises(ArtifactError, match="quantise its weights first"):
        quantize_kv.check_parent(fused_run.variants["fused-fp32"])
    with pytest.raises(ArtifactError, match="from the stage export-fused"):
        quantize_kv.check_parent(tiny_gpt2_run.variants["onnx-int8"])
    with pytest.raises(ArtifactError, match="shrinks a decoder's KV cache"):
        quantize_kv.check_parent(tiny_gpt2_run.variants["pytorch-fp32"])
