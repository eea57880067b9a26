"""What a model is, read from its files: sizes, weights, multiply-accumulates, input limits.

A leaf: it reads config.json, safetensors headers and ONNX initialisers and imports nothing of
edgenlp's but the artifact helpers that find a model's files, so the harness, the tasks, the
stages and the CLI can all ask it without importing one another.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .artifact import loaded_model_files, onnx_file
from .errors import ModelNotFoundError


def read_config(config_path: Path) -> dict:
    """A checkpoint's config.json as a mapping; a truncated or foreign file is one line, not a traceback."""
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ModelNotFoundError(
            f"{config_path} is not valid JSON ({exc}): the checkpoint is truncated or damaged; "
            "copy it again or save it anew with save_pretrained"
        ) from None
    if not isinstance(config, dict):
        raise ModelNotFoundError(
            f"{config_path} holds a {type(config).__name__}, not a config mapping: point to a "
            "folder written by save_pretrained"
        )
    return config


def model_size_bytes(path: Path) -> int:
    """Bytes of the files the runner loads, each once (see `artifact.loaded_model_files`)."""
    return sum(p.stat().st_size for p in loaded_model_files(path))


def parameter_count(path: Path) -> int | None:
    """Number of stored weights (an INT8 weight counts once, like its FP32 original)."""
    try:
        if path.suffix == ".onnx" or any(path.glob("*.onnx")):
            import onnx

            model = onnx.load(str(onnx_file(path)), load_external_data=False)
            float_or_int8 = {
                onnx.TensorProto.FLOAT,
                onnx.TensorProto.FLOAT16,
                onnx.TensorProto.INT8,
                onnx.TensorProto.UINT8,
                onnx.TensorProto.BFLOAT16,
            }
            return int(
                sum(
                    int(np.prod(t.dims))
                    for t in model.graph.initializer
                    if t.data_type in float_or_int8 and len(t.dims) >= 1 and np.prod(t.dims) > 1
                )
            )
        weights = path / "model.safetensors"
        if weights.exists():
            from safetensors import safe_open

            with safe_open(str(weights), "np") as f:
                return int(sum(int(np.prod(f.get_slice(k).get_shape())) for k in f.keys()))
    except Exception:  # a count is a nicety; a model that cannot be parsed fails later, loudly
        return None
    return None


_CONFIG_ALIASES = {  # BERT's field names, then what other encoders call the same thing
    "hidden_size": ("hidden_size", "dim"),
    "num_hidden_layers": ("num_hidden_layers", "n_layers"),
    "num_attention_heads": ("num_attention_heads", "n_heads"),
    "intermediate_size": ("intermediate_size", "hidden_dim"),
}
ENCODER_TYPES = ("bert", "roberta", "distilbert", "xlm-roberta", "electra", "edgenlp-pruned-bert")


def config_of(path: Path) -> dict:
    """The config.json beside a model file (or in its folder); {} when there is none or it is not a mapping."""
    folder = path if path.is_dir() else path.parent
    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError):
        return {}
    return config if isinstance(config, dict) else {}


def encoder_macs(path: Path, length: float) -> int | None:
    """Multiply-accumulates of one BERT-family classification pass over `length` tokens, from config.json.

    Counts the matrix products (projections, attention scores and context, feed-forward, pooler,
    classifier); element-wise work is left out. Pruned heads and per-layer head counts and
    feed-forward widths (`edgenlp prune`) are honoured. None for other models, or when the config
    lacks a size it needs.
    """
    config = config_of(path)
    if config.get("model_type") not in ENCODER_TYPES:
        return None
    sizes = {}
    for field_name, aliases in _CONFIG_ALIASES.items():
        value = next((config[a] for a in aliases if isinstance(config.get(a), int)), None)
        if value is None:
            return None
        sizes[field_name] = value
    h, layers = sizes["hidden_size"], sizes["num_hidden_layers"]
    heads, inter = sizes["num_attention_heads"], sizes["intermediate_size"]
    head_dim = config.get("attention_head_size") or h // heads
    pruned = {int(k): len(v) for k, v in (config.get("pruned_heads") or {}).items()}
    layer_heads = config.get("layer_heads") or [heads - pruned.get(layer, 0) for layer in range(layers)]
    widths = config.get("layer_intermediate_sizes") or [inter] * layers
    total = 0.0
    for n_heads, width in zip(layer_heads, widths):
        a = n_heads * head_dim
        total += 3 * length * h * a + 2 * length * length * a + length * a * h + 2 * length * h * width
    total += h * h + h * max(1, len(config.get("id2label") or {}) or 2)
    return int(total)


