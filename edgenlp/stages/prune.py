"""PyTorch checkpoint -> a smaller one: whole layers, attention heads and feed-forward channels removed.

Depth first (`layers`): whole transformer layers are dropped, the least important first, where a
layer's importance is how much the model's last hidden states move (1 - cosine, over calibration
batches) when it is skipped, measured again after each drop (greedy). The kept layers keep their
weights; `kept_layers` in the metadata says which of the parent's they were (distillation maps the
student's layers to the teacher's with it).

torch-pruning's dependency graph decides what must shrink together (a head's query, key and value
rows and the matching columns of the output projection; a feed-forward channel's row and column),
ranks heads and channels by weight magnitude or by first-order Taylor importance on calibration
batches from the training split, and cuts them: the same share in every layer (`uniform`) or the
least important across all layers (`global`). The hidden size is kept, so embeddings, residual
connections and the task head are untouched. GPT-2's `Conv1D` projections are shown to the pruner
as `nn.Linear` (its weight transposed) with the fused q/k/v split in three, and rebuilt afterwards.

The checkpoint is a `save_pretrained` folder of an `edgenlp.architectures` class whose config lists
each layer's head count and feed-forward width; it is reloaded and compared with the in-memory
pruned model before it is published.
"""

from __future__ import annotations

import math
import random
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Literal

from pydantic import Field

from .. import architectures, tasks
from .. import data as data_module
from ..artifact import Artifact, StageOutput
from ..errors import ArtifactError, DataError, RecipeError
from ..runtime.embedding import carry_pooling
from ..trust import pretrained_options
from . import StageConfig

NAME = "prune"
LIBRARIES = ("torch", "transformers", "torch-pruning")
CHECKED_AGAINST_PARENT = False  # pruning is meant to change the outputs; recovery and the benchmark say by how much


class Config(StageConfig):
    ratio: float = Field(0.0, ge=0, lt=1)
    """Share of attention heads and of feed-forward channels to remove."""
    layers: int | None = Field(None, ge=1)
    """Transformer layers to keep (None: all); the others are dropped whole, least important first."""
    head_ratio: float | None = Field(None, ge=0, lt=1)
    """Share of heads alone; None: `ratio`."""
    ffn_ratio: float | None = Field(None, ge=0, lt=1)
    """Share of feed-forward channels alone; None: `ratio`."""
    mode: Literal["uniform", "global"] = "uniform"
    """uniform: the same share in every layer; global: the least important across layers."""
    importance: Literal["magnitude", "taylor"] = "magnitude"
    """magnitude (weights) or taylor (loss gradients on calibration batches; needs data)."""
    calibration_batches: int = Field(8, ge=1)
    """Training batches whose loss gradients rank heads and channels (Taylor importance)."""
    batch_size: int = Field(16, ge=1)
    max_length: int = Field(128, ge=8, le=4096)
    data: data_module.DataSpec | None = None
    """Where calibration batches come from (a recipe fills in its own data): Taylor importance and the
    ranking of layers read it (without data, layers are ranked on one batch of random tokens)."""
    task: str | None = None
    """What the model is for; None: the model's own task."""
    seed: int = 0


def _linear_from_conv1d(conv, rows=slice(None)):
    import torch

    weight = conv.weight[:, rows]  # Conv1D stores (in, out): y = x @ W + b
    linear = torch.nn.Linear(weight.shape[0], weight.shape[1])
    linear.weight.data = weight.t().contiguous()
    linear.bias.data = conv.bias[rows].clone()
    return linear


def _conv1d_from_linear(linear):
    from transformers.pytorch_utils import Conv1D

    conv = Conv1D(linear.out_features, linear.in_features)
    conv.weight.data = linear.weight.data.t().contiguous()
    conv.bias.data = linear.bias.data.clone()
    return conv


