"""Tasks: what differs between classifying text and generating it, behind one small interface.

Each task module declares

    NAME                                   `text-classification`, `text-generation`
    AUTO_MODEL                             the transformers Auto class of its PyTorch models
    load_data(spec) -> data                the splits it trains and evaluates on (`.describe()`)
    fingerprint(spec) -> str               the data's content hash, for artifact ids
    validation_texts(data, n) -> [str]     texts a new variant is checked on
    check_against_parent(parent, child, texts, settings) -> dict
                                           raises ValidationFailed when the child is not faithful
    eval_set(data, model_labels)           the held-out data the harness evaluates on (it names its task)
    payload(eval_set, settings) -> dict    what the evaluation worker reads (texts, labels, prompts)
    check_profiles(candidates, profiles)   refuse shapes a candidate cannot take, before any process starts
    truncated_input(profile) -> int | None the longest input a variant's max_length must allow
    Session(path, runner, threads, payload)
                                           the worker side: answers `eval` and the workload ops
    eval_request(candidate, reference)     extra fields of the `eval` request (the reference to compare with)
    workloads(profile, settings, round, candidate, reference) -> [Workload]
                                           the timed requests of one round under one profile
    summarise(candidate, raw, reference_raw, payload, profiles, settings) -> dict
                                           metrics, latency summaries and per-profile figures
    ratios(variant, reference, settings) -> dict
    QUALITY                                the quality axis of selection and the Pareto front
    metric(results, variant, name, profile) -> float | None
                                           the task's own gate and selection metrics (GATE_METRICS)
    SPEED                                  (metric, description) that selection minimises
    eval_section(payload, reference_raw, profiles) -> dict
                                           the `eval` block of the results
    report_sections(results) -> [str]      its Markdown sections; figures(results) its plots; and
                                           `report/templates/<NAME>.html.j2` its HTML tables
    MODEL_MUST_BE                          (optional) what a model must already be for this task: it
                                           cannot be given this task by re-heading another model
    bundle_section(variant, folder, model_rel) -> dict
                                           its part of a bundle's manifest (labels and padding, or the
                                           KV cache and generation defaults); may edit the bundle's config
    bundle_summary(results, variant) -> dict
                                           the measured figures a bundle's manifest carries
    Trainer                                the task's half of the training loop (stages/finetune.py,
                                           stages/distill.py) and the calibration batches of pruning

The harness, the selection, the pipeline and the report ask the task; none of them branches on its
name. A task is read from the model's config and can be forced (`--task`, recipe `task:`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import import_module
from types import ModuleType

from ..errors import EdgeNLPError

_MODULES = {
    "text-classification": "edgenlp.tasks.classification",
    "text-generation": "edgenlp.tasks.generation",
}
TASK_NAMES = tuple(_MODULES)


@dataclass(frozen=True)
class Quality:
    """The quality axis: its metric, which way is better, and how a loss against the reference reads."""

    metric: str
    higher_is_better: bool
    drop_metric: str
    drop_unit: str
    label: str


@dataclass
class Workload:
    """One timed request sent to a worker each round (`key` names where its answers are kept)."""

    key: str
    request: dict = field(default_factory=dict)


def get(name: str) -> ModuleType:
    if name not in _MODULES:
        raise EdgeNLPError(f"unknown task '{name}': use one of {', '.join(TASK_NAMES)}")
    return import_module(_MODULES[name])


def of_config(config: dict) -> str | None:
    """The task a checkpoint's config.json says it was built for; None for a bare encoder."""
    archs = config.get("architectures") or []
    if any(a.endswith("ForSequenceClassification") for a in archs):
        return "text-classification"
    if any(a.endswith(("LMHeadModel", "ForCausalLM")) for a in archs):
        return "text-generation"
    if config.get("model_type") in ("gpt2", "gpt_neo", "gptj", "llama", "mistral", "qwen2") and not archs:
        return "text-generation"
    return None


def resolve(model_task: str | None, asked: str | None, model: str) -> ModuleType:
    """The task to run: the one asked for, else the model's own; a bare encoder is a classifier to train.

    A causal LM given for classification is re-headed only when the user says so (`--task
    text-classification`): silently turning a language model into a classifier loses what it was.
    """
    if asked:
        chosen = get(asked)
        if getattr(chosen, "MODEL_MUST_BE", None) and model_task != chosen.NAME:
            raise EdgeNLPError(f"{model} is {'a ' + model_task if model_task else 'a bare encoder'} model, not "
                               f"{chosen.MODEL_MUST_BE}: pick such a model, or drop the {chosen.NAME} task")
        return chosen
    if model_task is None:
        return get("text-classification")
    return get(model_task)
