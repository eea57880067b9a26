"""Bundles written by strangers: only hashed files inside the folder are opened, every damage is one line."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from edgenlp.bundle import build
from edgenlp.bundle.manifest import file_table
from edgenlp.cli import app
from edgenlp.runtime import BundleError, load
from edgenlp.runtime import bundle as bundle_module
from edgenlp.serve import ServeSettings, create_app


@pytest.fixture(scope="module")
def bundle(tiny_run, tmp_path_factory) -> Path:
    return build(tiny_run.variants["onnx-int8-dynamic"].path, tmp_path_factory.mktemp("ub") / "int8")


@pytest.fixture
def copy(bundle, tmp_path) -> Path:
    target = tmp_path / "copy"
    shutil.copytree(bundle, target)
    return target


def _manifest(folder: Path) -> dict:
    return json.loads((folder / "manifest.json").read_text())


def _rewrite(folder: Path, change=None, rehash: bool = True) -> None:
    """Edit the manifest as an attacker would, keeping the file table consistent with the folder."""
    manifest = _manifest(folder)
    if rehash:
        manifest["files"] = file_table(folder)
    if change:
        change(manifest)
    (folder / "manifest.json").write_text(json.dumps(manifest))


def test_a_model_file_outside_the_bundle_is_never_loaded(copy, tmp_path):
    outside = tmp_path / "outside.onnx"
    shutil.copy(copy / "onnx" / "model_quantized.onnx", outside)
    for name in (str(outside), "../outside.onnx", "onnx/../../outside.onnx"):
        _rewrite(copy, lambda m, name=name: m["model"].update(file=name))
        with pytest.raises(BundleError, match="model.file|inside"):
            load(copy)
        with pytest.raises(BundleError):
            load(copy, verify_hashes=False)


def test_a_model_file_that_is_a_link_out_of_the_bundle_is_refused(copy, tmp_path):
    model = copy / "onnx" / "model_quantized.onnx"
    outside = tmp_path / "elsewhere.onnx"
    shutil.move(model, outside)
    os.symlink(outside, model)  # same bytes, same hash: only the link gives it away
    for verify in (True, False):
        with pytest.raises(BundleError, match="symbolic link"):
            load(copy, verify_hashes=verify)


def test_an_unlisted_prefill_graph_beside_the_model_is_never_opened(copy):
    from edgenlp.runtime import files

    shutil.copy(copy / "onnx" / "model_quantized.onnx", copy / "onnx" / "prefill.onnx")
    with pytest.raises(BundleError, match="onnx/prefill.onnx, which its manifest does not list"):
        load(copy, verify_hashes=False)
    reader = files.BundleFiles(copy, _manifest(copy)["files"])
    assert not reader.exists(copy / "onnx" / "prefill.onnx")  # what CausalLM asks before opening one
    with pytest.raises(BundleError, match="does not list"):
        reader.read(copy / "onnx" / "prefill.onnx")


def test_what_is_loaded_is_what_was_hashed(copy, monkeypatch):
    """A file swapped after the layout check (same size, other bytes) is caught by the hash of the bytes loaded."""
    model = copy / "onnx" / "model_quantized.onnx"
    original = bundle_module.check_layout

    def check_then_swap(folder, manifest, sizes=True):
        original(folder, manifest, sizes)
        data = bytearray(model.read_bytes())
        data[len(data) // 3] ^= 0xFF
        model.write_bytes(bytes(data))

    monkeypatch.setattr(bundle_module, "check_layout", check_then_swap)
    with pytest.raises(BundleError, match="onnx/model_quantized.onnx .* does not match its sha256"):
        load(copy)


MALFORMED = {
    "files entry is a number": lambda m: m["files"].update({"config.json": 5}),
    "no model key": lambda m: m.pop("model"),
    "model.file null": lambda m: m["model"].update(file=None),
    "max_length a string": lambda m: m.update(max_length="128"),
    "files not a mapping": lambda m: m.update(files=["config.json"]),
    "a listed name leaves the folder": lambda m: m["files"].update({"../../etc/passwd": m["files"]["config.json"]}),
    "an engine nobody knows": lambda m: m["model"].update(engine="tensorflow"),
    "a sha256 that is no hash": lambda m: m["files"]["config.json"].update(sha256="abc"),
}


@pytest.mark.parametrize("change", MALFORMED.values(), ids=MALFORMED.keys())
def test_a_malformed_manifest_is_one_bundle_error(copy, change):
    _rewrite(copy, change, rehash=False)
    for verify in (True, False):
        with pytest.raises(BundleError, match="manifest"):
            load(copy, verify_hashes=verify)


DAMAGED_FILES = {
    "config.json is a list": ("config.json", "[1, 2, 3]", "not an object"),
    "id2label keys are not indices": (
        "config.json",
        json.dumps({"id2label": {"a": "neg", "b": "pos"}}),
        "not a class index",
    ),
    "tokenizer.json is garbage": ("tokenizer.json", '{"model": "nonsense"}', "not a tokenizer"),
    "special_tokens_map.json is truncated": ("special_tokens_map.json", '{"pad_token": ', "not valid JSON"),
    "the model is not ONNX": ("onnx/model_quantized.onnx", "this is no graph", "could not be opened"),
}


@pytest.mark.parametrize("name,content,message", DAMAGED_FILES.values(), ids=DAMAGED_FILES.keys())
def test_damaged_files_with_a_consistent_manifest_are_one_line_everywhere(copy, name, content, message):
    (copy / name).write_text(content)
    _rewrite(copy)
    with pytest.raises(BundleError, match=message):
        load(copy)
    cli = CliRunner().invoke(app, ["run", str(copy), "fun"])
    assert cli.exit_code == 2 and "internal error" not in cli.output and "Traceback" not in cli.output
    assert message.split()[0] in cli.output
    alone = subprocess.run(
        [sys.executable, "-m", "edgenlp.runtime", str(copy), "fun"], capture_output=True, text=True, check=False
    )
    assert alone.returncode == 2 and alone.stderr.startswith("error: ") and len(alone.stderr.strip().splitlines()) == 1
    served = CliRunner().invoke(app, ["serve", str(copy), "--port", "1"])
    assert served.exit_code == 2 and "internal error" not in served.output


def _zip_of(folder: Path, archive: Path, extra: dict | None = None) -> Path:
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as z:
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            z.write(path, path.relative_to(folder).as_posix())
        for name, data in (extra or {}).items():
            z.writestr(name, data)
    return archive


def test_a_zip_that_unpacks_to_more_than_its_manifest_lists_is_refused_before_extraction(bundle, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("EDGENLP_CACHE", str(cache))
    bomb = _zip_of(bundle, tmp_path / "bomb.zip", {"onnx/padding.bin": b"\0" * (64 << 20)})
    assert bomb.stat().st_size < 1 << 20  # 64 MiB of zeros packs into well under one
    with pytest.raises(BundleError, match="does not list at that size"):
        load(bomb)
    assert not any(cache.rglob("*.bin")), "nothing of a refused zip is kept"
    assert sum(p.stat().st_size for p in cache.rglob("*") if p.is_file()) == 0


def test_a_zip_whose_total_passes_the_cap_is_refused(bundle, tmp_path, monkeypatch):
    monkeypatch.setenv("EDGENLP_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(bundle_module, "MAX_UNPACKED_BYTES", 1000)
    with pytest.raises(BundleError, match="would unpack to more than 1000 bytes"):
        load(_zip_of(bundle, tmp_path / "big.zip"))
    assert not [p for p in (tmp_path / "cache").rglob("*") if p.is_file()]


def test_a_member_that_inflates_past_its_declared_size_stops_at_the_first_byte_over(bundle, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("EDGENLP_CACHE", str(cache))
    archive = _zip_of(bundle, tmp_path / "forged.zip")
    info = next(i for i in zipfile.ZipFile(archive).infolist() if i.filename == "config.json")
    monkeypatch.setattr(zipfile.ZipExtFile, "read", _inflating_more(zipfile.ZipExtFile.read, info.file_size))
    with pytest.raises(BundleError, match="inflates past"):
        load(archive)
    assert not [p for p in cache.rglob("*") if p.is_file()], "the partial copy is removed"


def _inflating_more(read, declared: int):
    """A member that yields more bytes than its header declares (what a forged local header does)."""

    def forged(self, n=-1):
        data = read(self, n)
        if getattr(self, "name", "") == "config.json" and data:
            return data + b" " * (declared + 1)
        return data

    return forged


def test_the_manifest_carries_no_path_of_the_build_machine(bundle, tiny_run):
    text = (bundle / "manifest.json").read_text()
    for folder in (tiny_run.out_dir.resolve(), Path.cwd().resolve(), Path("/tmp").resolve()):
        assert str(folder) not in text
    info = TestClient(create_app(load(bundle), ServeSettings())).get("/info").json()
    assert "/tmp" not in json.dumps(info)


def test_the_server_serves_only_listed_files_inside_the_bundle(copy, tmp_path):
    outside = tmp_path / "secret.txt"
    outside.write_text("secret")
    os.symlink(outside, copy / "README-link.txt")
    _rewrite(copy)  # the link is listed and hashed (its target's bytes): the server must still refuse it
    with pytest.raises(BundleError, match="symbolic link"):
        load(copy, verify_hashes=False)
    (copy / "README-link.txt").unlink()
    _rewrite(copy)
    client = TestClient(create_app(load(copy, verify_hashes=False), ServeSettings()))
    assert client.get("/models/bundle/config.json").status_code == 200
    for path in ("../../../../etc/passwd", "..%2F..%2F..%2Fetc%2Fpasswd", "%2Fetc%2Fpasswd", "onnx/../../secret.txt"):
        response = client.get(f"/models/bundle/{path}")
        assert response.status_code == 404 and "root:" not in response.text and "secret" not in response.text


def test_bundle_zip_replaces_only_an_edgenlp_zip(tiny_run, tmp_path):
    out = tmp_path / "b"
    foreign = tmp_path / "b.zip"
    with zipfile.ZipFile(foreign, "w") as z:
        z.writestr("manifest.json", json.dumps({"name": "someone else's app"}))
    result = CliRunner().invoke(app, ["bundle", str(tiny_run.out_dir), "--out", str(out), "--zip"])
    assert result.exit_code == 2 and "not a zipped edgenlp bundle" in result.output
    with zipfile.ZipFile(foreign) as z:
        assert json.loads(z.read("manifest.json")) == {"name": "someone else's app"}
    foreign.unlink()
    assert CliRunner().invoke(app, ["bundle", str(tiny_run.out_dir), "--out", str(out), "--zip"]).exit_code == 0
    assert CliRunner().invoke(app, ["bundle", str(tiny_run.out_dir), "--out", str(out), "--zip"]).exit_code == 0


def test_a_bundle_given_by_a_relative_path_loads_and_answers(bundle, monkeypatch):
    monkeypatch.chdir(bundle.parent)
    for verify in (True, False):
        assert load(bundle.name, verify_hashes=verify).classify(["fun"])[0]["label"] in ("neg", "pos")
    result = CliRunner().invoke(app, ["run", bundle.name, "fun"])
    assert result.exit_code == 0, result.output