class _BertView:
    """BERT as the pruner sees it: separate query/key/value and feed-forward Linear layers."""

    def __init__(self, model):
        self.model = model
        self.layers = model.base_model.encoder.layer
        self.head_size = self.layers[0].attention.self.attention_head_size

    def attention(self, i):
        a = self.layers[i].attention.self
        return [a.query, a.key, a.value], a.num_attention_heads

    def ffn_in(self, i):
        return self.layers[i].intermediate.dense

    def set_heads(self, heads: list[int]) -> None:
        """Tell the attention modules how many heads their pruned projections now hold."""
        for layer, n in zip(self.layers, heads):
            a = layer.attention.self
            a.num_attention_heads, a.all_head_size = n, a.query.out_features

    def finish(self, heads: list[int]) -> dict:
        return {
            "layer_heads": heads,
            "attention_head_size": self.head_size,
            "layer_intermediate_sizes": [layer.intermediate.dense.out_features for layer in self.layers],
        }


class _GPT2View:
    """GPT-2 as the pruner sees it: `Conv1D` as `nn.Linear`, the fused `c_attn` as three Linear layers."""

    def __init__(self, model):
        import torch

        class SplitQKV(torch.nn.Module):
            def __init__(self, conv):
                super().__init__()
                width = conv.weight.shape[1] // 3
                self.q, self.k, self.v = (
                    _linear_from_conv1d(conv, slice(i * width, (i + 1) * width)) for i in range(3)
                )

            def forward(self, x):
                return torch.cat([self.q(x), self.k(x), self.v(x)], dim=-1)

        self.model = model
        self.layers = model.transformer.h
        self.head_size = self.layers[0].attn.head_dim
        for block in self.layers:
            block.attn.c_attn = SplitQKV(block.attn.c_attn)
            block.attn.c_proj = _linear_from_conv1d(block.attn.c_proj)
            block.mlp.c_fc = _linear_from_conv1d(block.mlp.c_fc)
            block.mlp.c_proj = _linear_from_conv1d(block.mlp.c_proj)

    def attention(self, i):
        a = self.layers[i].attn
        return [a.c_attn.q, a.c_attn.k, a.c_attn.v], a.num_heads

    def ffn_in(self, i):
        return self.layers[i].mlp.c_fc

    def set_heads(self, heads: list[int]) -> None:
        for block, n in zip(self.layers, heads):
            block.attn.num_heads, block.attn.split_size = n, n * self.head_size

    def finish(self, heads: list[int]) -> dict:
        """Back to GPT-2's own modules: one fused `c_attn` and `Conv1D` everywhere."""
        import torch

        for block in self.layers:
            split = block.attn.c_attn
            fused = torch.nn.Linear(split.q.in_features, 3 * split.q.out_features)
            fused.weight.data = torch.cat([split.q.weight, split.k.weight, split.v.weight]).data
            fused.bias.data = torch.cat([split.q.bias, split.k.bias, split.v.bias]).data
            block.attn.c_attn = _conv1d_from_linear(fused)
            block.attn.c_proj = _conv1d_from_linear(block.attn.c_proj)
            block.mlp.c_fc = _conv1d_from_linear(block.mlp.c_fc)
            block.mlp.c_proj = _conv1d_from_linear(block.mlp.c_proj)
        return {
            "layer_heads": heads,
            "head_dim": self.head_size,
            "layer_inner": [block.mlp.c_fc.weight.shape[1] for block in self.layers],
        }


VIEWS = {"bert": _BertView, "gpt2": _GPT2View}


def _count(model) -> dict:
    """Parameters, all and outside the embedding tables (what pruning can shrink)."""
    import torch

    total = sum(p.numel() for p in model.parameters())
    embedding = sum(p.numel() for m in model.modules() if isinstance(m, torch.nn.Embedding) for p in m.parameters())
    return {"parameters": total, "non_embedding_parameters": total - embedding}


