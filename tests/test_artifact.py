from __future__ import annotations

import pytest

from edgenlp.artifact import Artifact, StageOutput, build


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
