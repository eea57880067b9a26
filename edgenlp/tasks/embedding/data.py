"""Sentence pairs scored 0-5 for similarity: what an embedding model trains on and is measured by.

Sources (`DataSpec.source`):
- `sts-b` (the data kit, `EDGENLP_DATA_DIR`): the STS Benchmark's train / dev / test files; dev is the
  validation split. GLUE's TSVs hold sentences that start with a literal quote, so they are read with
  quoting off.
- a `.csv`, `.tsv`, `.jsonl` or `.json` file of pairs: columns `sentence1`, `sentence2` and `score`
  (or `text_column`, `pair_column`, `label_column`); a `split` column is honoured, else the pairs are
  split by a hash of their first sentence.
- `hub:NAME[:CONFIG]`: a hub dataset with those columns (needs the network).

The held-out set is the test split's distinct sentences (the retrieval corpus, embedded one by one)
and its pairs as indices into them, so that every sentence is embedded once.
"""

from __future__ import annotations

import hashlib
import math
import random
from dataclasses import dataclass, field
from pathlib import Path

from ...data import (
    FILE_SUFFIXES,
    SPLIT_ALIASES,
    DataSpec,
    clean_text,
    hub_dataset,
    kit_file,
    pick_column,
    read_rows,
    text_bucket,
)
from ...errors import DataError
from .spec import NAME

KIT = {"sts-b": ("sts-b/train.tsv", "sts-b/dev.tsv", "sts-b/test.tsv")}
MAX_SCORE = 5.0
QUERIES = 500
"""Sentences of the corpus whose nearest neighbours are compared with the reference's."""


@dataclass
class Pairs:
    first: list[str] = field(default_factory=list)
    second: list[str] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.scores)

    def sample(self, n: int | None, seed: int) -> Pairs:
        if n is None or n >= len(self):
            return self
        idx = sorted(random.Random(seed).sample(range(len(self)), n))
        return Pairs([self.first[i] for i in idx], [self.second[i] for i in idx], [self.scores[i] for i in idx])

    def sentences(self) -> list[str]:
        """Every distinct sentence of the pairs, in order of first appearance."""
        return list(dict.fromkeys([*self.first, *self.second]))


@dataclass
class PairData:
    name: str
    train: Pairs
    validation: Pairs
    test: Pairs
    notes: list[str] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    """No labels: an embedding model has none (the core asks every dataset)."""

    def describe(self) -> dict:
        return {
            "name": self.name,
            "notes": self.notes,
            "sizes": {"train": len(self.train), "validation": len(self.validation), "test": len(self.test)},
        }


@dataclass
class EvalSet:
    """The test split's distinct sentences, its pairs as indices into them, and the retrieval queries."""

    sentences: list[str]
    pairs: list[tuple[int, int]]
    scores: list[float]
    name: str = "eval"
    task: str = NAME

    @property
    def texts(self) -> list[str]:
        """The sentences, by the name every task's held-out set has."""
        return self.sentences


def _pairs_from_rows(rows: list[dict], spec: DataSpec, origin: str) -> dict[str, Pairs]:
    if not rows:
        raise DataError(f"data file {origin} has a header but no rows: add sentence pairs with a score")
    columns = rows[0].keys()
    first = pick_column(columns, spec.text_column, ("sentence1", "text1", "text"), "text", origin)
    second = pick_column(columns, spec.pair_column, ("sentence2", "text2", "pair"), "pair", origin)
    score = pick_column(columns, spec.label_column, ("score", "similarity", "label"), "label", origin)
    splits: dict[str, Pairs] = {}
    hashed = not any("split" in r for r in rows)
    for n, r in enumerate(rows, 1):
        a, b, raw = clean_text(r.get(first)), clean_text(r.get(second)), r.get(score)
        if not a.strip() or not b.strip():
            raise DataError(f"{origin} row {n}: a pair needs two sentences ('{first}' and '{second}'): fill both")
        try:
            value = float(raw)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            value = math.nan
        if not math.isfinite(value):
            raise DataError(
                f"{origin} row {n}: score {raw!r} is not a number: give every pair a similarity score "
                f"(column '{score}', 0 to {MAX_SCORE:g} as in STS-B)"
            )
        if hashed:
            name = "test" if text_bucket(a) < spec.test_fraction else "train"
            if name == "train" and text_bucket(a + "\n") < spec.validation_fraction:
                name = "validation"
        else:
            name = SPLIT_ALIASES.get(str(r.get("split")), str(r.get("split")))
            if name not in ("train", "validation", "test"):
                raise DataError(f"{origin} row {n}: split {r.get('split')!r} is not train, validation or test")
        one = splits.setdefault(name, Pairs())
        one.first.append(a)
        one.second.append(b)
        one.scores.append(value)
    return splits


def _file_rows(path: Path) -> list[dict]:
    return read_rows(path.read_bytes(), path.suffix.lower(), str(path))


