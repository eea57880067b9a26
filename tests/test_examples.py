"""The worked examples in examples/ run top to bottom (on tiny settings), so they never rot."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgenlp import settings

pytestmark = pytest.mark.slow

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.mark.real
@pytest.mark.parametrize(
    "name",
    [
        "bert_sentiment.ipynb",
        "gpt2_generation.ipynb",
        "minilm_embeddings.ipynb",
        "minilm_wnut17_entities.ipynb",
        "minilm_squad_answers.ipynb",
    ],
)
def test_notebook_runs_top_to_bottom(name, tmp_path, monkeypatch):
    import nbformat
    from nbclient import NotebookClient

    book = nbformat.read(EXAMPLES / name, as_version=4)
    monkeypatch.setenv("EDGENLP_EXAMPLES_TINY", "1")
    monkeypatch.setenv("EDGENLP_EXAMPLES_OUT", str(tmp_path / "runs"))
    monkeypatch.setenv("EDGENLP_DATA_DIR", str(settings.data_dir().resolve()))  # the kernel runs in tmp_path
    NotebookClient(book, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    errors = [o for c in book.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors
    last = book.cells[-1].outputs
    assert last, "the last cell shows the model's answer"
    text = "".join(o.get("text", "") or str(o.get("data", {}).get("text/plain", "")) for o in last)
    wanted = {
        "bert_sentiment.ipynb": "label",
        "minilm_embeddings.ipynb": "similar pair",
        "minilm_wnut17_entities.ipynb": "spans point into the text: True",
        "minilm_squad_answers.ipynb": "the span points into the context: True",
    }.get(name, "")
    assert wanted in text and text.strip()
