"""Pruning: heads and channels physically removed, checkpoints that reload anywhere, recovery by distillation."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from edgenlp import architectures, models, pipeline, recipe, tasks
from edgenlp.artifact import Artifact, build
from edgenlp.data import DataSpec
from edgenlp.errors import ArtifactError, DataError, RecipeError
from edgenlp.stages import distill, prune


def _prune(source: Path, out: Path, **config):
    parent = models.resolve(str(source))
    cfg = prune.Config(**config)
    art, _ = build(
        out, parent, prune.NAME, cfg, run=lambda work: prune.run(parent, cfg, work), libraries=prune.LIBRARIES
    )
    return art


@pytest.fixture(scope="module")
def bert_classifier(tiny_run) -> Path:
    return tiny_run.variants["pytorch-fp32"].path


@pytest.fixture(scope="module")
def wide_bert(tmp_path_factory, tiny_bert) -> Path:
    """A 3-layer classifier with 4 heads a layer, so that pruning has heads to choose between."""
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    folder = tmp_path_factory.mktemp("wide-bert")
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=60,
        hidden_size=32,
        num_hidden_layers=3,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=64,
        initializer_range=0.3,
        num_labels=2,
        id2label={0: "neg", 1: "pos"},
        label2id={"neg": 0, "pos": 1},
    )
    BertForSequenceClassification(config).save_pretrained(folder)
    AutoTokenizer.from_pretrained(str(tiny_bert)).save_pretrained(folder)
    return folder


def _logits(model_dir: Path, auto: str, ids: torch.Tensor) -> torch.Tensor:
    import transformers

    architectures.register()
    model = getattr(transformers, auto).from_pretrained(str(model_dir)).eval()
    with torch.no_grad():
        return model(input_ids=ids).logits


def test_bert_heads_and_channels_shrink_as_asked_and_reload(wide_bert, tmp_path):
    art = _prune(wide_bert, tmp_path / "p", ratio=0.5)
    config = json.loads((art.path / "config.json").read_text())
    assert config["model_type"] == "edgenlp-pruned-bert" and "pruned_heads" not in config or not config["pruned_heads"]
    assert config["layer_heads"] == [2, 2, 2] and config["layer_intermediate_sizes"] == [32, 32, 32]
    from transformers import AutoModelForSequenceClassification

    architectures.register()
    model = AutoModelForSequenceClassification.from_pretrained(str(art.path))
    layer = model.bert.encoder.layer[0]
    assert layer.attention.self.query.weight.shape == (2 * 8, 32)  # 2 heads of 8 kept, hidden 32 kept
    assert layer.attention.output.dense.weight.shape == (32, 16)
    assert layer.intermediate.dense.weight.shape == (32, 32) and layer.output.dense.weight.shape == (32, 32)
    assert model.bert.embeddings.word_embeddings.weight.shape[1] == 32 and model.classifier.in_features == 32
    meta = art.meta["metadata"]
    assert (
        meta["parameters"]["after"]["non_embedding_parameters"]
        < 0.6 * meta["parameters"]["before"]["non_embedding_parameters"]
    )
    assert meta["macs"]["after"] < meta["macs"]["before"]


def test_pruning_nothing_keeps_the_function_exactly(wide_bert, tiny_gpt2, tmp_path):
    """Ratio 0 goes through the whole view / prune / rebuild / save path: any transposition slip shows."""
    ids = torch.randint(0, 60, (2, 9), generator=torch.Generator().manual_seed(1))
    art = _prune(wide_bert, tmp_path / "b", ratio=0.0)
    torch.testing.assert_close(
        _logits(art.path, "AutoModelForSequenceClassification", ids),
        _logits(wide_bert, "AutoModelForSequenceClassification", ids),
        atol=1e-5,
        rtol=1e-5,
    )
    art = _prune(tiny_gpt2, tmp_path / "g", ratio=0.0)
    torch.testing.assert_close(
        _logits(art.path, "AutoModelForCausalLM", ids),
        _logits(tiny_gpt2, "AutoModelForCausalLM", ids),
        atol=1e-5,
        rtol=1e-5,
    )


def test_removed_heads_are_whole_heads(wide_bert, tmp_path):
    """The pruned model computes what the parent computes with the removed heads' output columns zeroed."""
    from transformers import AutoModelForSequenceClassification

    art = _prune(wide_bert, tmp_path / "p", ratio=0.5, ffn_ratio=0.0)
    architectures.register()
    parent = AutoModelForSequenceClassification.from_pretrained(str(wide_bert)).eval()
    pruned = AutoModelForSequenceClassification.from_pretrained(str(art.path)).eval()
    for big, small in zip(parent.bert.encoder.layer, pruned.bert.encoder.layer):
        kept_rows = [
            next(i for i in range(32) if torch.equal(big.attention.self.query.weight[i], row))
            for row in small.attention.self.query.weight
        ]
        heads = sorted({r // 8 for r in kept_rows})
        assert len(heads) == 2 and sorted(kept_rows) == [h * 8 + d for h in heads for d in range(8)]
        mask = torch.zeros(32)
        mask[kept_rows] = 1
        big.attention.output.dense.weight.data *= mask  # silence the removed heads in the parent
    ids = torch.randint(0, 60, (2, 9))
    with torch.no_grad():
        torch.testing.assert_close(pruned(input_ids=ids).logits, parent(input_ids=ids).logits, atol=1e-5, rtol=1e-5)


def test_gpt2_conv1d_and_fused_qkv_prune_globally_with_taylor(tiny_gpt2, tiny_corpus, tmp_path):
    art = _prune(
        tiny_gpt2,
        tmp_path / "p",
        ratio=0.5,
        mode="global",
        importance="taylor",
        data=DataSpec(source=str(tiny_corpus)),
        calibration_batches=2,
        batch_size=4,
        max_length=32,
    )
    config = json.loads((art.path / "config.json").read_text())
    assert config["model_type"] == "edgenlp-pruned-gpt2" and sum(config["layer_heads"]) == 2
    assert art.meta["metadata"]["macs"]["kept"] < 0.8  # counted on Linear layers, not missed as Conv1D
    assert min(config["layer_heads"]) >= 1
    from transformers import AutoModelForCausalLM

    architectures.register()
    model = AutoModelForCausalLM.from_pretrained(str(art.path)).eval()
    for block, heads, inner in zip(model.transformer.h, config["layer_heads"], config["layer_inner"]):
        assert block.attn.c_attn.weight.shape == (32, 3 * heads * 16)  # Conv1D: (in, out)
        assert block.attn.c_proj.weight.shape == (heads * 16, 32)
        assert block.mlp.c_fc.weight.shape == (32, inner)
    ids = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        cached = model.generate(ids, max_new_tokens=6, do_sample=False, use_cache=True, pad_token_id=0)
        uncached = model.generate(ids, max_new_tokens=6, do_sample=False, use_cache=False, pad_token_id=0)
    assert torch.equal(cached, uncached)


def test_a_pruned_checkpoint_loads_with_transformers_alone(wide_bert, tmp_path):
    """`trust_remote_code=True` in a process where edgenlp cannot be imported: the checkpoint carries its code."""
    art = _prune(wide_bert, tmp_path / "p", ratio=0.5)
    ids = torch.randint(0, 60, (1, 7), generator=torch.Generator().manual_seed(3))
    expected = _logits(art.path, "AutoModelForSequenceClassification", ids)
    script = f"""
import sys, importlib.abc
class NoEdgeNLP(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] == 'edgenlp':
            raise ImportError('edgenlp is not installed here')
sys.meta_path.insert(0, NoEdgeNLP())
import torch
from transformers import AutoModelForSequenceClassification
m = AutoModelForSequenceClassification.from_pretrained({str(art.path)!r}, trust_remote_code=True).eval()
with torch.no_grad():
    print(m(input_ids=torch.tensor({ids.tolist()})).logits.tolist())
"""
    env = {**os.environ, "HF_MODULES_CACHE": str(tmp_path / "modules")}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    torch.testing.assert_close(
        torch.tensor(json.loads(out.stdout.strip().splitlines()[-1])), expected, atol=1e-5, rtol=1e-5
    )


def test_bad_pruning_requests_fail_with_one_line(wide_bert, tiny_gpt2, tmp_path):
    with pytest.raises(ValueError):
        prune.Config(ratio=1.0)
    with pytest.raises(RecipeError, match="remove all 2 heads of layer 0"):
        _prune(tiny_gpt2, tmp_path / "all", ratio=0.6)  # 2 heads a block: 0.6 rounds up to both
    assert not (tmp_path / "all").exists()
    with pytest.raises(RecipeError, match="every head of layer"):
        _prune(tiny_gpt2, tmp_path / "global", ratio=0.0, head_ratio=0.9, mode="global")
    with pytest.raises(DataError, match="calibration batches"):
        _prune(wide_bert, tmp_path / "taylor", ratio=0.5, importance="taylor")
    from transformers import DistilBertConfig, DistilBertForSequenceClassification

    other = tmp_path / "distilbert"
    DistilBertForSequenceClassification(
        DistilBertConfig(vocab_size=60, dim=32, n_layers=1, n_heads=2, hidden_dim=64)
    ).save_pretrained(other)
    with pytest.raises(ArtifactError, match="supports BERT-family"):
        _prune(other, tmp_path / "d", ratio=0.5)


def test_distillation_lowers_the_loss_against_the_teacher(wide_bert, tiny_bert, tmp_path):
    """A few steps of the distillation objective bring the pruned student's outputs to its teacher's."""
    import torch.nn.functional as F
    from conftest import make_rows
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    pruned = _prune(wide_bert, tmp_path / "pruned", ratio=0.5)
    architectures.register()
    student = AutoModelForSequenceClassification.from_pretrained(str(pruned.path))
    objective = distill.Distillation(
        wide_bert, tasks.get("text-classification"), distill.Config(alpha=1.0, hidden_weight=1.0, temperature=2.0)
    )
    objective.start(student)
    tok = AutoTokenizer.from_pretrained(str(tiny_bert))
    rows = make_rows(32, seed=7)
    batch = {
        **tok([r["review"] for r in rows], padding=True, return_tensors="pt"),
        "labels": torch.tensor([i % 2 for i in range(32)]),
    }
    batch.pop("token_type_ids")

    def kl() -> float:
        student.eval()
        with torch.no_grad():
            s, t = student(**batch).logits, objective.teacher(**batch).logits
        student.train()
        return float(F.kl_div(F.log_softmax(s, -1), F.log_softmax(t, -1), log_target=True, reduction="batchmean"))

    before = kl()
    optimizer = torch.optim.Adam(student.parameters(), lr=3e-3)
    for _ in range(25):
        loss = objective(student, batch)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    assert {"soft_loss", "task_loss", "hidden_loss"} <= set(objective.parts)
    assert kl() < 0.5 * before


def test_recovery_logs_the_score_right_after_pruning(tiny_recipe, bert_classifier, tmp_path):
    pruned = _prune(bert_classifier, tmp_path / "pruned", ratio=0.5)
    cfg = distill.Config(
        data=DataSpec(**tiny_recipe["data"]),
        max_steps=10,
        batch_size=16,
        eval_every=5,
        learning_rate=1e-3,
        max_length=32,
    )
    recovered, _ = build(
        tmp_path / "recovered",
        pruned,
        distill.NAME,
        cfg,
        run=lambda w: distill.run(pruned, cfg, w),
        libraries=distill.LIBRARIES,
    )
    assert recovered.meta["metadata"]["distillation"]["teacher"] == str(bert_classifier)
    log = json.loads((recovered.path / "training_log.json").read_text())
    assert [e["step"] for e in log["evals"]] == [0, 5, 10]  # step 0: right after pruning, before recovery
    assert {"soft_loss", "task_loss"} <= set(log["steps"][0])


def test_the_teacher_is_found_beside_the_student_when_the_run_is_read_from_elsewhere(
    bert_classifier, tmp_path, monkeypatch
):
    """A run started with a relative `--out` records its lineage paths relative to where it started; a
    later run of the same folder from another directory finds the teacher by name and id beside the parent."""
    import shutil

    variants = tmp_path / "run" / "variants"
    shutil.copytree(bert_classifier, variants / "pytorch-fp32")
    monkeypatch.chdir(tmp_path)
    teacher = Artifact.load(Path("run/variants/pytorch-fp32"))  # as the pipeline holds it: under a relative --out
    cfg = prune.Config(ratio=0.5)
    build(Path("run/variants/pruned"), teacher, prune.NAME, cfg, run=lambda w: prune.run(teacher, cfg, w))
    monkeypatch.chdir(variants)  # the recorded relative path no longer leads anywhere
    pruned = Artifact.load(variants / "pruned")
    assert not (Path(pruned.meta["parent"]["path"]) / "config.json").exists()
    assert distill.teacher_path(pruned, distill.Config()) == variants / "pytorch-fp32"
    # a lineage name that climbs out of the run folder is not followed
    climbing = Artifact(
        pruned.path, {**pruned.meta, "parent": {**pruned.meta["parent"], "name": "../variants/pytorch-fp32"}}
    )
    with pytest.raises(ArtifactError, match="is gone: set teacher"):
        distill.teacher_path(climbing, distill.Config())
    # another model under the teacher's name is not taken for it
    shutil.rmtree(variants / "pytorch-fp32")
    shutil.copytree(variants / "pruned", variants / "pytorch-fp32")
    with pytest.raises(ArtifactError, match="is gone: set teacher"):
        distill.teacher_path(pruned, distill.Config())


def test_distill_without_a_teacher_says_what_to_set(bert_classifier, tiny_recipe, tmp_path):
    parent = models.resolve(str(bert_classifier))
    with pytest.raises(RecipeError, match="teacher"):
        distill.teacher_path(parent, distill.Config(data=DataSpec(**tiny_recipe["data"])))


@pytest.mark.slow
def test_sweep_prunes_recovers_exports_and_quantises_each_ratio(tiny_recipe, tmp_path):
    spec = dict(tiny_recipe)
    spec["sweep"] = {"ratio": [0.5]}
    spec["variants"] = tiny_recipe["variants"][:1] + [
        {"name": "pruned-{ratio}", "stage": "prune", "parent": "pytorch-fp32", "config": {"ratio": "{ratio}"}},
        {
            "name": "recovered-{ratio}",
            "stage": "distill",
            "parent": "pruned-{ratio}",
            "config": {"max_steps": 10, "batch_size": 16, "eval_every": 5, "learning_rate": 1e-3, "max_length": 32},
        },
        {"name": "onnx-{ratio}", "stage": "export", "parent": "recovered-{ratio}"},
        {"name": "int8-{ratio}", "stage": "quantize", "parent": "onnx-{ratio}"},
    ]
    spec["bench"] = {**tiny_recipe["bench"], "rounds": 1, "iterations": 10}
    outcome = pipeline.run(recipe.parse(spec), tmp_path / "run")
    assert set(outcome.variants) == {"pytorch-fp32", "pruned-0.5", "recovered-0.5", "onnx-0.5", "int8-0.5"}
    assert outcome.variants["onnx-0.5"].meta["validation"]["max_abs_logit_diff"] < 1e-3  # ONNX vs its pruned parent
    by_name = {v["name"]: v for v in outcome.results["variants"]}
    assert by_name["int8-0.5"]["params"] < by_name["pytorch-fp32"]["params"]
    assert by_name["int8-0.5"]["pruned_by"]["name"] == "pruned-0.5" and by_name["pytorch-fp32"]["pruned_by"] is None
    assert by_name["onnx-0.5"]["macs"]["len32"] < by_name["pytorch-fp32"]["macs"]["len32"]
    report = (tmp_path / "run" / "report.md").read_text()
    assert "## Pruning" in report and "recovered-0.5" in report and "right after pruning" in report
    table = report.split("## Pruning")[1].splitlines()
    header = next(i for i, line in enumerate(table) if line.startswith("| variant"))
    assert table[header].count("|") == table[header + 1].count("|") == table[header + 2].count("|")
    page = (tmp_path / "run" / "report.html").read_text()
    assert "<h2>Pruning</h2>" in page and "Pruning: quality against size" in page
    # its bundle says BERT, which transformers.js knows (it refuses edgenlp's own model type); the
    # variant itself keeps the type that reloads its uneven layers
    from edgenlp.bundle import build
    from edgenlp.runtime import load

    pruned = outcome.variants["int8-0.5"]
    folder = build(pruned.path, tmp_path / "bundle")
    assert json.loads((folder / "config.json").read_text())["model_type"] == "bert"
    assert json.loads((pruned.path / "config.json").read_text())["model_type"] == "edgenlp-pruned-bert"
    assert load(folder).classify(["good movie"], batch_size=1)[0]["label"] in pruned.labels()


def test_pruned_gpt2_exports_with_per_block_cache_and_generates_like_pytorch(tiny_gpt2_recipe, tmp_path):
    spec = dict(tiny_gpt2_recipe)
    spec["variants"] = tiny_gpt2_recipe["variants"][:1] + [
        {
            "name": "pruned",
            "stage": "prune",
            "parent": "pytorch-fp32",
            "config": {"ratio": 0.5, "mode": "global", "max_length": 64},
        },
        {"name": "onnx-pruned", "stage": "export", "parent": "pruned"},
        {"name": "onnx-int8-pruned", "stage": "quantize", "parent": "onnx-pruned"},
    ]
    r = recipe.parse(spec)
    source = models.resolve(r.model)
    task = pipeline.task_of(r, source)
    built, _ = pipeline.build_variants(r, tmp_path / "run", task.load_data(r.data), source, task)
    check = built["onnx-pruned"].meta["validation"]
    assert check["greedy_identical"] == 1.0  # 64 greedy tokens from every prompt, cached ONNX vs PyTorch
    from edgenlp.runtime.generation import CausalLM

    generation = CausalLM(built["onnx-int8-pruned"].path).generate("good bad", max_new_tokens=5)
    assert len(generation.token_ids) == 5


def test_prune_and_distill_commands(wide_bert, tiny_csv, tiny_corpus, tmp_path):
    from typer.testing import CliRunner

    from edgenlp.cli import app

    runner = CliRunner()
    ok = runner.invoke(app, ["prune", str(wide_bert), "--ratio", "0.5", "--out", str(tmp_path / "p")])
    assert ok.exit_code == 0, ok.output
    assert "heads per layer [2, 2, 2]" in " ".join(ok.output.split())
    shallow = runner.invoke(app, ["prune", str(wide_bert), "--layers", "2", "--out", str(tmp_path / "l")])
    assert shallow.exit_code == 0 and "layers kept [" in " ".join(shallow.output.split()), shallow.output
    assert "MACs x0.6" in " ".join(shallow.output.split())  # two layers of three: the embeddings and head stay
    for args, needle in [
        (["prune", str(wide_bert), "--layers", "0", "--out", str(tmp_path / "x")], "--layers"),
        (["prune", str(wide_bert), "--layers", "7", "--out", str(tmp_path / "x")], "more layers than the model's 3"),
        (
            ["prune", str(wide_bert), "--ratio", "1.5", "--out", str(tmp_path / "x")],
            "--ratio input should be less than 1",
        ),
        (["prune", str(wide_bert), "--ratio", "0.5", "--importance", "taylor", "--out", str(tmp_path / "x")], "--data"),
        (["prune", str(wide_bert), "--ratio", "0.5", "--mode", "layerwise", "--out", str(tmp_path / "x")], "--mode"),
        (["distill", str(wide_bert), "--data", str(tiny_corpus), "--out", str(tmp_path / "x")], "teacher"),
    ]:
        bad = runner.invoke(app, args)
        assert bad.exit_code == 2 and "Traceback" not in bad.output, bad.output
        assert needle in " ".join(bad.output.split()), bad.output
    assert not (tmp_path / "x").exists()
    done = runner.invoke(
        app,
        [
            "distill",
            str(tmp_path / "p"),
            "--data",
            str(tiny_csv),
            "--text-column",
            "review",
            "--label-column",
            "sentiment",
            "--max-steps",
            "4",
            "--eval-every",
            "2",
            "--batch-size",
            "16",
            "--max-length",
            "32",
            "--out",
            str(tmp_path / "r"),
        ],
    )
    assert done.exit_code == 0, done.output
    assert "recovered" in done.output and (tmp_path / "r" / "training_log.json").exists()


def test_a_sweep_fills_names_parents_and_typed_config_values(tiny_recipe):
    spec = {
        **tiny_recipe,
        "sweep": {"ratio": [0.25, 0.5]},
        "variants": tiny_recipe["variants"][:1]
        + [
            {"name": "pruned-{ratio}", "stage": "prune", "parent": "pytorch-fp32", "config": {"ratio": "{ratio}"}},
            {"name": "onnx-{ratio}", "stage": "export", "parent": "pruned-{ratio}"},
        ],
    }
    parsed = recipe.parse(spec)
    assert [(v.name, v.parent) for v in parsed.variants] == [
        ("pytorch-fp32", None),
        ("pruned-0.25", "pytorch-fp32"),
        ("pruned-0.5", "pytorch-fp32"),
        ("onnx-0.25", "pruned-0.25"),
        ("onnx-0.5", "pruned-0.5"),
    ]
    assert parsed.stage_config(parsed.variants[1]).ratio == 0.25
    with pytest.raises(RecipeError, match="non-empty list"):
        recipe.parse({**spec, "sweep": {"ratio": []}})
    with pytest.raises(RecipeError, match="less than 1"):
        recipe.parse({**spec, "sweep": {"ratio": [0.5, 1.2]}})


def test_dropped_layers_leave_the_kept_layers_weights_and_reload(wide_bert, tiny_gpt2, tmp_path):
    """Depth pruning drops whole layers; the kept ones carry the parent's weights unchanged, in order."""
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    art = _prune(wide_bert, tmp_path / "b", layers=1)
    meta = art.meta["metadata"]
    assert len(meta["kept_layers"]) == 1 and len(meta["dropped_layers"]) == 2
    assert sorted(meta["kept_layers"] + meta["dropped_layers"]) == [0, 1, 2]
    architectures.register()
    parent = AutoModelForSequenceClassification.from_pretrained(str(wide_bert)).eval()
    pruned = AutoModelForSequenceClassification.from_pretrained(str(art.path)).eval()
    assert pruned.config.num_hidden_layers == 1 and len(pruned.bert.encoder.layer) == 1
    kept = parent.bert.encoder.layer[meta["kept_layers"][0]].state_dict()
    for name, value in pruned.bert.encoder.layer[0].state_dict().items():
        torch.testing.assert_close(value, kept[name], atol=0, rtol=0)
    # the model without the dropped layers is the parent with those layers passed over
    ids = torch.randint(0, 60, (2, 9), generator=torch.Generator().manual_seed(3))
    skip = [
        parent.bert.encoder.layer[i].register_forward_hook(
            lambda m, args, kwargs, out: (args[0] if args else kwargs["hidden_states"], *out[1:]), with_kwargs=True
        )
        for i in meta["dropped_layers"]
    ]
    with torch.no_grad():
        torch.testing.assert_close(pruned(input_ids=ids).logits, parent(input_ids=ids).logits, atol=1e-5, rtol=1e-5)
    for hook in skip:
        hook.remove()

    both = _prune(tiny_gpt2, tmp_path / "g", layers=1, ratio=0.5)  # depth and width in one stage
    gpt2 = AutoModelForCausalLM.from_pretrained(str(both.path)).eval()
    assert gpt2.config.n_layer == 1 and both.meta["metadata"]["layer_heads"] == [1]
    with torch.no_grad():  # the renumbered block writes and reads its cache as layer 0
        out = gpt2(input_ids=ids[:, :5], use_cache=True)
        step = gpt2(input_ids=ids[:, 5:6], past_key_values=out.past_key_values).logits[:, -1]
        full = gpt2(input_ids=ids[:, :6]).logits[:, -1]
    torch.testing.assert_close(step, full, atol=1e-5, rtol=1e-5)


def test_the_least_important_layer_goes_first(wide_bert, tmp_path):
    """A layer made to do nothing (its output projections zeroed: the residual passes through) is dropped."""
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(str(wide_bert))
    idle = model.bert.encoder.layer[1]
    for dense in (idle.attention.output.dense, idle.output.dense):
        dense.weight.data.zero_()
        dense.bias.data.zero_()
    # LayerNorm after each residual: with the other sub-layers' outputs zero it still renormalises,
    # so an input that is already normalised with unit gain passes (almost) unchanged
    folder = tmp_path / "idle"
    model.save_pretrained(folder)
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        if (wide_bert / name).exists():
            (folder / name).write_bytes((wide_bert / name).read_bytes())
    art = _prune(folder, tmp_path / "p", layers=2)
    assert art.meta["metadata"]["dropped_layers"] == [1]


def test_a_layer_count_out_of_range_is_one_line(wide_bert, tmp_path):
    with pytest.raises(ValueError):
        prune.Config(layers=0)
    with pytest.raises(RecipeError, match="more layers than the model's 3"):
        _prune(wide_bert, tmp_path / "p", layers=4)
    assert not (tmp_path / "p").exists()


def test_distillation_maps_a_shallower_student_to_the_layers_it_kept(wide_bert, tiny_bert, tmp_path):
    from transformers import AutoModelForSequenceClassification

    assert distill.layer_map([0, 2], 2, 3) == [0, 2] and distill.layer_map([1, 0 + 1], 2, 4) == [1, 3]
    assert distill.layer_map(None, 3, 3) == [0, 1, 2] and distill.layer_map(None, 2, 3) is None
    pruned = _prune(wide_bert, tmp_path / "pruned", layers=2)
    kept = pruned.meta["metadata"]["kept_layers"]
    architectures.register()
    student = AutoModelForSequenceClassification.from_pretrained(str(pruned.path))
    objective = distill.Distillation(
        wide_bert, tasks.get("text-classification"), distill.Config(hidden_weight=1.0), kept_layers=kept
    )
    objective.start(student)
    assert objective.mapping == [kept[0], 2]
    ids = torch.randint(0, 60, (4, 7), generator=torch.Generator().manual_seed(0))
    loss = objective(student, {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids[:, 0] % 2})
    assert loss.requires_grad and objective.parts["hidden_loss"] >= 0
    unmapped = distill.Distillation(wide_bert, tasks.get("text-classification"), distill.Config(hidden_weight=1.0))
    with pytest.raises(RecipeError, match="layer mapping"):
        unmapped.start(student)


@pytest.mark.slow
def test_a_depth_pruned_model_recovers_exports_and_quantises_through_a_recipe(tiny_recipe, tmp_path):
    """prune (layers) -> distil with the layer mapping -> export -> INT8: each validated, the report says which layers."""
    spec = dict(tiny_recipe)
    spec["variants"] = tiny_recipe["variants"][:1] + [
        {"name": "shallow", "stage": "prune", "parent": "pytorch-fp32", "config": {"layers": 1, "max_length": 32}},
        {
            "name": "recovered",
            "stage": "distill",
            "parent": "shallow",
            "config": {"max_steps": 4, "batch_size": 16, "eval_every": 2, "max_length": 32, "hidden_weight": 1.0},
        },
        {"name": "onnx-shallow", "stage": "export", "parent": "recovered"},
        {"name": "int8-shallow", "stage": "quantize", "parent": "onnx-shallow"},
    ]
    spec["bench"] = {**tiny_recipe["bench"], "rounds": 1, "iterations": 10}
    outcome = pipeline.run(recipe.parse(spec), tmp_path / "run")
    shallow = outcome.variants["shallow"].meta["metadata"]
    assert len(shallow["kept_layers"]) == 1 and shallow["layer_heads"] and len(shallow["layer_heads"]) == 1
    log = json.loads((outcome.variants["recovered"].path / "training_log.json").read_text())
    assert "hidden_loss" in log["steps"][0]
    assert outcome.variants["onnx-shallow"].meta["validation"]["max_abs_logit_diff"] < 1e-3
    assert outcome.variants["int8-shallow"].meta["validation"]["passed"]
    report = (tmp_path / "run" / "report.md").read_text()
    assert f"| 1 of 2 ({shallow['kept_layers'][0]})" in report
