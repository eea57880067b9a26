"""Building for ARM64 and checking bundles there: on an emulated ARM64 (qemu user mode, Debian's arm64
Python, PyPI's aarch64 wheels), cached under EDGENLP_CACHE_DIR after the first setup."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import FORBID_TORCH
from typer.testing import CliRunner

from edgenlp import recipe, stages, targets
from edgenlp.bundle import build
from edgenlp.cli import app
from edgenlp.hardware import cpu_info
from edgenlp.runtime import load
from edgenlp.runtime.check import probe
from edgenlp.targets import arm64

TEXTS = ["the movie was great fun", "bad awful film really", "the plot was boring and the worst", "nice"]
emulated = pytest.mark.emulated


# -- what needs no emulator ----------------------------------------------------------------------


def answers(labels, ids=None, probabilities=None):
    ids = ids or [[1, 2]] * len(labels)
    decided = [[0.9, 0.1] if label == "pos" else [0.1, 0.9] for label in labels]
    return {"labels": labels, "token_ids": ids, "probabilities": probabilities or decided}


def test_classifier_verdicts_count_label_agreement_and_both_accuracies():
    task = __import__("edgenlp.tasks", fromlist=["get"]).get("text-classification")
    here = answers(["pos"] * 99 + ["neg"])
    same = task.compare_target_answers(here, answers(["pos"] * 99 + ["neg"]), ["pos"] * 100)
    assert same["passed"] and same["label_agreement"] == 1.0 and same["accuracy_on_target"] == 0.99
    one_off = task.compare_target_answers(here, answers(["pos"] * 100), None)
    assert one_off["passed"] and one_off["labels_differ"] == 1  # 99% is the floor
    two_off = task.compare_target_answers(here, answers(["pos"] * 98 + ["neg", "pos"]), None)
    assert not two_off["passed"] and "98 of 100" in two_off["summary"]


def test_a_classifier_undecided_between_two_labels_may_tip_either_way_on_the_target():
    """Another CPU's INT8 kernels round otherwise; a tie that tips is reported, not counted as a disagreement."""
    task = __import__("edgenlp.tasks", fromlist=["get"]).get("text-classification")
    here = answers(["pos"] * 10, probabilities=[[0.505, 0.495]] * 9 + [[0.9, 0.1]])
    tipped = answers(["neg"] * 9 + ["pos"], probabilities=[[0.496, 0.504]] * 9 + [[0.9, 0.1]])
    verdict = task.compare_target_answers(here, tipped)
    assert verdict["passed"] and verdict["ties_tipped"] == 9 and verdict["labels_differ"] == 0
    assert "1 of 1 decided texts" in verdict["summary"] and "9 of 10 texts are ties" in verdict["summary"]
    decided_otherwise = answers(["neg"] * 10, probabilities=[[0.496, 0.504]] * 9 + [[0.1, 0.9]])
    verdict = task.compare_target_answers(here, decided_otherwise)
    assert not verdict["passed"] and verdict["labels_differ"] == 1 and verdict["ties_tipped"] == 9
    one_sided = answers(["neg"] * 10, probabilities=[[0.3, 0.7]] * 10)  # undecided here, decided there
    assert task.compare_target_answers(here, one_sided)["ties_tipped"] == 0


def test_decoder_verdicts_say_where_a_greedy_continuation_parts_and_how_close_the_call_was():
    task = __import__("edgenlp.tasks", fromlist=["get"]).get("text-generation")
    here = {"greedy": [[5, 6, 7], [1, 2]], "greedy_margins": [[2.0, 0.004, 1.0], [3.0, 3.0]], "top1": [[5, 6], [1]]}
    same = task.compare_target_answers(here, {**here})
    assert same["passed"] and same["greedy_identical"] == 2 and same["top1_agreement"] == 1.0
    parted = task.compare_target_answers(here, {**here, "greedy": [[5, 9, 9], [1, 2]], "top1": [[5, 9], [1]]})
    assert not parted["passed"] and parted["greedy_parted"] == [{"prompt": 0, "step": 1, "margin_here": 0.004}]
    assert parted["top1_agreement"] == pytest.approx(2 / 3) and "0.004 apart" in parted["summary"]


