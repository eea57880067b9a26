"""GPT-2 checkpoint -> an FP32 ONNX decoder written with onnxruntime's fused operators and an in-place KV cache.

Optimum's export traces PyTorch: a GPT-2 block becomes dozens of small nodes (reshapes, transposes,
the mask arithmetic, a Concat that copies the whole cache into a new `present` every token), and a
decoding step spends much of its time outside the weight reads that bound it. This stage writes the
graph from the checkpoint's weights instead, nine nodes a block:

    SkipLayerNormalization (residual + bias + LayerNorm) -> MatMul + Add (QKV)
    -> GroupQueryAttention (causal, KV cache) -> MatMul (out) -> SkipLayerNormalization
    -> MatMul -> FastGelu (bias + tanh GELU) -> MatMul

`GroupQueryAttention` reads `past_key_values.N.key/value` as buffers of the model's whole context
and writes each new position into them; bound to the same memory as `present.N.key/value`
(onnxruntime's IO binding: `runtime.generation.CausalLM` does it), a step copies no cache at all.
The valid length is an input (`seqlens_k` = length - 1, `total_sequence_length`), so cutting a
cache back (prompt lookup) costs nothing. The graph keeps `input_ids`, `position_ids`,
`logits_to_keep` and the `logits` output; `quantize` and `quantize-int4` take it like any export.
Tools that only know Optimum's layout (transformers.js, Optimum's wrappers) need the `export`
variant: its bundle is the one to ship to a browser.

Validated like an export: logits against the PyTorch parent, and greedy tokens with the cache.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .. import architectures
from ..artifact import Artifact, StageOutput, copy_support_files
from ..errors import ArtifactError
from ..runtime.generation import LOGITS_TO_KEEP
from ..trust import pretrained_options
from . import StageConfig

NAME = "export-fused"
LIBRARIES = ("torch", "transformers", "onnx")
OPSET = 17
GELU_OPS = {"gelu_new": "FastGelu", "gelu_pytorch_tanh": "FastGelu", "gelu_fast": "FastGelu", "gelu": "BiasGelu"}
"""transformers' activation names -> the com.microsoft operator that computes it with the bias added."""
INPUTS = ("input_ids", "position_ids", "seqlens_k", "total_sequence_length")
"""What the fused graph reads besides the cache; `seqlens_k` marks the in-place layout to the runtime."""
NODES_PER_BLOCK = 9
EXTERNAL_DATA_BYTES = 1 << 30
"""Weights past this size go to `model.onnx_data` (protobuf caps one file at 2 GiB)."""


class Config(StageConfig):
    pass


def check_parent(parent: Artifact) -> dict:
    """The parent's config, once it is known to be a GPT-2 family checkpoint this stage can write."""
    if parent.format != "pytorch" or parent.task != "text-generation":
        raise ArtifactError(
            f"export-fused writes a GPT-2 decoder from its PyTorch checkpoint, but {parent.path} is a "
            f"{parent.format} {parent.task} model: use it on a text-generation checkpoint, or the stage export"
        )
    config = parent.config()
    family = architectures.family_of(config.get("model_type"))
    if family is None or family.name != "gpt2":
        raise ArtifactError(
            f"export-fused knows the GPT-2 family only, and {parent.path} is a {config.get('model_type')!r} "
            "model: use the stage export"
        )
    if config.get("scale_attn_by_inverse_layer_idx"):
        raise ArtifactError(
            f"{parent.path} scales attention by the layer index, which GroupQueryAttention cannot: use the stage export"
        )
    heads, head_size = layer_heads(config)
    if head_size % 8:
        raise ArtifactError(
            f"{parent.path} has attention heads of {head_size} values; onnxruntime's GroupQueryAttention "
            "needs a multiple of 8: use the stage export"
        )
    activation = config.get("activation_function", "gelu_new")
    if activation not in GELU_OPS:
        raise ArtifactError(
            f"{parent.path} uses the activation {activation!r}; export-fused writes {', '.join(GELU_OPS)}: "
            "use the stage export"
        )
    return config


