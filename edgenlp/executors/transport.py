"""Moving a folder between machines: a tar in memory whose every file is checked on arrival.

Ray carries the bytes (its object store); this module only packs a folder with the sha256 of each
file and, on the other side, unpacks it into a fresh folder and refuses it unless every file is
there with that hash. Nothing here imports Ray, so the checks are tested without a cluster.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import tarfile
import uuid
from pathlib import Path

from ..errors import ArtifactError

MANIFEST = ".edgenlp-transport.json"


def _sha256(path: Path) -> str:
    from ..artifact import sha256_file

    return sha256_file(path)


def pack(folder: Path) -> bytes:
    """Every file under `folder` (links followed) plus a manifest of their hashes, as tar bytes."""
    folder = Path(folder)
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    manifest = {str(p.relative_to(folder)): _sha256(p) for p in files}
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for path in files:
            tar.add(path, arcname=str(path.relative_to(folder)), recursive=False)
        data = json.dumps(manifest, sort_keys=True).encode()
        info = tarfile.TarInfo(MANIFEST)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def unpack(blob: bytes, dest: Path, what: str) -> dict[str, str]:
    """Unpack into `dest` (which must not exist or be empty); returns the hashes checked.

    Raises ArtifactError naming the first file that is missing, extra or changed: a transfer that
    lost or altered a byte is never used.
    """
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(blob), mode="r") as tar:
        tar.extractall(dest, filter="data")
    manifest_path = dest / MANIFEST
    if not manifest_path.exists():
        raise ArtifactError(f"{what} arrived without its list of hashes: the transfer is incomplete; rerun")
    manifest = json.loads(manifest_path.read_text())
    manifest_path.unlink()
    found = {str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file()}
    for rel in sorted(set(manifest) | found):
        if rel not in found:
            raise ArtifactError(f"{what} arrived without {rel}: the transfer lost a file; rerun")
        if rel not in manifest:
            raise ArtifactError(f"{what} arrived with {rel}, which was not sent: rerun")
        if _sha256(dest / rel) != manifest[rel]:
            raise ArtifactError(f"{what}: {rel} arrived with another sha256 than was sent: the copy is corrupt; rerun")
    return manifest


def unpack_once(blob_of, key: str, cache: Path, what: str) -> Path:
    """The folder for `key` under `cache`, unpacked from `blob_of()` the first time it is asked for.

    Concurrent tasks on one node may ask at once: each unpacks into its own temporary folder and
    the first rename wins; the others drop theirs.
    """
    final = cache / key
    if final.is_dir():
        return final
    tmp = cache / f".{key}.{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        unpack(blob_of(), tmp, what)
        try:
            os.rename(tmp, final)
        except OSError:  # another task published it first
            if not final.is_dir():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final
