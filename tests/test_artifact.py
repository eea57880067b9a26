from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from edgenlp import artifact as artifact_module
from edgenlp import fsio
from edgenlp.artifact import Artifact, StageOutput, build
from edgenlp.errors import ArtifactError


def _parent(tmp_path) -> Artifact:
    return Artifact(path=tmp_path, meta={"id": "src-1", "name": "source", "format": "pytorch"})


def _writer(calls: list):
    def run(work):
        calls.append(work)
        (work / "model.onnx").write_bytes(b"weights")
        return StageOutput(format="onnx", task="text-classification", metadata={"n": len(calls)})

    return run


def test_build_publishes_and_reuses(tmp_path):
    calls: list = []
    dest = tmp_path / "out" / "v"
    art, reused = build(dest, _parent(tmp_path), "export", {"opset": 17}, _writer(calls))
    assert not reused and art.path == dest and art.verify()
    assert art.meta["parent"]["id"] == "src-1" and art.meta["stage_config"] == {"opset": 17}
    again, reused = build(dest, _parent(tmp_path), "export", {"opset": 17}, _writer(calls))
    assert reused and len(calls) == 1 and again.id == art.id
    changed, reused = build(dest, _parent(tmp_path), "export", {"opset": 18}, _writer(calls))
    assert not reused and changed.id != art.id


def test_tampered_artifact_is_rebuilt(tmp_path):
    calls: list = []
    dest = tmp_path / "v"
    build(dest, _parent(tmp_path), "export", {}, _writer(calls))
    (dest / "model.onnx").write_bytes(b"corrupt")
    _, reused = build(dest, _parent(tmp_path), "export", {}, _writer(calls))
    assert not reused and (dest / "model.onnx").read_bytes() == b"weights"


def test_failed_stage_leaves_previous_artifact_and_no_partial(tmp_path):
    dest = tmp_path / "v"
    first, _ = build(dest, _parent(tmp_path), "export", {"a": 1}, _writer([]))

    def boom(work):
        (work / "model.onnx").write_bytes(b"half")
        raise RuntimeError("stage crashed")

    with pytest.raises(RuntimeError):
        build(dest, _parent(tmp_path), "export", {"a": 2}, boom)
    assert Artifact.load(dest).id == first.id and (dest / "model.onnx").read_bytes() == b"weights"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_check_failure_discards_the_new_artifact(tmp_path):
    def reject(artifact):
        raise ValueError("does not match parent")

    with pytest.raises(ValueError):
        build(tmp_path / "v", _parent(tmp_path), "export", {}, _writer([]), check=reject)
    assert not (tmp_path / "v").exists()


# --- never delete what edgenlp did not write ---------------------------------------------------


def test_a_folder_edgenlp_did_not_write_is_never_replaced(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    (home / "thesis.tex").write_text("years of work")
    with pytest.raises(ArtifactError, match="not an edgenlp artifact"):
        build(home, _parent(tmp_path / "src"), "export", {}, _writer([]))
    assert (home / "thesis.tex").read_text() == "years of work"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["home"]


def test_the_model_being_read_is_never_the_output(tmp_path):
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "config.json").write_text("{}")
    parent = Artifact(path=ckpt, meta={"id": "src-1", "name": "source", "format": "pytorch"})
    with pytest.raises(ArtifactError, match="holds the model being read"):
        build(ckpt, parent, "finetune", {}, _writer([]))
    with pytest.raises(ArtifactError, match="holds the model being read"):
        build(tmp_path, parent, "finetune", {}, _writer([]))
    assert (ckpt / "config.json").read_text() == "{}"


def test_another_variant_or_added_files_are_not_replaced(tmp_path):
    dest = tmp_path / "v"
    build(dest, _parent(tmp_path), "export", {"a": 1}, _writer([]), name="onnx-fp32")
    with pytest.raises(ArtifactError, match="holds edgenlp variant 'onnx-fp32' \\(export\\)"):
        build(dest, _parent(tmp_path), "quantize", {}, _writer([]), name="onnx-int8")
    (dest / "notes.txt").write_text("mine")
    with pytest.raises(ArtifactError, match="holds notes.txt, which edgenlp did not write"):
        build(dest, _parent(tmp_path), "export", {"a": 2}, _writer([]), name="onnx-fp32")
    assert (dest / "notes.txt").read_text() == "mine" and Artifact.load(dest).meta["stage_config"] == {"a": 1}


# --- crash safety ------------------------------------------------------------------------------


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_publish_cut_between_its_renames_is_undone(tmp_path):
    """Without an atomic swap, a crash after `dest -> .old` leaves no dest: the next build restores it."""
    dest = tmp_path / "v"
    first, _ = build(dest, _parent(tmp_path), "export", {"a": 1}, _writer([]))
    pid = _dead_pid()
    os.rename(dest, tmp_path / f".v.old-{pid}")
    (tmp_path / f".v.partial-{pid}").mkdir()
    calls: list = []
    again, reused = build(dest, _parent(tmp_path), "export", {"a": 1}, _writer(calls))
    assert reused and again.id == first.id and not calls
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v"]