def _load(parent: Artifact, config: Config):
    """The task, the model in training form, and example or calibration batches."""
    import torch
    import transformers

    task = tasks.resolve(tasks.of_config(parent.config()), config.task, str(parent.path))
    if config.importance == "taylor" or (config.layers is not None and config.data is not None):
        if config.data is None:
            raise DataError(
                "Taylor importance ranks heads by the loss on calibration batches from a training "
                "split: give data (--data, or the recipe's data), or use --importance magnitude"
            )
        # the task's Trainer gives the training batches; it also encodes a validation sample, kept to one
        trainer_settings = SimpleNamespace(max_length=config.max_length, max_eval_examples=1, seed=config.seed)
        trainer = task.Trainer(parent.path, task.load_data(config.data), trainer_settings)
        labels, own = getattr(trainer, "labels", None), parent.labels()
        named = own and not all(label.startswith("LABEL_") for label in own)  # transformers' placeholders
        if labels and named and sorted(labels) != sorted(own):
            raise DataError(
                f"the calibration data's labels {labels} are not the model's {own}: calibrate on "
                "the data the model was fine-tuned for"
            )
        batches = []
        for batch in trainer.batches(random.Random(config.seed), config.batch_size):
            batches.append(batch)
            if len(batches) == config.calibration_batches:
                break
        if not batches:
            raise DataError(f"the training split of {config.data.source} gave no calibration batch: give more data")
        return task, trainer.model, batches, trainer.loss
    architectures.register()
    auto = getattr(transformers, task.AUTO_MODEL)
    model = auto.from_pretrained(str(parent.path), **pretrained_options(parent.path))
    generator = torch.Generator().manual_seed(config.seed)
    ids = torch.randint(0, model.config.vocab_size, (2, min(16, config.max_length)), generator=generator)
    return task, model, [{"input_ids": ids, "attention_mask": torch.ones_like(ids)}], None


