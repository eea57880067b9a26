"""The files tagged sentences arrive in: CoNLL (a file, or a folder of split files), JSONL / JSON, the hub.

Each reader checks that the tags are IOB2 and says where one is not, in one line.
"""

from __future__ import annotations

from pathlib import Path

from ...data import SPLIT_ALIASES, hub_dataset
from ...errors import DataError
from .sentences import Sentences

CONLL_SUFFIXES = (".conll", ".bio", ".iob")
JSON_SUFFIXES = (".jsonl", ".json")
SPLIT_FILES = {
    "train": ("train",),
    "validation": ("dev", "validation", "valid"),
    "test": ("test",),
}


def check_iob2(words: list[str], tags: list[str], origin: str, where: str) -> None:
    """Refuse tags that are not IOB2, naming the first one."""
    previous = "O"
    for i, (word, tag) in enumerate(zip(words, tags)):
        prefix, dash, kind = tag.partition("-")
        if tag != "O" and not (dash and prefix in ("B", "I") and kind):
            raise DataError(
                f"{origin} {where}, word {i + 1} ({word!r}): tag {tag!r} is not IOB2 (O, B-type or I-type): "
                "convert the tags to IOB2 (BIOES and bare type names are not read)"
            )
        if prefix == "I" and previous[2:] != kind:
            raise DataError(
                f"{origin} {where}, word {i + 1} ({word!r}): {tag} follows {previous}, but in IOB2 an entity "
                f"starts with B-{kind}: convert the tags from IOB1 to IOB2"
            )
        previous = tag


def read_conll(path: Path) -> Sentences:
    """The sentences of a CoNLL file: the first column is the word, the last its tag."""
    out, words, tags = Sentences(), [], []
    raw = path.read_bytes().decode("utf-8", errors="replace").lstrip("\ufeff")
    origin = str(path)

    def close() -> None:
        if words:
            check_iob2(words, tags, origin, f"sentence {len(out) + 1}")
            out.words.append(list(words))
            out.tags.append(list(tags))
            words.clear()
            tags.clear()

    for n, line in enumerate(raw.splitlines(), 1):
        columns = line.split("\t") if "\t" in line.strip() else line.split()
        columns = [c.strip() for c in columns]
        if not any(columns):
            close()
            continue
        if columns[0] == "-DOCSTART-":
            continue
        if len(columns) < 2 or not columns[0] or not columns[-1]:
            raise DataError(
                f"{origin} line {n}: {line.strip()[:60]!r} is not a word and its tag: write one `word<TAB>tag` "
                "per line and a blank line after each sentence"
            )
        words.append(columns[0])
        tags.append(columns[-1])
    close()
    if not out:
        raise DataError(
            f"{origin} holds no sentences: write one `word<TAB>tag` per line, a blank line between sentences"
        )
    return out


def rows_to_splits(rows: list[dict], origin: str, tag_names: list[str] | None = None) -> dict[str, Sentences]:
    splits: dict[str, Sentences] = {}
    for n, row in enumerate(rows, 1):
        words = row.get("tokens", row.get("words"))
        tags = row.get("tags", row.get("ner_tags"))
        if not isinstance(words, list) or not isinstance(tags, list) or not words:
            raise DataError(
                f"{origin} row {n}: a sentence needs `tokens` (a list of words) and `tags` (one tag per word)"
            )
        if tag_names is not None and all(isinstance(t, int) for t in tags):
            tags = [tag_names[t] if 0 <= t < len(tag_names) else str(t) for t in tags]
        if not all(isinstance(t, str) for t in tags):
            raise DataError(
                f"{origin} row {n}: tags are {type(tags[0]).__name__}s; give tag names (O, B-person, ...), not numbers"
            )
        if len(words) != len(tags):
            raise DataError(f"{origin} row {n}: {len(words)} words but {len(tags)} tags: give one tag per word")
        words = [str(w) for w in words]
        check_iob2(words, tags, origin, f"row {n}")
        if "split" in row:
            name = SPLIT_ALIASES.get(str(row["split"]), str(row["split"]))
            if name not in SPLIT_FILES:
                raise DataError(f"{origin} row {n}: split {row['split']!r} is not train, validation or test")
        else:
            name = "unsplit"
        part = splits.setdefault(name, Sentences())
        part.words.append(words)
        part.tags.append(list(tags))
    return splits


def split_files(folder: Path) -> dict[str, Path]:
    found = {}
    for split, stems in SPLIT_FILES.items():
        for stem in stems:
            hit = next((folder / f"{stem}{s}" for s in CONLL_SUFFIXES if (folder / f"{stem}{s}").is_file()), None)
            if hit is not None:
                found[split] = hit
                break
    return found


def hub_splits(name: str) -> dict[str, Sentences]:
    ds = hub_dataset(name)
    splits: dict[str, Sentences] = {}
    for split_name, part in ds.items():
        feature = getattr(part, "features", {}).get("ner_tags")
        names = getattr(getattr(feature, "feature", None), "names", None)
        rows = [dict(r, split=split_name) for r in part]
        for key, value in rows_to_splits(rows, f"hub:{name}", names).items():
            splits.setdefault(key, Sentences()).add(value)
    return splits