def load_data(spec: DataSpec | str) -> PairData:
    if isinstance(spec, str):
        spec = DataSpec(source=spec)
    source, notes = spec.source.strip(), []
    if source in KIT:
        splits = {}
        for name, part in zip(("train", "validation", "test"), KIT[source]):
            path = kit_file(*part.split("/"))
            splits[name] = _pairs_from_rows([{**r, "split": name} for r in _file_rows(path)], spec, str(path))[name]
        notes.append("STS-B dev is the validation split; test is the STS Benchmark's test split")
    elif source.startswith("hub:"):
        ds = hub_dataset(source[4:])
        rows = [dict(r, split=split_name) for split_name, part in ds.items() for r in part]
        splits = _pairs_from_rows(rows, spec, source)
    else:
        path = Path(source).expanduser()
        if not path.is_file() or path.suffix.lower() not in FILE_SUFFIXES:
            raise DataError(
                f"data '{source}' for {NAME} is neither sts-b, nor a {', '.join(FILE_SUFFIXES)} file of sentence "
                "pairs, nor hub:NAME: fix the name or the path"
            )
        splits = _pairs_from_rows(_file_rows(path), spec, str(path))
    if splits.get("train") and not splits.get("validation"):  # carve it from train, by the first sentence
        held, kept = Pairs(), Pairs()
        t = splits["train"]
        for a, b, y in zip(t.first, t.second, t.scores):
            part = held if text_bucket(a + "\n") < spec.validation_fraction else kept
            part.first.append(a)
            part.second.append(b)
            part.scores.append(y)
        splits["train"], splits["validation"] = kept, held
    for split_name in ("train", "validation", "test"):
        if not splits.get(split_name):
            raise DataError(f"data '{source}' gives no {split_name} pairs: add rows or change the fractions")
    train = splits["train"].sample(spec.max_train_examples, spec.seed)
    test = splits["test"].sample(spec.max_test_examples, spec.seed)
    display = source if not Path(source).exists() else Path(source).name
    return PairData(display, train, splits["validation"], test, notes)


def claims_data(spec: DataSpec | str) -> bool:
    """Sentence pairs: `sts-b`, or a CSV/TSV/JSONL file whose first row has the second sentence's column."""
    if isinstance(spec, str):
        spec = DataSpec(source=spec)
    source = spec.source.strip()
    if source in KIT:
        return True
    path = Path(source).expanduser()
    suffix = path.suffix.lower()
    if source.startswith("hub:") or suffix not in (".csv", ".tsv", ".jsonl") or not path.is_file():
        return False
    with open(path, "rb") as f:
        first = f.readline(1 << 16)
        second = f.readline(1 << 16) if suffix != ".jsonl" else b""
    try:
        rows = read_rows(first + second, suffix, str(path))
    except DataError:
        return False
    return bool(rows) and (spec.pair_column or "sentence2") in rows[0]


def fingerprint(spec: DataSpec | str) -> str:
    """A hash of the pairs' files (a hub dataset: its name)."""
    from ... import data

    if isinstance(spec, str):
        spec = DataSpec(source=spec)
    source = spec.source.strip()
    if source in KIT:
        digest = hashlib.sha256()
        for part in KIT[source]:
            digest.update(kit_file(*part.split("/")).read_bytes())
        return digest.hexdigest()[:32]
    return data.fingerprint(spec)


def validation_texts(dataset: PairData, n: int) -> list[str]:
    return dataset.validation.sample(n, seed=0).sentences()[:n]


def eval_set(dataset: PairData, model_labels: list[str]) -> EvalSet:
    return _as_eval_set(dataset.test, f"{dataset.name}/test")


def _as_eval_set(pairs: Pairs, name: str) -> EvalSet:
    sentences = pairs.sentences()
    index = {s: i for i, s in enumerate(sentences)}
    return EvalSet(sentences, [(index[a], index[b]) for a, b in zip(pairs.first, pairs.second)], pairs.scores, name)


def payload(eval_set: EvalSet, settings) -> dict:
    """The sentences (all of them: the pairs and the retrieval corpus need every one), the pairs, and a
    seeded sample of the sentences as retrieval queries; `max_eval_examples` caps the pairs."""
    pairs, scores = eval_set.pairs, eval_set.scores
    if settings.max_eval_examples and settings.max_eval_examples < len(pairs):
        keep = sorted(random.Random(settings.seed).sample(range(len(pairs)), settings.max_eval_examples))
        pairs, scores = [pairs[i] for i in keep], [scores[i] for i in keep]
    queries = sorted(
        random.Random(settings.seed).sample(range(len(eval_set.sentences)), min(QUERIES, len(eval_set.sentences)))
    )
    return {
        "task": NAME,
        "name": eval_set.name,
        "texts": eval_set.sentences,
        "pairs": [list(p) for p in pairs],
        "scores": scores,
        "queries": queries,
    }


def tuning_set(
    dataset: PairData, model_labels, limit: int | None, seed: int = 0, seen=(), minimum: int = 100
) -> EvalSet:
    """Validation pairs that no training stage picked its checkpoint on (`seen`: those stages' configs)."""
    used: set[tuple[str, str]] = set()
    for config in seen:
        if "max_eval_examples" in config:
            picked = dataset.validation.sample(config["max_eval_examples"], config.get("seed", 0))
            used |= set(zip(picked.first, picked.second))
    v = dataset.validation
    pool = Pairs()
    for a, b, y in zip(v.first, v.second, v.scores):
        if (a, b) not in used:
            pool.first.append(a)
            pool.second.append(b)
            pool.scores.append(y)
    if len(pool) < minimum:
        raise DataError(
            f"only {len(pool)} validation pairs were not used to pick a training checkpoint, fewer than {minimum} "
            "for the search's tuning split: lower the training stages' max_eval_examples"
        )
    return _as_eval_set(pool.sample(limit, seed), f"{dataset.name}/tuning")


def calibration_batches(dataset: PairData, model_dir, samples: int, batch_size: int, seed: int = 0):
    """`samples` training sentences as graph feeds, in batches of similar length, streamed."""
    from ...quantization.calibration import check_sample_count, text_feeds

    texts = dataset.train.sentences()
    texts = [texts[i] for i in sorted(random.Random(seed).sample(range(len(texts)), min(samples, len(texts))))]
    check_sample_count(len(texts), samples, f"the training sentences of {dataset.name}")
    return text_feeds(texts, model_dir, batch_size)