def run(parent: Artifact, config: Config, workdir: Path) -> StageOutput:
    model_config = check_parent(parent)
    import torch
    from transformers import AutoModelForCausalLM

    architectures.register()
    model = AutoModelForCausalLM.from_pretrained(
        str(parent.path), dtype=torch.float32, **pretrained_options(parent.path)
    )
    weights = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    graph = build(weights, model_config)
    write(graph, workdir / "model.onnx")
    model.config.save_pretrained(str(workdir))
    copy_support_files(parent.path, workdir)
    return StageOutput(
        format="onnx",
        task=parent.task,
        precision="fp32",
        metadata={
            "exporter": "edgenlp fused",
            "opset": OPSET,
            "kv_cache": "in place (GroupQueryAttention, shared past/present buffers)",
            "nodes_per_block": NODES_PER_BLOCK,
            "inputs": [*INPUTS, LOGITS_TO_KEEP, "past_key_values.N.key/value"],
        },
    )


def layer_heads(config: dict) -> tuple[list[int], int]:
    """(heads of each block, head size): a pruned GPT-2 lists them per block."""
    layers, hidden = int(config["n_layer"]), int(config["n_embd"])
    heads = config.get("layer_heads") or [int(config["n_head"])] * layers
    return [int(h) for h in heads], int(config.get("head_dim") or hidden // int(config["n_head"]))


def build(weights: dict[str, np.ndarray], config: dict):
    """The fused decoder graph (an `onnx.ModelProto`) from a GPT-2 state dict and its config."""
    from onnx import TensorProto, helper, numpy_helper

    heads, head_size = layer_heads(config)
    epsilon = float(config.get("layer_norm_epsilon", 1e-5))
    gelu = GELU_OPS[config.get("activation_function", "gelu_new")]
    scale = 1.0 / np.sqrt(head_size) if config.get("scale_attn_weights", True) else 1.0
    prefix = "transformer." if "transformer.wte.weight" in weights else ""
    nodes, initializers = [], []

    def weight(name: str, array: np.ndarray | None = None) -> str:
        value = weights[prefix + name] if array is None else array
        initializers.append(numpy_helper.from_array(np.ascontiguousarray(value, dtype=np.float32), name))
        return name

    def node(op: str, inputs: list[str], outputs: list[str], name: str, **attributes) -> None:
        domain = "com.microsoft" if op in ("SkipLayerNormalization", "GroupQueryAttention", *GELU_OPS.values()) else ""
        nodes.append(helper.make_node(op, inputs, outputs, name=name, domain=domain, **attributes))

    node("Gather", [weight("wte.weight"), "input_ids"], ["/embed/tokens"], "/embed/tokens/Gather")
    node("Gather", [weight("wpe.weight"), "position_ids"], ["/embed/positions"], "/embed/positions/Gather")
    # the first block's LayerNorm adds the two embeddings (its skip input) and hands the sum on
    branch, residual, bias = "/embed/tokens", "/embed/positions", None
    inputs = [
        helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "sequence"]),
        helper.make_tensor_value_info("position_ids", TensorProto.INT64, ["batch", "sequence"]),
        helper.make_tensor_value_info("seqlens_k", TensorProto.INT32, ["batch"]),
        helper.make_tensor_value_info("total_sequence_length", TensorProto.INT32, []),
    ]
    outputs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", "sequence", "vocab"])]
    for i, n_heads in enumerate(heads):
        b = f"h.{i}"

        def skip_norm(norm: str, into: str, out_sum: str, branch: str, residual: str, bias: str | None, b=b) -> None:
            node(
                "SkipLayerNormalization",
                [branch, residual, weight(f"{b}.{norm}.weight"), weight(f"{b}.{norm}.bias"), *([bias] if bias else [])],
                [into, "", "", out_sum],
                f"/{b}/{norm}/SkipLayerNorm",
                epsilon=epsilon,
            )

        skip_norm("ln_1", f"/{b}/ln_1", f"/{b}/residual_in", branch, residual, bias)
        residual = f"/{b}/residual_in"
        node("MatMul", [f"/{b}/ln_1", weight(f"{b}.attn.c_attn.weight")], [f"/{b}/qkv_mm"], f"/{b}/attn/qkv/MatMul")
        node("Add", [f"/{b}/qkv_mm", weight(f"{b}.attn.c_attn.bias")], [f"/{b}/qkv"], f"/{b}/attn/qkv/Add")
        past = [f"past_key_values.{i}.key", f"past_key_values.{i}.value"]
        present = [f"present.{i}.key", f"present.{i}.value"]
        node(
            "GroupQueryAttention",
            [f"/{b}/qkv", "", "", *past, "seqlens_k", "total_sequence_length"],
            [f"/{b}/attn_out", *present],
            f"/{b}/attn/GroupQueryAttention",
            num_heads=n_heads,
            kv_num_heads=n_heads,
            scale=float(scale),
        )
        for name in past:
            inputs.append(
                helper.make_tensor_value_info(name, TensorProto.FLOAT, ["batch", n_heads, "cache", head_size])
            )
        for name in present:
            outputs.append(
                helper.make_tensor_value_info(name, TensorProto.FLOAT, ["batch", n_heads, "cache", head_size])
            )
        node("MatMul", [f"/{b}/attn_out", weight(f"{b}.attn.c_proj.weight")], [f"/{b}/attn_proj"], f"/{b}/attn/MatMul")
        branch, bias = f"/{b}/attn_proj", weight(f"{b}.attn.c_proj.bias")
        skip_norm("ln_2", f"/{b}/ln_2", f"/{b}/residual_mid", branch, residual, bias)
        residual = f"/{b}/residual_mid"
        node("MatMul", [f"/{b}/ln_2", weight(f"{b}.mlp.c_fc.weight")], [f"/{b}/fc"], f"/{b}/mlp/fc/MatMul")
        node(gelu, [f"/{b}/fc", weight(f"{b}.mlp.c_fc.bias")], [f"/{b}/gelu"], f"/{b}/mlp/{gelu}")
        node("MatMul", [f"/{b}/gelu", weight(f"{b}.mlp.c_proj.weight")], [f"/{b}/mlp_out"], f"/{b}/mlp/proj/MatMul")
        branch, bias = f"/{b}/mlp_out", weight(f"{b}.mlp.c_proj.bias")
    node(
        "SkipLayerNormalization",
        [branch, residual, weight("ln_f.weight"), weight("ln_f.bias"), bias],
        ["/ln_f"],
        "/ln_f/SkipLayerNorm",
        epsilon=epsilon,
    )
    # the head over the last `logits_to_keep` positions only (0: all): a required input here, since
    # onnxruntime's IO binding cannot override an initializer the way Optimum's layout lets `run` do
    inputs.append(helper.make_tensor_value_info(LOGITS_TO_KEEP, TensorProto.INT64, [1]))
    node("Neg", [LOGITS_TO_KEEP], ["/lm_head/start"], "/lm_head/Neg")
    node(
        "Slice",
        ["/ln_f", "/lm_head/start", "/lm_head/end", "/lm_head/axis"],
        ["/lm_head/kept"],
        "/lm_head/Slice",
    )
    initializers.append(numpy_helper.from_array(np.array([np.iinfo(np.int64).max]), "/lm_head/end"))
    initializers.append(numpy_helper.from_array(np.array([1], np.int64), "/lm_head/axis"))
    head = weights.get("lm_head.weight", weights[prefix + "wte.weight"])
    node("MatMul", ["/lm_head/kept", weight("lm_head.weight.T", head.T)], ["logits"], "/lm_head/MatMul")
    graph = helper.make_graph(nodes, "edgenlp-fused-gpt2", inputs, outputs, initializers)
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET), helper.make_opsetid("com.microsoft", 1)]
    )
    model.producer_name = "edgenlp"
    return model


def write(model, path: Path) -> None:
    import onnx

    large = sum(t.ByteSize() for t in model.graph.initializer) > EXTERNAL_DATA_BYTES
    onnx.save(model, str(path), save_as_external_data=large, location=f"{path.name}_data" if large else None)
