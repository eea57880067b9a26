"""Labelled texts: the splits a classifier trains on, the held-out set it is measured on, the tuning and
calibration sets the searches and static quantisation read (all carved from the training data).
"""

from __future__ import annotations

from dataclasses import dataclass

from .spec import NAME


@dataclass
class EvalSet:
    texts: list[str]
    labels: list[int]
    label_names: list[str]
    name: str = "eval"
    task: str = NAME


def load_data(spec):
    from ... import data

    return data.load(spec)


def claims_data(spec) -> bool:
    """Never: a bare encoder with labelled texts is a classifier by default anyway."""
    return False


def fingerprint(spec) -> str:
    from ... import data

    return data.fingerprint(spec)


def validation_texts(dataset, n: int) -> list[str]:
    return dataset.validation.sample(n, seed=0).texts


def eval_set(dataset, model_labels: list[str]) -> EvalSet:
    test = dataset.aligned_to(model_labels)
    return EvalSet(test.test.texts, test.test.labels, test.labels, name=f"{dataset.name}/test")


def payload(eval_set: EvalSet, settings) -> dict:
    """The evaluation texts in a seeded order (a sample, if the settings cap it) with their labels."""
    import random

    order = list(range(len(eval_set.texts)))
    random.Random(settings.seed).shuffle(order)
    if settings.max_eval_examples:
        order = order[: settings.max_eval_examples]
    return {
        "task": NAME,
        "name": eval_set.name,
        "label_names": eval_set.label_names,
        "texts": [eval_set.texts[i] for i in order],
        "labels": [eval_set.labels[i] for i in order],
    }


def tuning_set(
    dataset, model_labels: list[str], limit: int | None, seed: int = 0, seen: list[dict] = (), minimum: int = 100
) -> EvalSet:
    """Validation examples (carved from the training data, never the test split) that no training stage
    picked its checkpoint on: `seen` are those stages' configs, whose Trainer evaluated on
    `validation.sample(max_eval_examples, seed)`; a checkpoint chosen on an example flatters it."""
    from ...data import Split
    from ...errors import DataError

    data = dataset.aligned_to(model_labels)
    used: set[str] = set()
    for config in seen:
        if "max_eval_examples" in config:
            used |= set(data.validation.sample(config["max_eval_examples"], config.get("seed", 0)).texts)
    pool = [(t, y) for t, y in zip(data.validation.texts, data.validation.labels) if t not in used]
    if len(pool) < minimum:
        raise DataError(
            f"only {len(pool)} validation examples were not used to pick a training checkpoint, fewer than "
            f"{minimum} for the search's tuning split: lower the training stages' max_eval_examples or "
            "raise the data's validation_fraction"
        )
    split = Split([t for t, _ in pool], [y for _, y in pool]).sample(limit, seed)
    return EvalSet(split.texts, split.labels, data.labels, name=f"{dataset.name}/tuning")


def calibration_batches(dataset, model_dir, samples: int, batch_size: int, seed: int = 0):
    """`samples` training texts as graph feeds, in batches of similar length (less padding), streamed."""
    from ...quantization.calibration import check_sample_count, text_feeds

    texts = dataset.train.sample(samples, seed).texts
    check_sample_count(len(texts), samples, f"the training split of {dataset.name}")
    return text_feeds(texts, model_dir, batch_size)
