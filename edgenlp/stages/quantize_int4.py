"""FP32 ONNX -> INT4 weight-only ONNX (`MatMulNBits`), blockwise, for decoders bound by memory bandwidth.

Decoding one token reads every weight once, so bytes per weight set the speed limit. Weights are
stored as 4-bit integers in blocks of `block_size` values with one scale each; activations stay
float. `accuracy_level` 4 lets onnxruntime compute the products in int8 (quantising activations per
block on the fly), 0 dequantises to float first.

GPT-2's exporter writes its `Conv1D` projections as `Gemm`, which onnxruntime's 4-bit quantiser
skips; they are rewritten to the equivalent `MatMul` + `Add` first, so no projection is missed.
Algorithms: `rtn` (round to nearest per block: onnxruntime's default quantiser) and `hqq`
(half-quadratic, data-free: onnxruntime's HQQ quantiser, which needs torch). GPTQ needs Intel
Neural Compressor and calibration data, which edgenlp does not pull in.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from ..artifact import Artifact, StageOutput, copy_support_files
from ..errors import ArtifactError
from . import StageConfig

NAME = "quantize-int4"
LIBRARIES = ("onnx", "onnxruntime", "onnx-ir", "torch")


class Config(StageConfig):
    block_size: Literal[16, 32, 64, 128, 256] = 32
    algorithm: Literal["rtn", "hqq"] = "rtn"
    symmetric: bool = True
    accuracy_level: Literal[0, 1, 2, 3, 4] = 4
    """onnxruntime's compute type for MatMulNBits: 0 unset (float), 4 int8 (fastest on x86 with AVX2/VNNI)."""
    quantize_lm_head: bool = True
    """The output projection over the vocabulary (the largest single weight in a small GPT-2)."""
    quantize_embeddings: bool = True
    """Token and position tables as 4-bit blocks (`GatherBlockQuantized`). The exporter stores GPT-2's
    tied embedding twice (the table and the LM head's transposed copy), so both copies are shrunk."""
    nodes_to_exclude: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _hqq_has_no_tables(self) -> Config:
        if self.algorithm == "hqq" and self.quantize_embeddings:
            raise ValueError(
                "algorithm hqq cannot quantise embedding tables (onnxruntime's HQQ has no Gather "
                "support): set quantize_embeddings: false, or use algorithm rtn"
            )
        return self


def gemm_to_matmul(model) -> int:
    """Rewrite `Gemm(A, B, C)` with constant B (alpha = beta = 1, A not transposed) as `MatMul(A, B) + C`.

    A transposed B is stored transposed once. Returns how many nodes were rewritten.
    """
    import onnx
    from onnx import helper, numpy_helper

    inits = {t.name: t for t in model.graph.initializer}
    rewritten, nodes = 0, []
    for node in model.graph.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if (
            node.op_type != "Gemm"
            or node.input[1] not in inits
            or attrs.get("transA", 0)
            or attrs.get("alpha", 1.0) != 1.0
            or attrs.get("beta", 1.0) != 1.0
        ):
            nodes.append(node)
            continue
        weight = node.input[1]
        if attrs.get("transB", 0):
            array = numpy_helper.to_array(inits[weight]).T.copy()
            inits[weight].CopyFrom(numpy_helper.from_array(array, weight))
        product = node.output[0] + "_matmul" if len(node.input) > 2 else node.output[0]
        nodes.append(helper.make_node("MatMul", [node.input[0], weight], [product], name=node.name + "_MatMul"))
        if len(node.input) > 2:
            nodes.append(helper.make_node("Add", [product, node.input[2]], [node.output[0]], name=node.name + "_Add"))
        rewritten += 1
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    onnx.checker.check_model(model)
    return rewritten


def _lm_head(model) -> list[str]:
    """The MatMul that produces the logits (the graph output named `logits`)."""
    producers = {o: n for n in model.graph.node for o in n.output}
    node = producers.get("logits")
    seen = 0
    while node is not None and node.op_type != "MatMul" and seen < 4:  # through a Reshape or Add
        node = producers.get(node.input[0])
        seen += 1
    return [node.name] if node is not None and node.op_type == "MatMul" else []


def run(parent: Artifact, config: Config, workdir: Path) -> StageOutput:
    if parent.format != "onnx":
        raise ArtifactError(f"quantize-int4 needs an ONNX variant, but {parent.path} is {parent.format}")
    if parent.precision != "fp32":
        raise ArtifactError(f"{parent.path} is already {parent.precision}: quantise an FP32 ONNX variant")
    import onnx
    from onnxruntime.quantization.matmul_nbits_quantizer import (
        DefaultWeightOnlyQuantConfig,
        HQQWeightOnlyQuantConfig,
        MatMulNBitsQuantizer,
    )

    model = onnx.load(str(parent.onnx_path))
    rewritten = gemm_to_matmul(model)
    excluded = list(config.nodes_to_exclude) + ([] if config.quantize_lm_head else _lm_head(model))
    op_types = ("MatMul", "Gather") if config.quantize_embeddings else ("MatMul",)
    axes = (("MatMul", 0), ("Gather", 1))
    if config.algorithm == "hqq":
        algo = HQQWeightOnlyQuantConfig(
            block_size=config.block_size, bits=4, op_types_to_quantize=op_types, quant_axes=axes
        )
    else:
        algo = DefaultWeightOnlyQuantConfig(
            block_size=config.block_size,
            is_symmetric=config.symmetric,
            accuracy_level=config.accuracy_level,
            op_types_to_quantize=op_types,
            quant_axes=axes,
        )
    quantizer = MatMulNBitsQuantizer(
        model,
        bits=4,
        block_size=config.block_size,
        is_symmetric=config.symmetric,
        accuracy_level=config.accuracy_level,
        nodes_to_exclude=excluded,
        op_types_to_quantize=op_types,
        quant_axes=axes,
        algo_config=algo,
    )
    quantizer.process()
    quantized = quantizer.model.model
    if config.algorithm == "hqq":  # HQQ's config has no accuracy level: set it on the nodes it made
        for node in quantized.graph.node:
            if node.op_type == "MatMulNBits":
                for attr in node.attribute:
                    if attr.name == "accuracy_level":
                        attr.i = config.accuracy_level
    onnx.save_model(quantized, str(workdir / "model.onnx"))
    copy_support_files(parent.path, workdir)
    counts: dict[str, int] = {}
    for node in quantized.graph.node:
        if node.op_type in ("MatMulNBits", "MatMul", "Gemm", "GatherBlockQuantized"):
            counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return StageOutput(
        format="onnx",
        task=parent.task,
        precision="int4",
        metadata={
            "mode": "weight-only",
            "algorithm": config.algorithm,
            "block_size": config.block_size,
            "symmetric": config.symmetric,
            "accuracy_level": config.accuracy_level,
            "gemm_rewritten_to_matmul": rewritten,
            "lm_head_quantized": config.quantize_lm_head,
            "embeddings_quantized": config.quantize_embeddings,
            "excluded_nodes": excluded,
            "nodes": counts,
            "reason": f"4-bit weights in blocks of {config.block_size} ({config.algorithm}); decode reads every weight per "
            "token, so fewer bytes per weight decode faster on a bandwidth-bound CPU",
        },
    )
