"""OpenVINO as Optimum Intel's users run a GPT-2: a stateful model with INT8 weight compression.

Optimum Intel (`OVModelForCausalLM.from_pretrained(..., export=True, load_in_8bit=True)`) converts the
decoder, makes it stateful (the KV cache lives inside the infer request as variables, so it never
crosses the Python boundary) and compresses the weights with NNCF (`INT8_ASYM`, data-free); it
compiles for latency with OpenVINO's defaults otherwise. Optimum Intel itself cannot be installed
beside this project's pins (it requires optimum 2.3 and torchvision, whose wheel pulls a CUDA torch),
so `build` reproduces those steps with OpenVINO's and NNCF's own calls on Optimum's FP32 ONNX export
of the same checkpoint, and `OpenVINOStatefulCausalLM` is the runner the harness times with the same
decoding loop as every other model. edgenlp's own `openvino` stage keeps the cache as explicit
inputs and outputs instead (the layout its runtime and bundles share with onnxruntime).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

XML = "openvino_model.xml"


def build(onnx_folder: Path, out: Path) -> Path:
    """Optimum's FP32 ONNX export -> a stateful OpenVINO IR with INT8_ASYM weights, in `out`."""
    if (out / XML).exists():
        return out
    import nncf
    import openvino as ov
    from openvino._offline_transformations import apply_make_stateful_transformation

    from edgenlp.artifact import copy_support_files

    model = ov.convert_model(str(Path(onnx_folder) / "model.onnx"))
    inputs = {p.get_any_name() for p in model.inputs}
    outputs = {name for p in model.outputs for name in p.get_names()}
    pairs = {name: name.replace("past_key_values", "present") for name in inputs if name.startswith("past_key_values")}
    missing = sorted(v for v in pairs.values() if v not in outputs)
    if missing:
        raise ValueError(f"{onnx_folder} has no outputs {missing[:2]} to pair with its cache inputs")
    # Batch 1 throughout (what this benchmark runs), as Optimum Intel's `make_stateful` fixes a known
    # batch: otherwise the empty initial cache keeps batch 0 and the first step returns no logits.
    for port in model.inputs:
        shape = port.get_partial_shape()
        shape[0] = 1
        port.get_node().set_partial_shape(shape)
    model.validate_nodes_and_infer_types()
    apply_make_stateful_transformation(model, pairs)
    model = nncf.compress_weights(model, mode=nncf.CompressWeightsMode.INT8_ASYM)
    partial = out.with_name(f".{out.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    ov.save_model(model, str(partial / XML))
    copy_support_files(Path(onnx_folder), partial)
    (partial / "peer.json").write_text(
        json.dumps(
            {
                "engine": "openvino",
                "openvino": ov.__version__,
                "nncf": nncf.__version__,
                "stateful": True,
                "weights": "INT8_ASYM (nncf.compress_weights)",
            },
            indent=2,
        )
    )
    partial.rename(out)
    return out


class OpenVINOStatefulCausalLM:
    """The stateful IR on OpenVINO's CPU plugin: `step(ids, past)`, where `past` is the count of tokens the
    request's state already holds (None starts a new sequence)."""

    def __init__(self, path: Path, threads: int):
        import openvino as ov
        from tokenizers import Tokenizer

        path = Path(path)
        # Optimum Intel's default compile config, with the profile's thread count
        config = {"PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": "1", "INFERENCE_NUM_THREADS": threads}
        self.compiled = ov.Core().compile_model(str(path / XML), "CPU", config)
        self.request = self.compiled.create_infer_request()
        self.input_names = {p.get_any_name() for p in self.compiled.inputs}
        self.logits_index = next(i for i, p in enumerate(self.compiled.outputs) if "logits" in p.get_names())
        model_config = json.loads((path / "config.json").read_text())
        self.context = int(model_config.get("n_positions") or model_config.get("max_position_embeddings"))
        self.eos_id = model_config.get("eos_token_id")
        self._tok = Tokenizer.from_file(str(path / "tokenizer.json"))
        self._tok.no_truncation()
        self._tok.no_padding()

    def step(self, ids: np.ndarray, past):
        seen = past or 0
        if past is None:
            self.request.reset_state()
        batch, n = ids.shape
        feed = {"input_ids": ids, "attention_mask": np.ones((batch, seen + n), dtype=np.int64)}
        if "position_ids" in self.input_names:
            feed["position_ids"] = np.arange(seen, seen + n, dtype=np.int64)[None, :].repeat(batch, 0)
        if "beam_idx" in self.input_names:
            feed["beam_idx"] = np.arange(batch, dtype=np.int32)
        result = self.request.infer(feed)
        return np.asarray(result[self.logits_index]), seen + n

    def encode(self, text: str) -> list[int]:
        return self._tok.encode(text).ids

    def decode_ids(self, ids) -> str:
        return self._tok.decode(list(ids), skip_special_tokens=False)
