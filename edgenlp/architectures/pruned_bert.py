"""BERT whose layers keep different numbers of attention heads and feed-forward channels.

Written by `edgenlp prune`. The per-layer shapes live in the config (`layer_heads`,
`layer_intermediate_sizes`), so the checkpoint needs neither `pruned_heads` (gone in transformers 5)
nor any patching: the classes below build each layer at its pruned size before the weights load.
This file imports only torch and transformers, because `save_pretrained` copies it next to the
weights: `from_pretrained(folder, trust_remote_code=True)` then works where edgenlp is not installed.
"""

from __future__ import annotations

from torch import nn
from transformers import (
    BertConfig,
    BertForQuestionAnswering,
    BertForSequenceClassification,
    BertForTokenClassification,
    BertModel,
)


class PrunedBertConfig(BertConfig):
    model_type = "edgenlp-pruned-bert"

    def __init__(self, layer_heads=None, layer_intermediate_sizes=None, attention_head_size=None, **kwargs):
        super().__init__(**kwargs)
        layers, heads = self.num_hidden_layers, self.num_attention_heads
        self.attention_head_size = attention_head_size or self.hidden_size // heads
        self.layer_heads = list(layer_heads or [heads] * layers)
        self.layer_intermediate_sizes = list(layer_intermediate_sizes or [self.intermediate_size] * layers)
        if len(self.layer_heads) != layers or len(self.layer_intermediate_sizes) != layers:
            raise ValueError(f"layer_heads and layer_intermediate_sizes need one entry for each of {layers} layers")
        if min(self.layer_heads) < 1 or min(self.layer_intermediate_sizes) < 1:
            raise ValueError("every layer needs at least one attention head and one feed-forward channel")


def shape_layers(encoder, config: PrunedBertConfig) -> None:
    """Give every encoder layer the head count and feed-forward width its config lists."""
    hidden = config.hidden_size
    for layer, heads, width in zip(encoder.layer, config.layer_heads, config.layer_intermediate_sizes):
        attention = layer.attention.self
        all_heads = heads * config.attention_head_size
        attention.query, attention.key, attention.value = (nn.Linear(hidden, all_heads) for _ in range(3))
        attention.num_attention_heads = heads
        attention.attention_head_size = config.attention_head_size
        attention.all_head_size = all_heads
        layer.attention.output.dense = nn.Linear(all_heads, hidden)
        layer.intermediate.dense = nn.Linear(hidden, width)
        layer.output.dense = nn.Linear(width, hidden)


class PrunedBertModel(BertModel):
    config_class = PrunedBertConfig

    def __init__(self, config, add_pooling_layer=True):
        super().__init__(config, add_pooling_layer=add_pooling_layer)
        shape_layers(self.encoder, config)
        self.post_init()


class PrunedBertForSequenceClassification(BertForSequenceClassification):
    config_class = PrunedBertConfig

    def __init__(self, config):
        super().__init__(config)
        shape_layers(self.bert.encoder, config)
        self.post_init()


class PrunedBertForTokenClassification(BertForTokenClassification):
    config_class = PrunedBertConfig

    def __init__(self, config):
        super().__init__(config)
        shape_layers(self.bert.encoder, config)
        self.post_init()


class PrunedBertForQuestionAnswering(BertForQuestionAnswering):
    config_class = PrunedBertConfig

    def __init__(self, config):
        super().__init__(config)
        shape_layers(self.bert.encoder, config)
        self.post_init()