def max_tokens(path: Path) -> int:
    """The longest input the candidate takes: its tokenizer's limit within its position embeddings."""
    from .runtime import configured_max_length

    limit = configured_max_length(path if path.is_dir() else path.parent)
    config = config_of(path)
    positions = config.get("max_position_embeddings") or config.get("n_positions")
    return min(limit, positions) if isinstance(positions, int) else limit


def decode_weight_bytes(path) -> int | None:
    """Bytes of weights read to make one token: every weight but those only gathered (embedding rows)."""
    from pathlib import Path

    path = Path(path)
    try:
        if path.suffix == ".onnx" or any(path.glob("*.onnx")):
            import onnx

            from .artifact import onnx_file

            model = onnx.load(str(onnx_file(path)), load_external_data=False)
            sizes = {t.name: _tensor_bytes(t) for t in model.graph.initializer}
            gathered, read = set(), set()
            for node in model.graph.node:
                for i, name in enumerate(node.input):
                    if name in sizes:
                        # a table only gathered from (its rows, scales, zero points): not read whole
                        looked_up = node.op_type in ("Gather", "GatherBlockQuantized") and i != 1
                        (gathered if looked_up else read).add(name)
            return int(sum(sizes[n] for n in read))
        from safetensors import safe_open

        with safe_open(str(path / "model.safetensors"), "np") as f:
            total = 0
            for key in f.keys():
                if "wpe" in key:  # position rows are gathered; the tied wte is read whole by the LM head
                    continue
                t = f.get_slice(key)
                total += int(np.prod(t.get_shape())) * np.dtype(_np_dtype(t.get_dtype())).itemsize
            return total
    except Exception:  # a bandwidth share is a nicety; the timings stand without it
        return None


def _np_dtype(name: str) -> str:
    return {"F32": "float32", "F16": "float16", "BF16": "float16", "I8": "int8", "U8": "uint8"}.get(name, "float32")


def _tensor_bytes(t) -> int:
    import onnx

    n = int(np.prod(t.dims)) if t.dims else 1
    if t.data_type in (onnx.TensorProto.UINT4, onnx.TensorProto.INT4):
        return (n + 1) // 2
    return n * onnx.helper.tensor_dtype_to_np_dtype(t.data_type).itemsize


def cache_bytes_per_position(path) -> int | None:
    """Bytes the KV cache holds for one position, which a decoding step reads once per cached position.

    From an ONNX graph's cache inputs (their heads, head size and type: a pruned or int8 cache shows
    there), else from the config (n_layer x 2 x n_embd float32 values)."""
    path = Path(path)
    try:
        if path.suffix == ".onnx" or any(path.glob("*.onnx")):
            import onnx

            model = onnx.load(str(onnx_file(path)), load_external_data=False)
            total = 0
            for value in model.graph.input:
                if not value.name.startswith("past_key_values."):
                    continue
                tensor = value.type.tensor_type
                dims = [d.dim_value for d in tensor.shape.dim]
                if len(dims) != 4 or not dims[1] or not dims[3]:
                    total = 0  # symbolic heads or head size: count it from the config
                    break
                total += dims[1] * dims[3] * onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type).itemsize
            if total:
                return total
        config = config_of(path)
        return int(config["n_layer"]) * 2 * int(config["n_embd"]) * 4
    except Exception:  # a bandwidth share is a nicety; the timings stand without it
        return None
