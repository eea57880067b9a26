"""Sentences split into words, each word tagged IOB2 (`O`, `B-type`, `I-type`): what a tagger trains on.

Sources (`DataSpec.source`):
- `wnut17` (the data kit, `EDGENLP_DATA_DIR`): WNUT-17's train / dev / test CoNLL files; dev is the
  validation split.
- a CoNLL file (`.conll`, `.bio`, `.iob`: a word and its tag per line, other columns between them
  ignored, a blank line after each sentence, `-DOCSTART-` lines skipped): split by a hash of each
  sentence. A folder holding `train.conll`, `test.conll` (and `dev.conll` or `validation.conll`) keeps
  its splits.
- a `.jsonl` or `.json` file of `{"tokens": [...], "tags": [...]}` (or `ner_tags`; tag names, not
  numbers), with an optional `split`.
- `hub:NAME[:CONFIG]`: a hub dataset with `tokens` and `ner_tags` (its tag names read from its features).

Tags must be IOB2: every entity starts with `B-`, and `I-X` only continues an entity of type X.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field
from pathlib import Path

from ...data import DataSpec, kit_file, read_rows, text_bucket
from ...errors import DataError
from .formats import CONLL_SUFFIXES, JSON_SUFFIXES, hub_splits, read_conll, rows_to_splits, split_files
from .sentences import Sentences
from .spec import NAME

KIT = {"wnut17": ("ner-wnut17/train.conll", "ner-wnut17/dev.conll", "ner-wnut17/test.conll")}


def tag_order(tags: set[str]) -> list[str]:
    """`O`, then `B-` and `I-` of each entity type in alphabetical order (a stable id per tag)."""
    kinds = sorted({t[2:] for t in tags if t != "O"})
    return ["O", *(f"{p}-{k}" for k in kinds for p in "BI")]


@dataclass
class TaggedData:
    name: str
    train: Sentences
    validation: Sentences
    test: Sentences
    notes: list[str] = field(default_factory=list)
    task: str = NAME

    @property
    def labels(self) -> list[str]:
        """Every tag of the data (both prefixes of every type), in `tag_order`: the model's labels."""
        return tag_order({t for part in (self.train, self.validation, self.test) for s in part.tags for t in s})

    @property
    def entity_types(self) -> list[str]:
        return sorted({t[2:] for t in self.labels if t != "O"})

    def describe(self) -> dict:
        return {
            "name": self.name,
            "labels": self.labels,
            "notes": self.notes,
            "sizes": {"train": len(self.train), "validation": len(self.validation), "test": len(self.test)},
        }


@dataclass
class EvalSet:
    """Held-out sentences as words with their gold tags (names), and each sentence as text."""

    words: list[list[str]]
    tags: list[list[str]]
    label_names: list[str]
    name: str = "eval"
    task: str = NAME

    @property
    def texts(self) -> list[str]:
        return [" ".join(w) for w in self.words]


def _by_hash(sentences: Sentences, fractions: dict[str, float]) -> dict[str, Sentences]:
    """Sentences split by a hash of their text: `fractions` maps split names to shares, the rest is train."""
    out = {name: Sentences() for name in ("train", *fractions)}
    for words, tags in zip(sentences.words, sentences.tags):
        b, name, edge = text_bucket(" ".join(words)), "train", 0.0
        for split_name, share in fractions.items():
            edge += share
            if b < edge:
                name = split_name
                break
        out[name].words.append(words)
        out[name].tags.append(tags)
    return out


def load_data(spec: DataSpec | str) -> TaggedData:
    if isinstance(spec, str):
        spec = DataSpec(source=spec)
    source, notes = spec.source.strip(), []
    path = Path(source).expanduser()
    if source in KIT:
        splits = {n: read_conll(kit_file(*p.split("/"))) for n, p in zip(("train", "validation", "test"), KIT[source])}
        notes.append("WNUT-17 dev is the validation split; test is WNUT-17's test split")
    elif source.startswith("hub:"):
        splits = hub_splits(source[4:])
    elif path.is_dir():
        files = split_files(path)
        if "train" not in files or "test" not in files:
            raise DataError(f"{path} holds no train.conll and test.conll: put the splits there, or pass one CoNLL file")
        splits = {name: read_conll(file) for name, file in files.items()}
    elif path.is_file() and path.suffix.lower() in CONLL_SUFFIXES:
        splits = _by_hash(read_conll(path), {"test": spec.test_fraction, "validation": spec.validation_fraction})
    elif path.is_file() and path.suffix.lower() in JSON_SUFFIXES:
        splits = rows_to_splits(read_rows(path.read_bytes(), path.suffix.lower(), str(path)), str(path))
        if "unsplit" in splits:
            if len(splits) > 1:
                raise DataError(f"{path}: some rows have a split and some have none: give every row a split, or none")
            splits = _by_hash(splits["unsplit"], {"test": spec.test_fraction, "validation": spec.validation_fraction})
    else:
        raise DataError(
            f"data '{source}' for {NAME} is neither wnut17, nor a CoNLL file ({', '.join(CONLL_SUFFIXES)}) or folder "
            "of them, nor a JSONL file of tokens and tags, nor hub:NAME: fix the name or the path"
        )
    if splits.get("train") and not splits.get("validation"):  # carved from train, by the sentence
        carved = _by_hash(splits["train"], {"validation": spec.validation_fraction})
        splits["train"], splits["validation"] = carved["train"], carved["validation"]
    for split_name in ("train", "validation", "test"):
        if not splits.get(split_name):
            raise DataError(f"data '{source}' gives no {split_name} sentences: add sentences or change the fractions")
    train = splits["train"].sample(spec.max_train_examples, spec.seed)
    test = splits["test"].sample(spec.max_test_examples, spec.seed)
    display = source if not path.exists() else path.name
    return TaggedData(display, train, splits["validation"], test, notes)


