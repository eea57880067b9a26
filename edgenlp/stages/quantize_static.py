"""FP32 ONNX -> static INT8 (QDQ) ONNX: activation ranges calibrated on the recipe's training split.

Static quantisation fixes every activation scale ahead of time from calibration batches, so the
graph holds QuantizeLinear/DequantizeLinear pairs that onnxruntime fuses into integer kernels, and
that the mobile accelerators (NNAPI, Core ML, XNNPACK) run, where dynamic quantisation is not
supported. Calibration streams `calibration_samples` training texts in batches (bounded memory),
keeps the attention-mask subgraph out (`quantization/calibration.py`), and its time and peak memory
are recorded with the variant. Activation type and symmetry, and `reduce_range`, follow the CPU's
instruction set as in the dynamic stage; `quantization/preflight.py` says why and warns.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Literal

from pydantic import Field

from .. import data as data_module
from .. import tasks
from ..artifact import Artifact, StageOutput, copy_support_files
from ..hardware import cpu_info
from ..quantization import calibration, preflight
from . import StageConfig
from .quantize import REDUCE_RANGE, IsaChoice, check_excluded, check_parent, quantized_node_counts

NAME = "quantize-static"
LIBRARIES = ("onnx", "onnxruntime", "tokenizers", "numpy")
log = logging.getLogger(__name__)


class Config(StageConfig):
    calibrator: Literal["minmax", "entropy", "percentile"] = "minmax"
    calibration_samples: int = Field(256, ge=calibration.MIN_SAMPLES)
    """Training texts (or windows of training text) the activation ranges are computed from."""
    calibration_batch_size: int | None = Field(None, ge=1)
    """Samples per calibration batch: memory grows with this, not with calibration_samples (None: the task's
    default, 16 sentences for a classifier, 4 windows of 128 tokens for a language model, whose logits
    over a 50k vocabulary are 26 MB a window)."""
    percentile: float = Field(99.999, gt=90, lt=100)
    """Percentile calibrator: the share of each tensor's values its range keeps."""
    per_channel: bool = True
    """One weight scale per output channel: more label agreement, same speed on x86 (measured)."""
    isa: IsaChoice = "auto"
    reduce_range: bool | None = None
    """7-bit weights; None chooses from the instruction set."""
    activation: Literal["auto", "uint8", "int8"] = "auto"
    activation_symmetric: bool | None = None
    op_types: list[str] = ["MatMul", "Gemm", "Gather"]
    """Operators to quantise (Add, Mul, ... may be added: the mask path is always left in float)."""
    nodes_to_exclude: list[str] = []
    """Nodes to leave in float (the accuracy-budget search fills this in from the sensitivity ranking)."""
    data: data_module.DataSpec = data_module.DataSpec()
    seed: int = 0


def resolve(config: Config) -> Config:
    """Pin `auto` choices to this machine, so the artifact id says what was really built."""
    isa = cpu_info().isa if config.isa == "auto" else config.isa
    activation, symmetric = preflight.activation_type(isa)
    return config.model_copy(
        update={
            "isa": isa,
            "reduce_range": REDUCE_RANGE[isa] if config.reduce_range is None else config.reduce_range,
            "activation": activation if config.activation == "auto" else config.activation,
            "activation_symmetric": symmetric if config.activation_symmetric is None else config.activation_symmetric,
        }
    )


def calibrate(parent: Artifact, config: Config) -> calibration.Calibration:
    """The parent's activation ranges for `config` (cached by content, so equal settings calibrate once)."""
    task = tasks.get(parent.task)
    dataset = task.load_data(config.data)
    batch_size = config.calibration_batch_size or task.CALIBRATION_BATCH
    batches = task.calibration_batches(dataset, parent.path, config.calibration_samples, batch_size, config.seed)
    symmetric = config.activation_symmetric or config.calibrator == "percentile"
    key = calibration.settings_key(
        parent.id,
        task.fingerprint(config.data),
        config.calibrator,
        config.calibration_samples,
        batch_size,
        config.op_types,
        symmetric,
        config.percentile,
    )
    return calibration.calibrate(
        parent.onnx_path,
        batches,
        config.calibrator,
        config.op_types,
        symmetric=symmetric,
        percentile=config.percentile,
        cache_key=key,
    )


def quantisable_nodes(model_path: Path, op_types: list[str]) -> list[str]:
    """The nodes QDQ quantisation touches for `op_types`: onnxruntime's QDQ format has no fused attention,
    so a fused graph's Attention stays float here."""
    return calibration.quantisable_nodes(model_path, op_types)


def quantize_file(
    parent: Artifact,
    config: Config,
    out: Path,
    only: list[str] | None = None,
    calib: calibration.Calibration | None = None,
) -> calibration.Calibration:
    """Write the statically quantised parent to `out`; `only`: quantise just these nodes."""
    check_excluded(parent, config.op_types, config.nodes_to_exclude, quantisable_nodes)
    calib = calib or calibrate(parent, config)
    calibration.quantize_qdq(
        parent.onnx_path,
        out,
        calib,
        op_types=config.op_types,
        per_channel=config.per_channel,
        reduce_range=config.reduce_range,
        activation=config.activation,
        activation_symmetric=config.activation_symmetric,
        nodes_to_exclude=config.nodes_to_exclude,
        nodes_to_quantize=only,
    )
    return calib


def run(parent: Artifact, config: Config, workdir: Path) -> StageOutput:
    check_parent(parent, NAME)
    config = resolve(config)
    advice = preflight.advise(
        config.isa, reduce_range=config.reduce_range, activation=config.activation, per_channel=config.per_channel
    )
    for warning in advice["warnings"]:
        log.warning("preflight: %s", warning)
    calib = quantize_file(parent, config, workdir / "model.onnx")
    copy_support_files(parent.path, workdir)
    return StageOutput(
        format="onnx",
        task=parent.task,
        precision="int8",
        metadata={
            "mode": "static",
            "calibrator": config.calibrator,
            "isa": config.isa,
            "cpu": cpu_info().summary(),
            "reduce_range": config.reduce_range,
            "per_channel": config.per_channel,
            "activation_type": config.activation,
            "activation_symmetric": config.activation_symmetric,
            "weight_type": "int8",
            "op_types": config.op_types,
            "calibration": calib.stats,
            "mask_nodes_in_float": calib.mask_nodes,
            "nodes_in_float": config.nodes_to_exclude,
            "preflight": advice,
            "quantized_nodes": quantized_node_counts(workdir / "model.onnx"),
        },
    )
