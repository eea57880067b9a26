"""What a model attends to, and whether compression kept it: attention maps and attention rollout.

`attention_maps(model, text)` reads every layer's attention probabilities for one text, from a
PyTorch checkpoint (eager attention, any head count per layer, so pruned models too) or from an
ONNX variant (its Softmax outputs made graph outputs: the variant's own numbers, INT8 included).
`rollout` combines the layers (Abnar & Zuidema 2020: heads averaged, the residual path added as
0.5 I, rows renormalised, layers multiplied) into one score per token as seen from the token a
prediction is read at ([CLS] for an encoder, the last token for a decoder). `compare` gives the
Spearman rank correlation of two models' rollout scores: 1.0 means compression kept the order of
what the model attends to.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import architectures
from .artifact import META_FILE, Artifact
from .errors import EdgeNLPError, InputError
from .trust import pretrained_options

log = logging.getLogger(__name__)
RESIDUAL = 0.5


@dataclass
class AttentionMaps:
    model: str
    source: str
    """How the maps were read: `pytorch (eager attention)` or `onnx (Softmax outputs)`."""
    tokens: list[str]
    layers: list[np.ndarray]
    """One (heads, tokens, tokens) array per layer; rows are queries, columns the tokens attended to."""
    query: int
    """The position a prediction is read at: 0 ([CLS]) for an encoder, the last token for a decoder."""
    heads: list[int] = field(init=False)

    def __post_init__(self):
        self.heads = [int(a.shape[0]) for a in self.layers]

    def rollout(self) -> np.ndarray:
        return rollout(self.layers)[self.query]


def rollout(layers: list[np.ndarray], residual: float = RESIDUAL) -> np.ndarray:
    """(tokens, tokens): how much each token's final representation draws on each input token."""
    size = layers[0].shape[-1]
    joint = np.eye(size)
    for attention in layers:
        mixed = residual * np.eye(size) + (1 - residual) * attention.mean(axis=0)
        mixed /= mixed.sum(axis=-1, keepdims=True)
        joint = mixed @ joint
    return joint


def compare(reference: AttentionMaps, variant: AttentionMaps) -> dict:
    """Rank agreement of the rollout scores, and per layer how alike the head-averaged maps are."""
    from scipy.stats import pearsonr, spearmanr

    if reference.tokens != variant.tokens:
        raise EdgeNLPError(
            f"{reference.model} and {variant.model} split the text into different tokens: "
            "compare models that share a tokenizer"
        )
    if len(reference.tokens) < 3:  # a rank correlation of one or two scores says nothing
        raise InputError(f"the text is {len(reference.tokens)} token(s) long: explain a longer text")
    rho = spearmanr(reference.rollout(), variant.rollout()).statistic
    per_layer = []
    for a, b in zip(reference.layers, variant.layers):
        per_layer.append(_finite(pearsonr(a.mean(axis=0).ravel(), b.mean(axis=0).ravel()).statistic))
    return {
        "rollout_spearman": _finite(rho),
        "layer_pearson": per_layer,
        "top_tokens_reference": _top(reference),
        "top_tokens_variant": _top(variant),
    }


def _finite(value: float) -> float | None:
    """Rounded, or None where a correlation is undefined (constant scores)."""
    return round(float(value), 4) if np.isfinite(value) else None


def _top(maps: AttentionMaps, k: int = 5) -> list[str]:
    order = np.argsort(-maps.rollout(), kind="stable")[:k]
    return [maps.tokens[i] for i in order]


def _tokenize(folder: Path, text: str, max_length: int):
    from transformers import AutoTokenizer

    if not text or not text.strip():
        raise InputError("the text to explain is empty: pass a sentence")
    tokenizer = AutoTokenizer.from_pretrained(str(folder), **pretrained_options(folder))
    encoded = tokenizer(text, truncation=True, max_length=max_length, return_tensors="np")
    ids = encoded["input_ids"][0].tolist()
    return (
        tokenizer,
        encoded,
        [tokenizer.convert_tokens_to_string([t]).strip() or t for t in tokenizer.convert_ids_to_tokens(ids)],
    )