def test_a_target_that_tokenizes_otherwise_fails_before_any_answer_is_compared():
    verdict = targets.tokenizer_verdict(answers(["a", "b"], [[1, 2], [3]]), answers(["a", "b"], [[1, 2], [3, 4]]))
    assert not verdict["passed"] and verdict["first_text_tokenized_otherwise"] == 1
    assert "another tokenizer" in verdict["summary"]
    assert targets.tokenizer_verdict(answers(["a"]), answers(["b"])) is None


def test_the_recipe_target_sets_every_quantiser_s_isa_unless_a_variant_sets_its_own(tiny_recipe):
    parsed = recipe.parse(
        {
            **tiny_recipe,
            "variants": [
                *tiny_recipe["variants"],
                {"name": "static", "stage": "quantize-static", "parent": "onnx-fp32"},
                {"name": "x86", "stage": "quantize", "parent": "onnx-fp32", "config": {"isa": "avx2"}},
                {"name": "auto", "stage": "quantize", "parent": "onnx-fp32", "config": {"isa": "auto"}},
            ],
            "target": {"isa": "arm64-dotprod"},
        }
    )
    configs = {v.name: parsed.stage_config(v) for v in parsed.variants}
    dynamic = stages.get("quantize").resolve(configs["onnx-int8-dynamic"])
    static = stages.get("quantize-static").resolve(configs["static"])
    assert (dynamic.isa, dynamic.per_channel, dynamic.reduce_range) == ("arm64-dotprod", True, False)
    assert (static.isa, static.activation, static.activation_symmetric, static.per_channel) == (
        "arm64-dotprod",
        "int8",
        False,
        True,
    )
    assert configs["x86"].isa == "avx2" and configs["auto"].isa == "arm64-dotprod"
    assert not hasattr(configs["onnx-fp32"], "isa")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["optimize", "--target-isa", "sparc", "--no-bench"], "--target-isa 'sparc' is not an instruction set"),
        (["optimize", "--check-on", "riscv", "--no-bench"], "--check-on 'riscv' is not a machine edgenlp emulates"),
        (["target", "setup", "riscv"], "unknown target 'riscv': use one of arm64"),
    ],
)
def test_unknown_targets_are_one_line_errors(args, message):
    done = CliRunner().invoke(app, args)
    assert done.exit_code == 2 and message in done.output and "Traceback" not in done.output