def run(parent: Artifact, config: Config, workdir: Path) -> StageOutput:
    if parent.format != "pytorch":
        raise ArtifactError(
            f"prune needs a PyTorch checkpoint, but {parent.path} is {parent.format}: prune before export"
        )
    model_type = parent.config().get("model_type")
    family = architectures.family_of(model_type)
    if family is None:
        raise ArtifactError(
            f"prune supports BERT-family (bert, MiniLM) and GPT-2 checkpoints, but {parent.path} "
            f"is a '{model_type}' model"
        )
    import torch
    import torch_pruning as tp
    import transformers

    transformers.logging.set_verbosity_error()
    started = time.time()
    torch.manual_seed(config.seed)
    task, model, batches, loss_of = _load(parent, config)
    model.config.use_cache = False  # the pruner traces one plain forward pass
    before = _count(model)
    example = {k: v for k, v in batches[0].items() if k != "labels"}
    view = VIEWS[family.name](model)
    model.eval()
    macs_before = _macs(tp, model, example)  # in the pruner's view: its counter knows nn.Linear, not Conv1D
    depth = None
    if config.layers is not None:
        depth = _drop_layers(model, family.name, config.layers, batches)
        view.layers = getattr(*_layer_stack(model, family.name))
    layers = range(len(view.layers))
    heads, attention_roots, ffn_roots = {}, [], []
    for i in layers:
        projections, n = view.attention(i)
        heads.update({p: n for p in projections})
        attention_roots += projections
        ffn_roots.append(view.ffn_in(i))
    head_ratio = config.ratio if config.head_ratio is None else config.head_ratio
    ffn_ratio = config.ratio if config.ffn_ratio is None else config.ffn_ratio
    if config.mode == "uniform":
        for i in layers:
            n = view.attention(i)[1]
            if head_ratio > 0 and math.ceil(head_ratio * n) >= n:
                raise RecipeError(
                    f"pruning {head_ratio:g} of the heads would remove all {n} heads of layer {i} "
                    "(whole heads, rounded up): lower head_ratio/ratio"
                )
    # torch-pruning skips a group whose channel ratio is 0, heads included: what is not pruned is
    # ignored, the feed-forward channels get their own ratio (one ranking scope), and the attention
    # groups carry the head ratio (their head dimensions are never cut).
    roots = (attention_roots if head_ratio > 0 else []) + (ffn_roots if ffn_ratio > 0 else [])
    ignored = [m for m in model.modules() if isinstance(m, torch.nn.Linear) and m not in roots]

    def logits_sum(out):
        return main_output(out).sum()

    if config.importance == "taylor":
        importance = tp.importance.GroupTaylorImportance()
        model.train()
        model.zero_grad()
        for batch in batches:
            loss_of(model, batch).backward()
        model.eval()
    else:
        importance = tp.importance.GroupMagnitudeImportance(p=2)
    pruner = tp.pruner.MetaPruner(
        model,
        example,
        importance=importance,
        global_pruning=config.mode == "global",
        pruning_ratio=head_ratio if head_ratio > 0 else ffn_ratio,
        pruning_ratio_dict={tuple(ffn_roots): ffn_ratio} if ffn_ratio > 0 else None,
        num_heads=heads,
        prune_num_heads=True,
        prune_head_dims=False,
        head_pruning_ratio=head_ratio,
        ignored_layers=ignored,
        root_module_types=[torch.nn.Linear],
        output_transform=logits_sum,
    )
    for group in pruner.step(interactive=True):
        group.prune()
    queries = [view.attention(i)[0][0] for i in layers]
    for i, query in zip(layers, queries):
        # torch-pruning declines a cut that would empty a layer but still counts its heads as gone
        if pruner.num_heads[query] < 1 or query.out_features < view.head_size:
            raise RecipeError(
                f"pruning {head_ratio:g} of the heads ({config.mode}) would remove every head of "
                f"layer {i}: lower head_ratio/ratio, or use mode uniform"
            )
        if view.ffn_in(i).out_features < 1:
            raise RecipeError(
                f"pruning {ffn_ratio:g} of the feed-forward channels ({config.mode}) would empty "
                f"layer {i}: lower ffn_ratio/ratio"
            )
    kept_heads = [q.out_features // view.head_size for q in queries]
    view.set_heads(kept_heads)
    model.zero_grad(set_to_none=True)
    macs_after = _macs(tp, model, example)  # in the pruner's view: its counter knows nn.Linear, not Conv1D
    shapes = view.finish(kept_heads)
    pruned = _rebuild(model, task, family, shapes, example)
    after = _count(pruned)
    pruned.save_pretrained(str(workdir), safe_serialization=True)
    _copy_tokenizer(parent.path, workdir)
    carry_pooling(parent.path, workdir)  # an embedding model's pooling (nothing for others)
    _check_reload(pruned, workdir, task, example)
    return StageOutput(
        format="pytorch",
        task=task.NAME,
        precision="fp32",
        metadata={
            "ratio": config.ratio,
            "head_ratio": head_ratio,
            "ffn_ratio": ffn_ratio,
            "mode": config.mode,
            "importance": config.importance,
            **(depth or {}),
            **shapes,
            "parameters": {
                "before": before,
                "after": after,
                "non_embedding_kept": round(after["non_embedding_parameters"] / before["non_embedding_parameters"], 4),
            },
            "macs": {
                "before": int(macs_before),
                "after": int(macs_after),
                "tokens": int(example["input_ids"].shape[1]),
                "kept": round(macs_after / macs_before, 4),
            },
            "seconds": round(time.time() - started, 1),
        },
    )


def _layer_stack(model, family: str):
    """The module holding the transformer layers, and its attribute name."""
    return (model.base_model.encoder, "layer") if family == "bert" else (model.transformer, "h")


def _output_change(model, batches: list[dict], skipped: set, layers) -> float:
    """Mean 1 - cosine of the last hidden states, per real token, with the `skipped` layers passed over."""
    import torch

    def pass_over(module, args, kwargs, output):
        hidden = args[0] if args else kwargs["hidden_states"]
        return (hidden, *output[1:]) if isinstance(output, tuple) else hidden

    hooks = [layers[i].register_forward_hook(pass_over, with_kwargs=True) for i in skipped]
    try:
        total, count = 0.0, 0
        with torch.no_grad():
            for batch, reference in batches:
                states = model(**batch, output_hidden_states=True).hidden_states[-1]
                change = 1 - torch.nn.functional.cosine_similarity(states, reference, dim=-1)
                mask = batch.get("attention_mask", torch.ones_like(change))
                total += float((change * mask).sum())
                count += int(mask.sum())
        return total / count
    finally:
        for hook in hooks:
            hook.remove()


def _drop_layers(model, family: str, keep: int, batches: list[dict]) -> dict:
    """Keep `keep` layers: drop the one whose skipping moves the output least, again and again."""
    import torch

    holder, name = _layer_stack(model, family)
    layers = getattr(holder, name)
    if keep > len(layers):
        raise RecipeError(f"layers: {keep} asks to keep more layers than the model's {len(layers)}: lower it")
    model.eval()
    inputs = [{k: v for k, v in batch.items() if k != "labels"} for batch in batches]
    with torch.no_grad():
        measured = [(batch, model(**batch, output_hidden_states=True).hidden_states[-1]) for batch in inputs]
    dropped: list[int] = []
    changes: list[float] = []
    while len(layers) - len(dropped) > keep:
        scores = {
            i: _output_change(model, measured, {*dropped, i}, layers) for i in range(len(layers)) if i not in dropped
        }
        least = min(scores, key=scores.__getitem__)
        dropped.append(least)
        changes.append(round(scores[least], 6))
    kept = [i for i in range(len(layers)) if i not in dropped]
    setattr(holder, name, torch.nn.ModuleList(layers[i] for i in kept))
    for index, i in enumerate(kept):  # a cache is indexed by layer: the kept layers are renumbered
        for module in layers[i].modules():
            if hasattr(module, "layer_idx"):
                module.layer_idx = index
    model.config.num_hidden_layers = len(kept)  # GPT-2's config maps it to n_layer
    return {"kept_layers": kept, "dropped_layers": dropped, "output_change_after_each_drop": changes}


def _macs(tp, model, example: dict) -> int:
    import contextlib
    import io

    import torch

    with torch.no_grad(), contextlib.redirect_stdout(io.StringIO()):  # torch-pruning prints its shape guesses
        macs, _ = tp.utils.count_ops_and_params(model, example)
    return int(macs)


def _rebuild(model, task, family: architectures.Family, shapes: dict, example: dict):
    """The pruned weights in an `edgenlp.architectures` model whose config carries the shapes."""
    import torch
    import transformers

    architectures.register()
    values = model.config.to_dict()
    for key in ("model_type", "architectures", "auto_map", "pruned_heads", "transformers_version"):
        values.pop(key, None)
    values["use_cache"] = True
    config = transformers.AutoConfig.for_model(family.pruned_model_type, **values, **shapes)
    rebuilt = getattr(transformers, task.AUTO_MODEL).from_config(config)
    state = {
        k: v for k, v in model.state_dict().items() if not k.endswith(".attn.bias") and not k.endswith("masked_bias")
    }
    missing, unexpected = rebuilt.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.endswith(".attn.bias") and not k.endswith("masked_bias")]
    if missing or unexpected:
        raise RuntimeError(f"pruned weights do not fit the rebuilt model: missing {missing}, unexpected {unexpected}")
    rebuilt.eval()
    model.eval()
    with torch.no_grad():
        diff = (main_output(rebuilt(**example)) - main_output(model(**example))).abs().max().item()
    if diff > 1e-4:
        raise RuntimeError(f"the rebuilt pruned model differs from the pruned one by {diff}")
    return rebuilt


def _copy_tokenizer(source: Path, workdir: Path) -> None:
    from transformers import AutoTokenizer

    AutoTokenizer.from_pretrained(str(source), **pretrained_options(source)).save_pretrained(str(workdir))


def _check_reload(pruned, workdir: Path, task, example: dict) -> None:
    """What `from_pretrained` gives back must compute what the pruned model in memory computes."""
    import torch
    import transformers

    reloaded = (
        getattr(transformers, task.AUTO_MODEL).from_pretrained(str(workdir), **pretrained_options(workdir)).eval()
    )
    with torch.no_grad():
        diff = (main_output(reloaded(**example)) - main_output(pruned(**example))).abs().max().item()
    if diff > 1e-5:
        raise RuntimeError(f"the saved pruned checkpoint differs from the pruned model by {diff} after reloading")


def main_output(out):
    """What a model computes: its logits, a reader's start and end logits (stacked), or the hidden states of a
    bare encoder (an embedding model)."""
    if getattr(out, "logits", None) is not None:
        return out.logits
    if getattr(out, "start_logits", None) is not None:
        import torch

        return torch.stack([out.start_logits, out.end_logits], dim=-1)
    return out.last_hidden_state
