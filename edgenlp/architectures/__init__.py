"""Model classes for checkpoints whose layers differ in shape (what `stages/prune` writes).

`register()` tells transformers' Auto classes, and Optimum's ONNX exporter when it is installed,
about them; edgenlp calls it before loading any checkpoint, so a pruned model goes through
fine-tuning, export, validation and benchmarking like any other. Other programs call
`edgenlp.architectures.register()` once, or load with `trust_remote_code=True` (the checkpoint
carries its own modeling file). `import edgenlp` itself stays free of torch and transformers.
"""

from __future__ import annotations

from dataclasses import dataclass

_registered = False


@dataclass(frozen=True)
class Family:
    """What the pruner needs to know about one architecture family."""

    name: str
    model_types: tuple[str, ...]  # config.model_type values it prunes (the pruned one included)
    pruned_model_type: str
    module: str  # the self-contained modeling file


FAMILIES = {
    "bert": Family("bert", ("bert", "edgenlp-pruned-bert"), "edgenlp-pruned-bert", "edgenlp.architectures.pruned_bert"),
    "gpt2": Family("gpt2", ("gpt2", "edgenlp-pruned-gpt2"), "edgenlp-pruned-gpt2", "edgenlp.architectures.pruned_gpt2"),
}

PRUNED_MODEL_TYPES = frozenset(f.pruned_model_type for f in FAMILIES.values())


def family_of(model_type: str | None) -> Family | None:
    return next((f for f in FAMILIES.values() if model_type in f.model_types), None)


def register() -> None:
    """Make the pruned architectures loadable by `AutoConfig`/`AutoModelFor...` (idempotent)."""
    global _registered
    if _registered:
        return
    from transformers import (
        AutoConfig,
        AutoModel,
        AutoModelForCausalLM,
        AutoModelForQuestionAnswering,
        AutoModelForSequenceClassification,
        AutoModelForTokenClassification,
    )

    from . import pruned_bert, pruned_gpt2

    for config_class, auto_models in (
        (
            pruned_bert.PrunedBertConfig,
            {
                AutoModel: pruned_bert.PrunedBertModel,
                AutoModelForSequenceClassification: pruned_bert.PrunedBertForSequenceClassification,
                AutoModelForTokenClassification: pruned_bert.PrunedBertForTokenClassification,
                AutoModelForQuestionAnswering: pruned_bert.PrunedBertForQuestionAnswering,
            },
        ),
        (
            pruned_gpt2.PrunedGPT2Config,
            {
                AutoModel: pruned_gpt2.PrunedGPT2Model,
                AutoModelForCausalLM: pruned_gpt2.PrunedGPT2LMHeadModel,
                AutoModelForSequenceClassification: pruned_gpt2.PrunedGPT2ForSequenceClassification,
            },
        ),
    ):
        AutoConfig.register(config_class.model_type, config_class, exist_ok=True)
        config_class.register_for_auto_class()  # save_pretrained then writes auto_map and the modeling file
        for auto, model_class in auto_models.items():
            auto.register(config_class, model_class, exist_ok=True)
            model_class.register_for_auto_class(auto.__name__)
    _register_onnx_configs()
    _registered = True


def _register_onnx_configs() -> None:
    try:
        from optimum.exporters.onnx.model_configs import BertOnnxConfig, GPT2OnnxConfig
        from optimum.exporters.tasks import TasksManager
        from optimum.utils.input_generators import DummyPastKeyValuesGenerator, DummyTextInputGenerator
    except ImportError:  # exporting needs Optimum; loading and training do not
        return
    register = TasksManager.create_register("onnx", overwrite_existing=True)

    class PerLayerPastGenerator(DummyPastKeyValuesGenerator):
        """Dummy KV cache with each block's own head count (Optimum's assumes one for all)."""

        def generate(self, input_name, framework="pt", int_dtype="int64", float_dtype="fp32"):
            config = self.normalized_config.config
            shapes = [(self.batch_size, heads, self.sequence_length, config.head_dim) for heads in config.layer_heads]
            return [
                (
                    self.random_float_tensor(s, framework=framework, dtype=float_dtype),
                    self.random_float_tensor(s, framework=framework, dtype=float_dtype),
                )
                for s in shapes
            ]

        def __init__(self, task, normalized_config, **kwargs):
            super().__init__(task, normalized_config, **kwargs)
            self.normalized_config = normalized_config

    @register(
        "edgenlp-pruned-bert", "feature-extraction", "text-classification", "token-classification", "question-answering"
    )
    class PrunedBertOnnxConfig(BertOnnxConfig):
        pass

    @register(
        "edgenlp-pruned-gpt2",
        "feature-extraction",
        "feature-extraction-with-past",
        "text-generation",
        "text-generation-with-past",
        "text-classification",
    )
    class PrunedGPT2OnnxConfig(GPT2OnnxConfig):
        DUMMY_INPUT_GENERATOR_CLASSES = (DummyTextInputGenerator, PerLayerPastGenerator)
        DUMMY_PKV_GENERATOR_CLASS = PerLayerPastGenerator