def test_a_machine_without_qemu_or_debootstrap_is_told_what_to_install(monkeypatch, tmp_path):
    monkeypatch.setenv("EDGENLP_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(arm64.shutil, "which", lambda name: None)
    done = CliRunner().invoke(app, ["target", "setup", "arm64"])
    assert done.exit_code == 2 and "install Debian's qemu-user-static" in done.output
    monkeypatch.setattr(arm64.shutil, "which", lambda name: "/usr/bin/qemu-aarch64-static" if "qemu" in name else None)
    monkeypatch.setattr(arm64.Path, "is_file", lambda self: False)
    with pytest.raises(arm64.TargetUnavailable, match="install Debian's debootstrap"):
        arm64._rootfs()


def test_a_qemu_too_old_for_a_cpu_is_refused_for_that_cpu_alone(monkeypatch, tmp_path):
    """qemu 7.2 emulates SME wrongly (onnxruntime's SME INT8 MatMul came out 7.0 off): never trust it there."""
    old = tmp_path / "qemu-aarch64"
    old.write_text("#!/bin/sh\necho 'qemu-aarch64 version 7.2.22 (Debian 1:7.2+dfsg-7+deb12u18)'\n")
    old.chmod(0o755)
    monkeypatch.setenv(arm64.QEMU_ENV, str(old))
    arm64.qemu_version.cache_clear()
    assert arm64.qemu("arm64-i8mm") == str(old) and arm64.emulator("arm64") == "qemu-aarch64 7.2"
    with pytest.raises(arm64.TargetUnavailable, match=r"^arm64-sme needs qemu-aarch64 10\.0 or later .* is 7\.2"):
        arm64.qemu("arm64-sme")
    done = CliRunner().invoke(app, ["optimize", "--check-on", "arm64-sme", "--no-bench"])
    assert done.exit_code == 2 and "needs qemu-aarch64 10.0" in done.output and "Traceback" not in done.output
    monkeypatch.setenv(arm64.QEMU_ENV, str(tmp_path / "missing"))
    with pytest.raises(arm64.TargetUnavailable, match="is not an executable qemu-aarch64"):
        arm64.qemu("arm64")
    arm64.qemu_version.cache_clear()


def test_the_runtime_measures_latency_with_no_torch(tiny_run, tmp_path):
    """The wheel-only path an ARM machine uses: `python -m edgenlp.runtime.bench`, torch unimportable."""
    bundle = build(tiny_run.variants["onnx-int8-dynamic"].path, tmp_path / "b")
    script = FORBID_TORCH + "from edgenlp.runtime.bench import main; sys.exit(main(sys.argv[1:]))"
    done = subprocess.run(
        [sys.executable, "-c", script, str(bundle), *TEXTS, "--repeat", "2", "--warmup", "0"],
        capture_output=True,
        text=True,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    found = json.loads(done.stdout)
    assert found["latency_ms"]["n"] == 2 * len(TEXTS) and 0 < found["latency_ms"]["p50"] <= found["latency_ms"]["p90"]
    assert found["environment"]["machine"] and found["environment"]["onnxruntime"]
    bad = subprocess.run(
        [sys.executable, "-c", script, str(bundle), "--repeat", "0"], capture_output=True, text=True, check=False
    )
    assert bad.returncode == 2 and bad.stderr.startswith("error: --threads, --repeat")


def test_a_run_checks_what_was_built_for_its_target_else_what_it_selected(tiny_run):
    from edgenlp.bundle.checks import chosen
    from edgenlp.recipe import TargetSpec

    isa = tiny_run.variants["onnx-int8-dynamic"].meta["metadata"]["isa"]
    selected = {"selection": {"selected": "onnx-fp32"}}
    assert chosen(TargetSpec(isa=isa), tiny_run.variants, selected) == ["onnx-int8-dynamic"]
    assert chosen(TargetSpec(isa="arm64"), tiny_run.variants, selected) == ["onnx-fp32"]  # none built for it
    assert chosen(TargetSpec(), tiny_run.variants, {"selection": {"selected": "pytorch-fp32"}}) == []
    assert chosen(TargetSpec(check_variants=["pytorch-fp32", "onnx-fp32", "nope"]), tiny_run.variants, None) == [
        "onnx-fp32"
    ]


def test_the_ort_form_is_only_a_listed_file_and_the_check_command_refuses_bad_requests(tiny_run, tmp_path):
    from edgenlp.runtime.errors import BundleError, InputError

    folder = build(tiny_run.variants["onnx-int8-dynamic"].path, tmp_path / "b")
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["targets"] = {"ort": {"file": "../../etc/passwd"}}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="holds no ORT-format model: build the bundle with --target ort"):
        load(folder, model_form="ort")
    with pytest.raises(InputError, match="model form 'tflite'"):
        load(folder, model_form="tflite")
    request = tmp_path / "request.json"
    for body, message in [("[1, 2]", "holds no list of texts"), ("{not json", "Expecting property name")]:
        request.write_text(body)
        done = subprocess.run(
            [sys.executable, "-m", "edgenlp.runtime.check", str(folder), str(request)],
            capture_output=True,
            text=True,
            check=False,
        )
        assert done.returncode == 2 and message in done.stderr and len(done.stderr.strip().splitlines()) == 1


def test_checks_on_several_cpus_run_side_by_side_after_one_setup_each(monkeypatch, tmp_path):
    """Each emulated check runs for minutes on one core: two CPUs are checked at once, each set up first, alone."""
    import threading

    both_running = threading.Barrier(2, timeout=30)  # broken (and the test failed) if the checks ran one by one
    set_up = []

    class Family:
        CPUS = {"cpu-a": None, "cpu-b": None}

        @staticmethod
        def setup():
            set_up.append(threading.current_thread().name)
            return "env"

    def check(folder, name, texts, references=None, env=None):
        assert env == "env" and len(set_up) == 2
        both_running.wait()
        return {"target": name, "texts": len(texts)}

    monkeypatch.setattr(targets, "module_of", lambda name: Family)
    monkeypatch.setattr(targets, "check", check)
    monkeypatch.setattr(targets.os, "cpu_count", lambda: 2)
    found = targets.check_all(tmp_path, ["cpu-a", "cpu-b", "cpu-a"], TEXTS)
    assert found == {"cpu-a": {"target": "cpu-a", "texts": 4}, "cpu-b": {"target": "cpu-b", "texts": 4}}
    assert set_up == [threading.current_thread().name] * 2


def test_checks_side_by_side_build_their_cpu_trees_in_turn_not_into_a_lock_error(tmp_path):
    """Two checks of one run, each on a CPU whose tree is not built yet, take the trees' lock in turn."""
    from concurrent.futures import ThreadPoolExecutor

    rootfs = tmp_path / "rootfs"
    for n in range(200):  # enough files that the first tree is still being linked when the second asks
        (rootfs / "usr" / "lib" / f"d{n % 10}").mkdir(parents=True, exist_ok=True)
        (rootfs / "usr" / "lib" / f"d{n % 10}" / f"f{n}").write_text("x")
    names = ["arm64", "arm64-dotprod", "arm64-i8mm", "arm64-sme"]
    with ThreadPoolExecutor(max_workers=4) as pool:
        trees = list(pool.map(lambda cpu: arm64.cpu_tree(rootfs, cpu), names))
    for cpu, tree in zip(names, trees):
        assert tree == tmp_path / "cpus" / cpu and arm64.CPUS[cpu].features in (tree / "proc" / "cpuinfo").read_text()
        assert (tree / "usr" / "lib" / "d3" / "f3").stat().st_ino == (
            rootfs / "usr" / "lib" / "d3" / "f3"
        ).stat().st_ino
    assert not [p.name for p in (tmp_path / "cpus").iterdir() if "partial" in p.name]


# -- on the emulated ARM64 -----------------------------------------------------------------------


@pytest.fixture(scope="session")
def arm():
    return arm64.setup(fetch_qemu=True)


@pytest.fixture(scope="session")
def arm_run(tiny_recipe, tmp_path_factory, arm):
    """The tiny classifier built for ARM64 and checked on two of its kernel families."""
    from edgenlp import pipeline

    spec = {
        **tiny_recipe,
        "variants": [v for v in tiny_recipe["variants"] if v["name"] != "onnx-fp32-opt"],
        "bench": {**tiny_recipe["bench"], "iterations": 10, "rounds": 1, "throughput_batches": 1},
        "target": {"isa": "arm64", "check_on": ["arm64", "arm64-dotprod"]},
    }
    return pipeline.run(recipe.parse(spec), tmp_path_factory.mktemp("arm-run"))


@emulated
def test_optimize_builds_for_arm64_and_checks_the_bundle_on_its_kernels(arm_run):
    variant = arm_run.variants["onnx-int8-dynamic"]
    meta = variant.meta["metadata"]
    assert (meta["isa"], meta["per_channel"], meta["reduce_range"]) == ("arm64", True, False)
    checked = arm_run.results["target_checks"]["onnx-int8-dynamic"]
    assert set(checked["checked_on"]) == {"arm64", "arm64-dotprod"}
    for name, verdict in checked["checked_on"].items():
        assert verdict["passed"], verdict["summary"]
        assert verdict["on_target"]["machine"] == "aarch64" and verdict["host"]["machine"] == "x86_64"
        assert verdict["label_agreement"] >= 0.99 and 0 <= verdict["accuracy_on_target"] <= 1
        assert ("asimddp" in verdict["cpu_features"]) == (name == "arm64-dotprod")
        assert "latency" not in json.dumps(verdict)
        assert verdict["host"]["int8_arithmetic"] == targets.EXACT_INT8  # ARM sums in 32 bits; so must the reference
        assert ("against_this_cpus_default_int8" in verdict) == cpu_info().int8_saturates
    manifest = json.loads((arm_run.out_dir / checked["bundle"] / "manifest.json").read_text())
    assert manifest["isa"]["tuned_for"] == "arm64" and manifest["checked_on"]["arm64"]["passed"]
    report = (arm_run.out_dir / "report.md").read_text()
    assert "## Checked on the target machines (emulated)" in report and "no ARM latency is shown" in report
    assert "Checked on the target machines" in (arm_run.out_dir / "report.html").read_text()


@emulated
def test_a_rerun_keeps_the_checks_of_unchanged_variants(arm_run, tiny_recipe):
    from edgenlp import pipeline

    before = arm_run.results["target_checks"]["onnx-int8-dynamic"]["checked_on"]["arm64"]
    spec = {
        **tiny_recipe,
        "variants": [v for v in tiny_recipe["variants"] if v["name"] != "onnx-fp32-opt"],
        "bench": {**tiny_recipe["bench"], "iterations": 10, "rounds": 1, "throughput_batches": 1},
        "target": {"isa": "arm64", "check_on": ["arm64"]},
    }
    again = pipeline.run(recipe.parse(spec), arm_run.out_dir)
    kept = again.results["target_checks"]["onnx-int8-dynamic"]["checked_on"]["arm64"]
    assert kept == before  # the same verdict, not a new run (its duration would differ)


@emulated
def test_bundle_check_on_runs_the_ort_format_model_too(tiny_run, tiny_csv, tmp_path, arm):
    out = tmp_path / "ort"
    done = CliRunner().invoke(
        app,
        [
            "bundle",
            str(tiny_run.variants["onnx-int8-dynamic"].path),
            "--out",
            str(out),
            "--target",
            "ort",
            "--check-on",
            "arm64-i8mm",
            "--data",
            str(tiny_csv),
            "--text-column",
            "review",
            "--label-column",
            "sentiment",
            "--check-texts",
            "12",
        ],
    )
    assert done.exit_code == 0, done.output
    assert "checked on arm64-i8mm" in done.output and "passed" in done.output
    verdict = json.loads((out / "manifest.json").read_text())["checked_on"]["arm64-i8mm"]
    assert verdict["texts"] == 12 and verdict["ort_format"]["passed"] and "i8mm" in verdict["cpu_features"]
    assert "sme" not in verdict["cpu_features"]  # Graviton3/4 have no SME: neither has this CPU
    assert verdict["timing"].startswith("emulated")


@emulated
def test_the_emulated_sme_cpu_computes_onnxruntime_s_int8_matmul_right(arm, tmp_path):
    """The check is only as true as the emulator: a MiniLM-sized dynamic INT8 MatMul, which onnxruntime
    runs on KleidiAI's SME kernels there, must come out as close to FP32 as on the CPUs without SME
    (under Debian 12's qemu 7.2 it was 7.0 off)."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    from onnxruntime.quantization import QuantType, quantize_dynamic

    rng = np.random.default_rng(0)
    weight = (rng.standard_normal((384, 1536)) * 0.05).astype(np.float32)
    x = rng.standard_normal((1, 24, 384)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        "matmul",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, None, 384])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, None, 1536])],
        [numpy_helper.from_array(weight, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.save(model, tmp_path / "fp32.onnx")
    quantize_dynamic(tmp_path / "fp32.onnx", tmp_path / "int8.onnx", per_channel=True, weight_type=QuantType.QInt8)
    np.save(tmp_path / "x.npy", x)
    script = tmp_path / "run.py"
    script.write_text(
        "import sys, numpy as np, onnxruntime as ort\n"
        "so = ort.SessionOptions(); so.intra_op_num_threads = 1\n"
        f"s = ort.InferenceSession({str(tmp_path / 'int8.onnx')!r}, so, providers=['CPUExecutionProvider'])\n"
        f"np.save(sys.argv[1], s.run(None, {{'x': np.load({str(tmp_path / 'x.npy')!r})}})[0])\n"
    )
    errors = {}
    for cpu in ("arm64-dotprod", "arm64-sme"):
        done = arm.run(cpu, [str(script), str(tmp_path / f"{cpu}.npy")], timeout_s=600)
        assert done.returncode == 0, done.stderr[-2000:]
        errors[cpu] = float(np.abs(np.load(tmp_path / f"{cpu}.npy") - x @ weight).max())
    assert errors["arm64-sme"] < 2 * errors["arm64-dotprod"] < 0.5, errors


@emulated
def test_a_bundle_is_checked_on_the_sme_cpu(tiny_run, tmp_path, arm):
    folder = build(tiny_run.variants["onnx-int8-dynamic"].path, tmp_path / "b")
    verdict = targets.check(folder, "arm64-sme", TEXTS)
    assert verdict["passed"], verdict["summary"]
    assert {"sme", "i8mm"} <= set(verdict["cpu_features"]) and verdict["emulator"] == arm64.emulator("arm64-sme")
    assert tuple(int(n) for n in verdict["emulator"].split()[-1].split(".")) >= (10, 0)


@emulated
def test_a_generation_bundle_gives_the_same_greedy_tokens_on_arm64(tiny_gpt2_run, tmp_path, arm):
    folder = build(tiny_gpt2_run.variants["onnx-int4"].path, tmp_path / "gpt2")
    verdict = targets.check(folder, "arm64-dotprod", TEXTS)
    assert verdict["passed"], verdict["summary"]
    assert verdict["greedy_identical"] == len(TEXTS) and verdict["top1_agreement"] == 1.0


@emulated
def test_a_wrong_tokenizer_on_the_target_is_caught(tiny_run, tmp_path, arm):
    """The bundle copied to the device with another tokenizer (here: lower-casing switched off)."""
    from edgenlp.bundle.manifest import file_table

    good = build(tiny_run.variants["onnx-int8-dynamic"].path, tmp_path / "good")
    broken = tmp_path / "broken"
    shutil.copytree(good, broken)
    tokenizer = json.loads((broken / "tokenizer.json").read_text())
    tokenizer["normalizer"] = None
    (broken / "tokenizer.json").write_text(json.dumps(tokenizer))
    manifest = json.loads((broken / "manifest.json").read_text())
    manifest["files"] = file_table(broken)
    (broken / "manifest.json").write_text(json.dumps(manifest))
    texts = ["The Movie was GREAT", "Bad Awful Film"]
    here = probe(load(good), texts)
    there = targets.run_remote(arm, "arm64", Path(broken), {"texts": texts}, timeout_s=600)
    assert there["environment"]["machine"] == "aarch64"
    verdict = targets.tokenizer_verdict(here, there)
    assert verdict is not None and not verdict["passed"] and verdict["texts_tokenized_otherwise"] == 2


@emulated
def test_the_runtime_bench_runs_on_arm64_with_the_wheel_alone(tiny_run, tmp_path, arm):
    bundle = build(tiny_run.variants["onnx-int8-dynamic"].path, tmp_path / "b")
    done = arm.run("arm64", ["-m", "edgenlp.runtime.bench", str(bundle), *TEXTS, "--repeat", "1"], timeout_s=600)
    assert done.returncode == 0, done.stderr[-2000:]
    found = json.loads(done.stdout)
    assert found["environment"]["machine"] == "aarch64" and found["environment"]["edgenlp"] is None
    assert found["environment"]["edgenlp-runtime"] and found["latency_ms"]["n"] == len(TEXTS)
