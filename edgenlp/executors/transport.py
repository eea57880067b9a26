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

from ..errors import ArtifactError, EdgeNLPError

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
    # dereference: a link (a hub snapshot's files point into its blobs/) travels as the file it names
    with tarfile.open(fileobj=buffer, mode="w", dereference=True) as tar:
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

    A copy found there is used only once it proves to be `key` again (an artifact's own hashes and
    id, or the hash of its files): a damaged or planted copy is removed and unpacked anew.
    Concurrent tasks on one node may ask at once: each unpacks into its own temporary folder and
    the first rename wins; the others drop theirs.
    """
    final = cache / key
    if final.is_dir() and not final.is_symlink():
        if is_copy_of(final, key):
            return final
        shutil.rmtree(final, ignore_errors=True)
    elif final.is_symlink():
        final.unlink()
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


def is_copy_of(folder: Path, key: str) -> bool:
    """Whether `folder` holds exactly what `key` names (see `Shipped.key`)."""
    from ..artifact import META_FILE, Artifact, hash_tree, stable_id

    try:
        if (folder / META_FILE).is_file():
            art = Artifact.load(folder)
            if art.id == key:
                return art.verify()
        return stable_id(hash_tree(folder)) == key
    except (OSError, ValueError, KeyError, EdgeNLPError):
        return False


def private_folder(path: Path) -> Path:
    """`path` as a folder only this user can enter (mode 0700, owned by us, not a link), made if missing;
    anything else there is refused rather than used: another user could have planted its contents."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    info = os.lstat(path)
    if os.path.islink(path) or info.st_uid != os.getuid() or info.st_mode & 0o077:
        raise ArtifactError(
            f"{path} is not a private folder of this user (a link, another owner, or open to others): "
            "remove it, or point EDGENLP_RAY_CACHE at a folder of your own"
        )
    return path