def claims_data(spec: DataSpec | str) -> bool:
    """Tagged words: `wnut17`, a CoNLL file or folder, or a JSONL file whose first row has tokens and tags."""
    if isinstance(spec, str):
        spec = DataSpec(source=spec)
    source = spec.source.strip()
    if source in KIT:
        return True
    path = Path(source).expanduser()
    if path.is_dir():
        return bool(split_files(path))
    suffix = path.suffix.lower()
    if suffix in CONLL_SUFFIXES:
        return path.is_file()
    if suffix != ".jsonl" or not path.is_file():
        return False
    with open(path, "rb") as f:
        first = f.readline(1 << 20)
    try:
        rows = read_rows(first, suffix, str(path))
    except DataError:
        return False
    return bool(rows) and "tokens" in rows[0] and ("tags" in rows[0] or "ner_tags" in rows[0])


def fingerprint(spec: DataSpec | str) -> str:
    """A hash of the data's files (a hub dataset: its name)."""
    if isinstance(spec, str):
        spec = DataSpec(source=spec)
    source = spec.source.strip()
    if source.startswith("hub:"):
        return "hub:" + source[4:]
    path = Path(source).expanduser()
    if source in KIT:
        files = [kit_file(*p.split("/")) for p in KIT[source]]
    elif path.is_dir():
        files = [f for _, f in sorted(split_files(path).items())]
    else:
        files = [path]
    digest = hashlib.sha256()
    for file in files:
        try:
            digest.update(file.read_bytes())
        except OSError as exc:
            raise DataError(
                f"data file {file} cannot be read ({exc.strerror}): fix the path or its permissions"
            ) from None
    return digest.hexdigest()[:32]


def aligned_labels(dataset: TaggedData, model_labels: list[str]) -> list[str]:
    """The tag names in the model's order; a model that lacks one of the data's tags is refused."""
    if not model_labels:
        return dataset.labels
    missing = sorted(set(dataset.labels) - set(model_labels))
    if missing:
        raise DataError(
            f"the model tags {model_labels} but the data has tags {missing} it does not: benchmark it on data of "
            "its tags, or fine-tune it on this data"
        )
    return list(model_labels)


def validation_texts(dataset: TaggedData, n: int) -> list[str]:
    return dataset.validation.sample(n, seed=0).texts()


def eval_set(dataset: TaggedData, model_labels: list[str]) -> EvalSet:
    return EvalSet(dataset.test.words, dataset.test.tags, aligned_labels(dataset, model_labels), f"{dataset.name}/test")


def payload(eval_set: EvalSet, settings) -> dict:
    """The sentences (a seeded sample, if the settings cap them) as words, gold tags and text."""
    order = list(range(len(eval_set.words)))
    random.Random(settings.seed).shuffle(order)
    if settings.max_eval_examples:
        order = order[: settings.max_eval_examples]
    return {
        "task": NAME,
        "name": eval_set.name,
        "label_names": eval_set.label_names,
        "words": [eval_set.words[i] for i in order],
        "tags": [eval_set.tags[i] for i in order],
        "texts": [" ".join(eval_set.words[i]) for i in order],
    }


def tuning_set(
    dataset: TaggedData, model_labels, limit: int | None, seed: int = 0, seen=(), minimum: int = 100
) -> EvalSet:
    """Validation sentences that no training stage picked its checkpoint on (`seen`: those stages' configs)."""
    used: set[tuple[str, ...]] = set()
    for config in seen:
        if "max_eval_examples" in config:
            picked = dataset.validation.sample(config["max_eval_examples"], config.get("seed", 0))
            used |= {tuple(w) for w in picked.words}
    pool = Sentences()
    for words, tags in zip(dataset.validation.words, dataset.validation.tags):
        if tuple(words) not in used:
            pool.words.append(words)
            pool.tags.append(tags)
    if len(pool) < minimum:
        raise DataError(
            f"only {len(pool)} validation sentences were not used to pick a training checkpoint, fewer than "
            f"{minimum} for the search's tuning split: lower the training stages' max_eval_examples"
        )
    picked = pool.sample(limit, seed)
    return EvalSet(picked.words, picked.tags, aligned_labels(dataset, model_labels), f"{dataset.name}/tuning")


def calibration_batches(dataset: TaggedData, model_dir, samples: int, batch_size: int, seed: int = 0):
    """`samples` training sentences as graph feeds, in batches of similar length, streamed."""
    from ...quantization.calibration import check_sample_count, text_feeds

    texts = dataset.train.sample(samples, seed).texts()
    check_sample_count(len(texts), samples, f"the training sentences of {dataset.name}")
    return text_feeds(texts, model_dir, batch_size)
