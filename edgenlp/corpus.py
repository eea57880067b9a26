"""Plain text for language models: the kit's corpora, WikiText-2, text files and hub datasets.

A `Corpus` is three lists of documents (train / validation / test). Labels, if the source has them,
are ignored: a language model reads text. Splits a source does not define are made by hashing each
document's text (deterministic, and a repeated document never lands in two splits).

Sources (the `source` field of the shared `DataSpec`):
- `bbc-news`, `medical-abstracts`, `sst2`, `tweets`: the texts of the labelled sets (`data.py`).
- `wikitext2`: WikiText-2 raw from the kit; only valid and test are in it, so 90% of the
  valid articles train, 10% validate, and `wiki.test.raw` is the test split.
- a `.txt` file: documents separated by blank lines.
- a `.csv`, `.tsv`, `.jsonl` or `.json` file with a text column (`text_column`).
- `hub:NAME[:CONFIG]`: a Hugging Face dataset with a text column.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from . import data as labelled
from . import settings
from .data import DataSpec, text_bucket
from .errors import DataError

WIKITEXT = "wikitext2"
TEXT_SETS = (WIKITEXT, *labelled.KIT_SETS, labelled.EMBEDDED)
TEXT_SUFFIXES = (".txt", ".raw", *labelled.FILE_SUFFIXES)


@dataclass
class Corpus:
    name: str
    train: list[str]
    validation: list[str]
    test: list[str]
    notes: list[str] = field(default_factory=list)

    def describe(self) -> dict:
        return {
            "name": self.name,
            "notes": self.notes,
            "kind": "corpus",
            "sizes": {"train": len(self.train), "validation": len(self.validation), "test": len(self.test)},
            "characters": {"train": sum(map(len, self.train)), "test": sum(map(len, self.test))},
        }


def _split_by_hash(docs: list[str], fractions: dict[str, float]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {"train": [], **{k: [] for k in fractions}}
    for doc in docs:
        b, name, edge = text_bucket(doc), "train", 0.0
        for split_name, share in fractions.items():
            edge += share
            if b < edge:
                name = split_name
                break
        out[name].append(doc)
    return out


def wikitext_articles(text: str) -> list[str]:
    """WikiText raw -> articles (a top-level ` = Title = ` heading starts each), blank lines dropped."""
    articles: list[list[str]] = []
    for line in text.splitlines():
        if re.match(r"^ = [^=].* = $", line):
            articles.append([])
        if line.strip():
            if not articles:
                articles.append([])
            articles[-1].append(line.strip())
    return ["\n".join(a) for a in articles if a]


def _kit(*parts: str) -> Path:
    path = settings.data_dir().joinpath(*parts)
    if not path.exists():
        raise DataError(
            f"data kit file {path} not found: set EDGENLP_DATA_DIR to the folder holding "
            f"{parts[0]}/ (now {settings.data_dir()})"
        )
    return path


def _from_wikitext(spec: DataSpec) -> tuple[dict[str, list[str]], list[str]]:
    valid = wikitext_articles(_kit(WIKITEXT, "wiki.valid.raw").read_text(encoding="utf-8"))
    test = wikitext_articles(_kit(WIKITEXT, "wiki.test.raw").read_text(encoding="utf-8"))
    held = _split_by_hash(valid, {"validation": spec.validation_fraction})
    return (
        {"train": held["train"], "validation": held["validation"], "test": test},
        [
            "wikitext2: the kit has no wiki.train.raw, so the valid articles are split for training and "
            "validation; wiki.test.raw is the test split"
        ],
    )


def _from_text_file(path: Path, spec: DataSpec) -> dict[str, list[str]]:
    text = path.read_bytes().decode("utf-8", errors="replace").lstrip("\ufeff")
    docs = [d.strip() for d in re.split(r"\n\s*\n", text) if d.strip()]
    if not docs:
        raise DataError(f"text file {path} is empty: give documents separated by blank lines")
    return _split_by_hash(docs, {"test": spec.test_fraction, "validation": spec.validation_fraction})


def _from_rows(rows: list[dict], spec: DataSpec, origin: str) -> dict[str, list[str]]:
    if not rows:
        raise DataError(f"data file {origin} has a header but no rows: add texts")
    column = labelled.pick_column(
        rows[0].keys(), spec.text_column, ("text", "sentence", "content", "abstract"), "text", origin
    )
    with_split = [r for r in rows if r.get("split")]
    if with_split and len(with_split) == len(rows):
        splits: dict[str, list[str]] = {"train": [], "validation": [], "test": []}
        for r in rows:
            name = labelled.SPLIT_ALIASES.get(str(r["split"]), str(r["split"]))
            if name not in splits:
                raise DataError(
                    f"{origin}: split '{r['split']}' is not train, validation or test: fix the split column"
                )
            if text := labelled.clean_text(r.get(column)):
                splits[name].append(text)
        if not splits["validation"]:
            held = _split_by_hash(splits["train"], {"validation": spec.validation_fraction})
            splits["train"], splits["validation"] = held["train"], held["validation"]
        return splits
    docs = [t for r in rows if (t := labelled.clean_text(r.get(column)))]
    return _split_by_hash(docs, {"test": spec.test_fraction, "validation": spec.validation_fraction})


def _from_labelled(source: str, spec: DataSpec) -> dict[str, list[str]]:
    sets = labelled.load(spec.model_copy(update={"source": source}))
    return {"train": sets.train.texts, "validation": sets.validation.texts, "test": sets.test.texts}


def _from_hub(name: str, spec: DataSpec) -> dict[str, list[str]]:
    ds = labelled.hub_dataset(name)
    rows = [{**row, "split": split} for split, part in ds.items() for row in part]
    return _from_rows(rows, spec, f"hub:{name}")


def load(spec: DataSpec | str) -> Corpus:
    if isinstance(spec, str):
        spec = DataSpec(source=spec)
    source = spec.source.strip()
    notes: list[str] = []
    if source == WIKITEXT:
        splits, notes = _from_wikitext(spec)
    elif source in TEXT_SETS:
        splits = _from_labelled(source, spec)
    elif source.startswith("hub:"):
        splits = _from_hub(source[4:], spec)
    else:
        path = Path(source).expanduser()
        if not path.exists():
            raise DataError(
                f"corpus '{source}' is neither a known set ({', '.join(TEXT_SETS)}), nor an existing "
                "file, nor hub:NAME: fix the name or the path"
            )
        if path.is_dir() or path.suffix.lower() not in TEXT_SUFFIXES:
            raise DataError(
                f"corpus file {path} must be one of {', '.join(TEXT_SUFFIXES)}: convert it or pass such a file"
            )
        if path.suffix.lower() in (".txt", ".raw"):
            splits = _from_text_file(path, spec)
        else:
            rows = labelled.read_rows(path.read_bytes(), path.suffix.lower(), str(path))
            splits = _from_rows(rows, spec, str(path))
    for name in ("train", "validation", "test"):
        if not splits.get(name):
            raise DataError(f"corpus '{source}' gives an empty {name} split: add text or change the fractions")
    train = splits["train"]
    if spec.max_train_examples and spec.max_train_examples < len(train):
        import random

        train = [train[i] for i in sorted(random.Random(spec.seed).sample(range(len(train)), spec.max_train_examples))]
    test = splits["test"][: spec.max_test_examples] if spec.max_test_examples else splits["test"]
    return Corpus(source if not Path(source).exists() else Path(source).name, train, splits["validation"], test, notes)


def fingerprint(spec: DataSpec | str) -> str:
    """The content hash of the corpus files (see `data.fingerprint`)."""
    if isinstance(spec, str):
        spec = DataSpec(source=spec)
    if spec.source.strip() == WIKITEXT:
        import hashlib

        digest = hashlib.sha256()
        for name in ("wiki.valid.raw", "wiki.test.raw"):
            digest.update(_kit(WIKITEXT, name).read_bytes())
        return digest.hexdigest()[:32]
    return labelled.fingerprint(spec)