def _is_decoder(config: dict) -> bool:
    from . import tasks

    return tasks.of_config(config) == "text-generation"


def attention_maps(model: str | Path, text: str, max_length: int = 128) -> AttentionMaps:
    """Every layer's attention for `text`, from a PyTorch checkpoint folder or an ONNX variant folder."""
    from . import models
    from .runtime.engines import detect

    folder = Path(model)
    engine = detect(folder) if folder.is_dir() else None
    if engine == "onnx":
        return _onnx_maps(folder, text, max_length)
    if engine is not None:
        raise EdgeNLPError(
            f"{folder} is a {engine} model, whose engine does not expose attention weights: explain "
            "its ONNX parent (the same graph) or the PyTorch model"
        )
    return _pytorch_maps(models.resolve(str(model)).path, text, max_length)


def _pytorch_maps(folder: Path, text: str, max_length: int) -> AttentionMaps:
    import torch
    from transformers import AutoModel

    architectures.register()
    tokenizer, encoded, tokens = _tokenize(folder, text, max_length)
    try:
        model = AutoModel.from_pretrained(str(folder), **pretrained_options(folder), attn_implementation="eager").eval()
    except (ValueError, TypeError) as exc:
        raise EdgeNLPError(
            f"{folder} cannot return its attention weights ({' '.join(str(exc).split())[:160]}): "
            "explain a BERT-family or GPT-2 model"
        ) from exc
    feed = {
        k: torch.from_numpy(v) for k, v in encoded.items() if k in ("input_ids", "attention_mask", "token_type_ids")
    }
    with torch.inference_mode():
        out = model(**feed, output_attentions=True)
    attentions = getattr(out, "attentions", None)
    if not attentions or any(a is None for a in attentions):
        raise EdgeNLPError(
            f"{folder} returns no attention weights (its attention implementation does not expose "
            "them): explain a BERT-family or GPT-2 model"
        )
    layers = [a[0].float().numpy() for a in attentions]
    query = len(tokens) - 1 if model.config.is_decoder or _is_decoder(model.config.to_dict()) else 0
    return AttentionMaps(str(folder), "pytorch (eager attention)", tokens, layers, query)


def _onnx_maps(folder: Path, text: str, max_length: int) -> AttentionMaps:
    import json

    import onnx
    import onnxruntime as ort

    from .runtime.session import onnx_file

    path = onnx_file(folder)
    graph = onnx.load(str(path))
    softmax = [n.output[0] for n in graph.graph.node if n.op_type == "Softmax"]
    if not softmax:
        fused = sorted({n.op_type for n in graph.graph.node if "Attention" in n.op_type})
        raise EdgeNLPError(
            f"{path} has no attention probabilities to read (attention is fused into "
            f"{', '.join(fused) or 'other ops'}): explain its unfused parent, or the PyTorch model"
        )
    existing = {o.name for o in graph.graph.output}
    graph.graph.output.extend(
        onnx.helper.make_empty_tensor_value_info(name) for name in softmax if name not in existing
    )
    config = json.loads((folder / "config.json").read_text()) if (folder / "config.json").exists() else {}
    tokenizer, encoded, tokens = _tokenize(folder, text, max_length)
    with tempfile.TemporaryDirectory() as scratch:
        patched = Path(scratch) / "attention.onnx"
        onnx.save(
            graph, str(patched), save_as_external_data=graph.ByteSize() > 1_500_000_000, location="attention.onnx_data"
        )
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC  # keep Softmax unfused
        options.intra_op_num_threads = 1
        session = ort.InferenceSession(str(patched), options, providers=["CPUExecutionProvider"])
        feed = _onnx_feed(session, encoded, folder, patched)
        values = session.run(softmax, feed)
    seq = len(tokens)
    layers = [v[0] for v in values if v.ndim == 4 and v.shape[-1] == seq and v.shape[-2] == seq]
    if not layers:
        raise EdgeNLPError(
            f"{path}: no Softmax output has the shape of attention over {seq} tokens: explain the PyTorch model instead"
        )
    query = seq - 1 if _is_decoder(config) else 0
    return AttentionMaps(
        str(folder), "onnx (Softmax outputs)", tokens, [layer.astype(np.float64) for layer in layers], query
    )


