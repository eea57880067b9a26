"""Model folders written by strangers: no code of theirs runs unless the user passed --trust-remote-code."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edgenlp import models, trust
from edgenlp.artifact import build
from edgenlp.cli import app
from edgenlp.errors import ModelNotFoundError
from edgenlp.stages import export, prune

PLANTED = "import pathlib\npathlib.Path({marker!r}).write_text('ran')\n"


def _pruned(source: Path, out: Path):
    parent = models.resolve(str(source))
    cfg = prune.Config(ratio=0.5)
    art, _ = build(
        out, parent, prune.NAME, cfg, run=lambda work: prune.run(parent, cfg, work), libraries=prune.LIBRARIES
    )
    return art


@pytest.fixture
def no_trust(monkeypatch):
    monkeypatch.delenv(trust.ENV, raising=False)


def test_a_pruned_folder_exports_through_edgenlps_classes_never_its_own_modeling_file(tiny_run, tmp_path, no_trust):
    art = _pruned(tiny_run.variants["pytorch-fp32"].path, tmp_path / "pruned")
    planted = tmp_path / "planted"
    shutil.copytree(art.path, planted)
    marker = tmp_path / "code-ran"
    modeling = [p for p in planted.glob("*.py")]
    assert modeling, "a pruned checkpoint carries its modeling file (for programs without edgenlp)"
    for path in modeling:  # what an attacker would ship: the same auto_map, another module body
        path.write_text(PLANTED.format(marker=str(marker)) + path.read_text())
    parent = models.resolve(str(planted))
    cfg = export.Config()
    onnx_art, _ = build(
        tmp_path / "onnx",
        parent,
        export.NAME,
        cfg,
        run=lambda work: export.run(parent, cfg, work),
        libraries=export.LIBRARIES,
    )
    assert (onnx_art.path / "model.onnx").is_file()
    assert not marker.exists(), "the folder's own module was imported"


def _foreign_model(folder: Path, auto_map: dict, model_type: str = "stranger-net") -> Path:
    folder.mkdir()
    (folder / "config.json").write_text(
        json.dumps({"model_type": model_type, "auto_map": auto_map, "architectures": ["StrangerModel"]})
    )
    (folder / "model.safetensors").write_bytes(b"")
    return folder


def test_a_folder_that_needs_its_own_code_is_refused_in_one_line(tmp_path, no_trust):
    folder = _foreign_model(tmp_path / "m", {"AutoModel": "modeling_stranger.StrangerModel"})
    with pytest.raises(ModelNotFoundError, match="--trust-remote-code"):
        models.resolve(str(folder))
    result = CliRunner().invoke(app, ["optimize", str(folder), "--data", "x.csv", "--out", str(tmp_path / "o")])
    assert result.exit_code == 2
    assert "runs no code from a model folder" in result.output and "Traceback" not in result.output


def test_code_from_another_repository_is_refused_even_for_a_known_model_type(tmp_path, no_trust):
    folder = _foreign_model(tmp_path / "m", {"AutoModel": "evil/repo--modeling.Model"}, model_type="bert")
    with pytest.raises(ModelNotFoundError, match="another repository"):
        models.resolve(str(folder))


def test_the_flag_lets_the_user_allow_it_and_reaches_every_load(tmp_path, monkeypatch):
    folder = _foreign_model(tmp_path / "m", {"AutoModel": "modeling_stranger.StrangerModel"})
    trust.allow_remote_code(True)
    try:
        assert trust.pretrained_options() == {"trust_remote_code": True}
        trust.check_model_folder(folder, json.loads((folder / "config.json").read_text()), "m")
    finally:
        trust.allow_remote_code(False)
    assert trust.pretrained_options() == {"trust_remote_code": False}


@pytest.mark.parametrize("content", ['{"model_type": "bert", "hidden', "[1, 2]"])
def test_a_truncated_or_foreign_config_is_one_line(tmp_path, content):
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "config.json").write_text(content)
    (folder / "model.safetensors").write_bytes(b"")
    with pytest.raises(ModelNotFoundError, match="config.json"):
        models.resolve(str(folder))
    result = CliRunner().invoke(app, ["optimize", str(folder), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "internal error" not in result.output


def test_a_roberta_classifier_without_a_pad_token_keeps_its_pad_id_and_exports(tiny_gpt2, tiny_csv, tmp_path):
    """RoBERTa's position embeddings use config.pad_token_id as their padding index: it must survive training."""
    from transformers import AutoTokenizer, RobertaConfig, RobertaForSequenceClassification

    folder = tmp_path / "roberta"
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_gpt2))  # byte-level BPE without a pad token
    assert tokenizer.pad_token is None
    config = RobertaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=70,
        pad_token_id=1,
        num_labels=2,
    )
    RobertaForSequenceClassification(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    runner = CliRunner()
    out = tmp_path / "tuned"
    done = runner.invoke(
        app,
        [
            "finetune",
            str(folder),
            "--data",
            str(tiny_csv),
            "--text-column",
            "review",
            "--label-column",
            "sentiment",
            "--max-steps",
            "2",
            "--batch-size",
            "8",
            "--max-length",
            "32",
            "--out",
            str(out),
        ],
    )
    assert done.exit_code == 0, done.output
    assert json.loads((out / "config.json").read_text())["pad_token_id"] == 1
    parent = models.resolve(str(out))
    cfg = export.Config()
    onnx_art, _ = build(
        tmp_path / "onnx",
        parent,
        export.NAME,
        cfg,
        run=lambda work: export.run(parent, cfg, work),
        libraries=export.LIBRARIES,
    )
    assert (onnx_art.path / "model.onnx").is_file()


def test_a_decoder_config_without_a_context_length_is_one_line():
    from edgenlp.runtime.errors import BundleError
    from edgenlp.runtime.generation import context_of

    assert context_of({"model_type": "gpt2"}) == (1024, None)  # GPT-2's own default
    assert context_of({"model_type": "bloom", "seq_length": 2048, "eos_token_id": [2, 3]}) == (2048, 2)
    with pytest.raises(BundleError, match="set max_position_embeddings"):
        context_of({"model_type": "mpt", "alibi": True})


def test_every_load_checks_its_folder_not_only_the_run_s_source(tmp_path, no_trust):
    """Stages, runners, explain and bench load folders through `pretrained_options(folder)`, which refuses too."""
    folder = _foreign_model(tmp_path / "m", {"AutoModelForCausalLM": "modeling_stranger.StrangerLM"})
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "architectures": ["StrangerForCausalLM"]}))
    with pytest.raises(ModelNotFoundError, match="--trust-remote-code"):
        trust.pretrained_options(folder)
    result = CliRunner().invoke(app, ["generate", str(folder), "hello"])
    assert result.exit_code == 2 and "runs no code from a model folder" in result.output
