"""GPT-2 whose blocks keep different numbers of attention heads and MLP channels.

Written by `edgenlp prune`. The per-block shapes live in the config (`layer_heads`, `layer_inner`,
`head_dim`), so the checkpoint needs neither `pruned_heads` (gone in transformers 5) nor any
patching: the classes below build each block at its pruned size before the weights load. The
hidden size is kept, so embeddings, the tied language-model head and the residual stream are those
of the parent. This file imports only torch and transformers, because `save_pretrained` copies it
next to the weights: `from_pretrained(folder, trust_remote_code=True)` works without edgenlp.
"""

from __future__ import annotations

from transformers import GPT2Config, GPT2ForSequenceClassification, GPT2LMHeadModel, GPT2Model
from transformers.pytorch_utils import Conv1D


class PrunedGPT2Config(GPT2Config):
    model_type = "edgenlp-pruned-gpt2"

    def __init__(self, layer_heads=None, layer_inner=None, head_dim=None, **kwargs):
        super().__init__(**kwargs)
        layers = self.n_layer
        self.head_dim = head_dim or self.n_embd // self.n_head
        self.layer_heads = list(layer_heads or [self.n_head] * layers)
        self.layer_inner = list(layer_inner or [self.n_inner or 4 * self.n_embd] * layers)
        if len(self.layer_heads) != layers or len(self.layer_inner) != layers:
            raise ValueError(f"layer_heads and layer_inner need one entry for each of {layers} blocks")
        if min(self.layer_heads) < 1 or min(self.layer_inner) < 1:
            raise ValueError("every block needs at least one attention head and one MLP channel")


def shape_blocks(transformer, config: PrunedGPT2Config) -> None:
    """Give every block the head count and MLP width its config lists (Conv1D: weight is (in, out))."""
    hidden = config.n_embd
    for block, heads, inner in zip(transformer.h, config.layer_heads, config.layer_inner):
        attention = block.attn
        width = heads * config.head_dim
        attention.c_attn = Conv1D(3 * width, hidden)
        attention.c_proj = Conv1D(hidden, width)
        attention.num_heads, attention.head_dim, attention.split_size = heads, config.head_dim, width
        block.mlp.c_fc = Conv1D(inner, hidden)
        block.mlp.c_proj = Conv1D(hidden, inner)


class PrunedGPT2Model(GPT2Model):
    config_class = PrunedGPT2Config

    def __init__(self, config):
        super().__init__(config)
        shape_blocks(self, config)
        self.post_init()


class PrunedGPT2LMHeadModel(GPT2LMHeadModel):
    config_class = PrunedGPT2Config

    def __init__(self, config):
        super().__init__(config)
        shape_blocks(self.transformer, config)
        self.post_init()


class PrunedGPT2ForSequenceClassification(GPT2ForSequenceClassification):
    config_class = PrunedGPT2Config

    def __init__(self, config):
        super().__init__(config)
        shape_blocks(self.transformer, config)
        self.post_init()
