"""FP32 ONNX decoder -> one variant with two graphs: one that reads prompts, one that decodes.

Reading a prompt multiplies every weight by many positions at once and is bound by arithmetic;
decoding reads every weight to make one token and is bound by memory. The fastest kernels differ:
on x86, dynamic INT8 (`MatMulInteger` with VNNI) reads a 128-token prompt about twice as fast per
multiply-accumulate as INT4 `MatMulNBits`, while INT4 decodes faster because it reads half the bytes.
This stage builds both from the same FP32 parent with two other stages' configs: `decode` (default
INT4, block 128) becomes `model.onnx`, the variant's graph for every tool that loads one model
(transformers.js, Optimum, evaluation), and `prefill` (default dynamic INT8) becomes `prefill.onnx`,
which edgenlp's runtime uses for a prompt's first pass when generating. Both graphs take and give
the same KV cache, so decoding continues from the prefill graph's cache.

The price is stored bytes (both graphs ship) and memory. Fidelity is measured on the decode graph
(the less exact one: every window of the evaluation goes through it); the greedy continuations are
generated as the runtime generates, prompt through the prefill graph, so they measure the pair.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..artifact import Artifact, StageOutput
from ..errors import ArtifactError
from ..runtime.generation import PREFILL_GRAPH
from . import StageConfig

NAME = "split-prefill"
LIBRARIES = ("onnx", "onnxruntime", "onnx-ir", "torch")
GRAPH_STAGES = ("quantize", "quantize-int4")
"""Stages that turn the FP32 graph into another graph with the same inputs and outputs."""


class GraphSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    stage: str
    config: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _known_stage_and_valid_config(self) -> GraphSpec:
        from . import get

        if self.stage not in GRAPH_STAGES:
            raise ValueError(f"stage '{self.stage}' cannot make a graph here: use one of {', '.join(GRAPH_STAGES)}")
        get(self.stage).Config(**self.config)  # its own errors, at recipe load
        return self


class Config(StageConfig):
    decode: GraphSpec = GraphSpec(stage="quantize-int4", config={"block_size": 128, "accuracy_level": 4})
    prefill: GraphSpec = GraphSpec(stage="quantize", config={"op_types": ["MatMul", "Gemm", "Gather"]})


def check_parent(parent: Artifact) -> None:
    if parent.task != "text-generation":
        raise ArtifactError(
            f"split-prefill makes a decoder's prompt graph, but {parent.path} is a {parent.task} "
            "model: use quantize or quantize-int4"
        )
    if parent.format != "onnx" or parent.precision != "fp32":
        raise ArtifactError(
            f"split-prefill needs an FP32 ONNX decoder (an export variant), but {parent.path} is "
            f"{parent.format} {parent.precision}"
        )


def _make(spec: GraphSpec, parent: Artifact, workdir: Path) -> StageOutput:
    from . import get

    stage = get(spec.stage)
    workdir.mkdir()
    return stage.run(parent, stage.Config(**spec.config), workdir)


def run(parent: Artifact, config: Config, workdir: Path) -> StageOutput:
    check_parent(parent)
    decode = _make(config.decode, parent, workdir / ".decode")
    prefill = _make(config.prefill, parent, workdir / ".prefill")
    for path in (workdir / ".decode").iterdir():
        path.rename(workdir / path.name)
    graphs = sorted((workdir / ".prefill").glob("*.onnx"))
    if (
        len(graphs) != 1
        or any((workdir / ".prefill").glob("*.onnx_data"))
        or any((workdir / ".prefill").glob("*.data"))
    ):
        raise ArtifactError(
            f"the prefill graph came out as {[g.name for g in graphs]} with external data: "
            "split-prefill needs it in one file"
        )
    graphs[0].rename(workdir / PREFILL_GRAPH)
    shutil.rmtree(workdir / ".decode")
    shutil.rmtree(workdir / ".prefill")
    return StageOutput(
        format="onnx",
        task=parent.task,
        precision=decode.precision,
        metadata={
            "decode": {"stage": config.decode.stage, "precision": decode.precision, **decode.metadata},
            "prefill": {
                "stage": config.prefill.stage,
                "precision": prefill.precision,
                "graph": PREFILL_GRAPH,
                **prefill.metadata,
            },
        },
    )