def _onnx_feed(session, encoded, folder: Path, patched: Path) -> dict:
    names = [i.name for i in session.get_inputs()]
    if any(n.startswith("past_key_values.") for n in names):
        from .runtime.generation import CausalLM

        return CausalLM(folder, model_file=patched).feed(encoded["input_ids"].astype(np.int64))
    return {n: encoded[n].astype(np.int64) for n in names if n in encoded} | (
        {"token_type_ids": np.zeros_like(encoded["input_ids"], dtype=np.int64)}
        if "token_type_ids" in names and "token_type_ids" not in encoded
        else {}
    )


def reference_of(model: str | Path) -> Path | None:
    """The PyTorch model a variant is compared with: its nearest PyTorch ancestor that was not made by
    pruning (for a pruned and recovered model, the model it was pruned from); None for a fine-tuned
    model itself or a folder without edgenlp's lineage."""
    path = Path(model)
    if not (path / META_FILE).exists():
        return None
    current, seen = Artifact.load(path), set()
    if current.meta.get("stage") in ("finetune", "source"):
        return None
    while True:
        parent = (current.meta.get("parent") or {}).get("path")
        if not parent or parent in seen or not (Path(parent) / META_FILE).exists():
            return None
        seen.add(parent)
        current = Artifact.load(Path(parent))
        if current.format == "pytorch" and current.meta.get("stage") not in ("prune", "distill"):
            return current.path


def explain(
    models_by_name: dict[str, Path],
    text: str,
    out_dir: Path,
    reference: str | None = None,
    max_length: int = 128,
    required: tuple[str, ...] = (),
) -> dict:
    """Maps, rollout and agreement with `reference` for each model; writes the figures; returns the summary.

    A model whose attention cannot be read (fused ONNX attention) is listed under `skipped` with the
    reason, unless it is `required` or the reference, which is an error.
    """
    from .report import attention as figures

    if out_dir.exists() and (
        not out_dir.is_dir() or (any(out_dir.iterdir()) and not (out_dir / "explain.json").exists())
    ):
        raise InputError(f"{out_dir} holds files edgenlp explain did not write: pass a new or empty --out folder")
    maps, skipped = {}, {}
    for name, path in models_by_name.items():
        try:
            maps[name] = attention_maps(path, text, max_length)
        except InputError:
            raise
        except EdgeNLPError as exc:
            if name == reference or name in required or len(models_by_name) == 1:
                raise
            skipped[name] = str(exc)
    first = next(iter(maps.values()))
    summary = {
        "text": text,
        "tokens": first.tokens,
        "query": first.query,
        "reference": reference,
        "folder": str(out_dir),
        "rollout": {},
        "models": {},
        "skipped": skipped,
    }
    for name, m in maps.items():
        scores = m.rollout()
        entry = {
            "path": m.model,
            "source": m.source,
            "heads": m.heads,
            "top_tokens": _top(m),
            "rollout_spearman": None,
            "layer_pearson": None,
        }
        if reference and name != reference:
            entry.update(
                {k: v for k, v in compare(maps[reference], m).items() if k in ("rollout_spearman", "layer_pearson")}
            )
        summary["rollout"][name] = [round(float(x), 5) for x in scores]
        summary["models"][name] = entry
    figures.write(out_dir, summary, maps)
    return summary
