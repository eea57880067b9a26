"""PyTorch checkpoint -> CTranslate2 model (int8, int8_float32 or float32 weights).

CTranslate2 converts transformers models itself, from the PyTorch checkpoint (not the ONNX graph).
A BERT classifier becomes CTranslate2's encoder with its pooler, plus the classification head in
`classifier.npz` (CTranslate2 has no classification heads); a GPT-2 decoder becomes its generator.
CTranslate2 quantises weights per output row at conversion time, with no calibration.

Its specs give every layer the same number of heads of size hidden / heads, so a pruned model
(fewer heads or channels in some layers) cannot be converted: the error names the first such layer.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Literal

from ..artifact import Artifact, StageOutput, copy_support_files
from ..errors import ArtifactError, EngineError
from ..hardware import cpu_info
from ..runtime import engines
from ..runtime.ctranslate2_engine import FOLDER, HEAD
from ..trust import pretrained_options
from . import StageConfig

NAME = "ctranslate2"
LIBRARIES = ("torch", "transformers", "ctranslate2", "numpy")
SKIPPABLE = True
PRECISION = {"int8": "int8", "int8_float32": "int8", "float32": "fp32"}
CLASSIFIERS = ("BertForSequenceClassification",)
GENERATORS = ("GPT2LMHeadModel",)


class Config(StageConfig):
    compute_type: Literal["int8", "int8_float32", "float32"] = "int8"
    """Weight type at conversion: int8 per output row (`int8` and `int8_float32` both compute the
    other operations in float32 on CPU), or float32."""


def check_convertible(parent: Artifact) -> str:
    """The architecture CTranslate2 will convert, or a one-line refusal that names what it lacks."""
    if parent.format != "pytorch":
        raise ArtifactError(
            f"the ctranslate2 stage converts a PyTorch checkpoint, but {parent.path} is "
            f"{parent.format}: make it the child of a finetune or distill variant"
        )
    config = parent.config()
    architecture = (config.get("architectures") or ["?"])[0]
    layer_heads = config.get("layer_heads")
    if layer_heads:
        heads, hidden = config["num_attention_heads"], config["hidden_size"]
        widths = config.get("layer_intermediate_sizes") or []
        for layer, (kept, width) in enumerate(zip(layer_heads, widths or [None] * len(layer_heads))):
            if kept != heads or (width is not None and width != config.get("intermediate_size", width)):
                size = config.get("attention_head_size") or hidden // heads
                raise EngineError(
                    f"CTranslate2 cannot convert {parent.name}: layer {layer} keeps {kept} of {heads} "
                    f"attention heads ({kept * size} of {hidden} dims) and {width} feed-forward "
                    "channels, but its specs need every layer unpruned: measure the pruned model's "
                    "ONNX or OpenVINO variants instead"
                )
    if architecture not in CLASSIFIERS + GENERATORS:
        raise EngineError(
            f"CTranslate2 cannot convert {parent.name}: its architecture is {architecture}; edgenlp "
            f"converts {', '.join(CLASSIFIERS + GENERATORS)}"
        )
    if architecture in CLASSIFIERS and config.get("position_embedding_type", "absolute") != "absolute":
        raise EngineError(
            f"CTranslate2 cannot convert {parent.name}: its position embeddings are "
            f"{config['position_embedding_type']}; CTranslate2's BERT needs absolute ones"
        )
    return architecture


def _convert(checkpoint: Path, out: Path, compute_type: str) -> None:
    import ctranslate2

    try:
        ctranslate2.converters.TransformersConverter(str(checkpoint)).convert(
            str(out), quantization=compute_type, force=True
        )
    except (ValueError, NotImplementedError, AssertionError, KeyError) as exc:
        raise EngineError(f"CTranslate2 cannot convert {checkpoint.name}: {str(exc).splitlines()[0][:300]}") from None


def convert_classifier(parent: Artifact, out: Path, compute_type: str) -> dict:
    """The encoder and pooler through CTranslate2's converter; the head saved for numpy."""
    import numpy as np
    import transformers
    from transformers import AutoModelForSequenceClassification

    transformers.logging.set_verbosity_error()
    model = AutoModelForSequenceClassification.from_pretrained(
        str(parent.path), **pretrained_options(parent.path)
    ).eval()
    if getattr(model.bert, "pooler", None) is None:
        raise EngineError(
            f"CTranslate2 cannot convert {parent.name}: it has no pooler, and CTranslate2's BERT "
            "classifies from the pooled output"
        )
    with tempfile.TemporaryDirectory(prefix="edgenlp-ct2-") as tmp:
        copy_support_files(parent.path, Path(tmp))  # the converter reads the vocabulary from the tokenizer
        model.bert.config.architectures = ["BertModel"]
        model.bert.save_pretrained(tmp)
        _convert(Path(tmp), out, compute_type)
    np.savez(out / HEAD, weight=model.classifier.weight.detach().numpy(), bias=model.classifier.bias.detach().numpy())
    return {"head": HEAD, "head_shape": list(model.classifier.weight.shape)}


def run(parent: Artifact, config: Config, workdir: Path) -> StageOutput:
    engines.get("ctranslate2").require("the ctranslate2 stage")
    architecture = check_convertible(parent)
    out = workdir / FOLDER
    if architecture in CLASSIFIERS:
        extra = convert_classifier(parent, out, config.compute_type)
    else:
        _convert(parent.path, out, config.compute_type)
        extra = {}
    copy_support_files(parent.path, workdir)
    ct2_config = json.loads((out / "config.json").read_text())
    import ctranslate2

    return StageOutput(
        format="ctranslate2",
        task=parent.task,
        precision=PRECISION[config.compute_type],
        metadata={
            "engine": "ctranslate2",
            "ctranslate2": ctranslate2.__version__,
            "architecture": architecture,
            "compute_type": config.compute_type,
            "weights": "int8 per output row" if config.compute_type != "float32" else "float32",
            "cpu": cpu_info().summary(),
            "spec": {
                k: ct2_config.get(k)
                for k in ("layer_norm_epsilon", "unk_token", "bos_token", "eos_token")
                if k in ct2_config
            },
            **extra,
        },
    )