def test_the_fallback_publish_without_an_atomic_swap(tmp_path, monkeypatch):
    monkeypatch.setattr(fsio, "_exchange", lambda a, b: False)
    dest = tmp_path / "v"
    build(dest, _parent(tmp_path), "export", {"a": 1}, _writer([]))
    second, reused = build(dest, _parent(tmp_path), "export", {"a": 2}, _writer([]))
    assert not reused and Artifact.load(dest).id == second.id
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v"]


KILLED_BUILD = """
import sys, time
from pathlib import Path
from edgenlp.artifact import Artifact, StageOutput, build

def run(work):
    (work / "model.onnx").write_bytes(b"new weights, half written")
    print("writing", flush=True)
    time.sleep(60)
    return StageOutput(format="onnx", task="text-classification")

parent = Artifact(path=Path(sys.argv[2]), meta={"id": "src-1", "name": "source", "format": "pytorch"})
build(Path(sys.argv[1]), parent, "export", {"a": 2}, run)
"""


def test_a_killed_build_leaves_the_old_artifact_and_the_rerun_cleans_up(tmp_path):
    dest = tmp_path / "v"
    first, _ = build(dest, _parent(tmp_path), "export", {"a": 1}, _writer([]))
    proc = subprocess.Popen(
        [sys.executable, "-c", KILLED_BUILD, str(dest), str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout.readline().strip() == "writing"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert Artifact.load(dest).id == first.id and (dest / "model.onnx").read_bytes() == b"weights"
    assert any(p.name.startswith(".v.partial-") for p in tmp_path.iterdir())
    second, reused = build(dest, _parent(tmp_path), "export", {"a": 2}, _writer([]))
    assert not reused and Artifact.load(dest).id == second.id
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v"]


def test_atomic_writes_are_fsynced_and_leave_no_temporary_file(tmp_path, monkeypatch):
    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(fsio.os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd)))
    fsio.write_json_atomic(tmp_path / "results.json", {"a": 1})
    assert json.loads((tmp_path / "results.json").read_text()) == {"a": 1}
    assert len(synced) >= 2  # the file, then its folder
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]


# --- ids cover everything the output depends on --------------------------------------------------


def test_the_id_covers_the_data_content_and_the_library_versions(tmp_path, monkeypatch):
    dest = tmp_path / "v"
    calls: list = []
    first, _ = build(dest, _parent(tmp_path), "finetune", {}, _writer(calls), inputs={"data_sha256": "aaa"})
    _, reused = build(dest, _parent(tmp_path), "finetune", {}, _writer(calls), inputs={"data_sha256": "aaa"})
    assert reused
    edited, reused = build(dest, _parent(tmp_path), "finetune", {}, _writer(calls), inputs={"data_sha256": "bbb"})
    assert not reused and edited.id != first.id
    monkeypatch.setattr(artifact_module, "library_versions", lambda names: {"onnxruntime": "9.9.9"})
    upgraded, reused = build(dest, _parent(tmp_path), "finetune", {}, _writer(calls), inputs={"data_sha256": "bbb"})
    assert not reused and upgraded.id != edited.id and upgraded.meta["versions"] == {"onnxruntime": "9.9.9"}


def test_only_the_libraries_a_stage_uses_enter_its_id(tmp_path, monkeypatch):
    """An onnxruntime upgrade must not retrain a model: it rebuilds what onnxruntime made, nothing else."""
    installed = {"edgenlp": "0.1.0", "torch": "2.13.0", "onnxruntime": "1.32.0"}
    monkeypatch.setattr(
        artifact_module, "library_versions", lambda names: {n: installed[n] for n in names if n in installed}
    )
    trained, _ = build(tmp_path / "ft", _parent(tmp_path), "finetune", {}, _writer([]), libraries=("torch",))
    quantized, _ = build(tmp_path / "q", _parent(tmp_path), "quantize", {}, _writer([]), libraries=("onnxruntime",))
    installed["onnxruntime"] = "1.33.0"
    again, reused = build(tmp_path / "ft", _parent(tmp_path), "finetune", {}, _writer([]), libraries=("torch",))
    assert reused and again.id == trained.id
    requantized, reused = build(
        tmp_path / "q", _parent(tmp_path), "quantize", {}, _writer([]), libraries=("onnxruntime",)
    )
    assert not reused and requantized.id != quantized.id
    assert requantized.meta["versions"] == {"edgenlp": "0.1.0", "onnxruntime": "1.33.0"}


def test_an_edited_data_file_changes_its_fingerprint(tmp_path):
    from edgenlp.data import fingerprint

    path = tmp_path / "d.csv"
    path.write_text("text,label\na,0\n")
    before = fingerprint(str(path))
    path.write_text("text,label\na,1\n")
    assert fingerprint(str(path)) != before


# --- one process per run folder ----------------------------------------------------------------

HOLD_LOCK = """
import sys, time
from pathlib import Path
from edgenlp.fsio import FolderLock
with FolderLock(Path(sys.argv[1])):
    print("held", flush=True)
    time.sleep(60)
"""


def test_a_second_process_is_told_who_holds_the_run_folder(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        with pytest.raises(fsio.FolderInUseError, match=f"in use by another edgenlp process \\(PID {proc.pid} "):
            with fsio.FolderLock(tmp_path):
                pass
    finally:
        proc.kill()
        proc.wait()
    with fsio.FolderLock(tmp_path):  # a dead holder's lock is gone with it
        pass
