"""How the runtime reads a model's files: any path for a folder of one's own, only checked files for a bundle.

Every loader (tokenizer, configs, each engine's model files) reads through a `Files` object, so
what a bundle hands onnxruntime, OpenVINO, CTranslate2 and the tokenizer is exactly the bytes
whose sha256 was compared with the manifest, read once: a file swapped between the check and the
load cannot slip in. `BundleFiles` also refuses any name its manifest does not list, anything
that leaves the folder, and symbolic links, whether hashes are checked or not.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

from .errors import BundleError


class Files:
    """Plain reads of any path: a variant folder or model the caller trusts."""

    def read(self, path: str | Path) -> bytes:
        return Path(path).read_bytes()

    def exists(self, path: str | Path) -> bool:
        return Path(path).is_file()

    def text(self, path: str | Path) -> str:
        data = self.read(path)
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            raise BundleError(f"{path} is not UTF-8 text: the file is damaged; copy it again") from None

    def json(self, path: str | Path, default: dict | None = None) -> dict:
        """A JSON object file (`default` when absent); anything else is a one-line error."""
        if default is not None and not self.exists(path):
            return default
        try:
            value = json.loads(self.text(path))
        except ValueError as exc:
            raise BundleError(f"{path} is not valid JSON ({exc}): the file is damaged; copy it again") from None
        if not isinstance(value, dict):
            raise BundleError(f"{path} holds a JSON {type(value).__name__}, not an object: the file is damaged")
        return value


PLAIN = Files()


class BundleFiles(Files):
    """The files a bundle's manifest lists, inside its folder, each checked against its sha256 as it is read."""

    def __init__(self, folder: Path, listed: dict, verify: bool = True):
        from .bundle import sha256_bytes

        self.folder = Path(folder)
        self.listed = listed
        """relative name -> {"sha256", "bytes"}, as the manifest's schema checked them."""
        self.verify = verify
        self.checked: set[str] = set()
        self._sha256 = sha256_bytes

    def name_of(self, path: str | Path) -> str:
        """The manifest name of `path` (absolute inside the folder, or relative to it); refuses anything else."""
        path = Path(path)
        try:
            rel = path.relative_to(self.folder) if path.is_absolute() else path
        except ValueError:
            raise BundleError(f"{path} is outside the bundle {self.folder}: a bundle only opens its own files") from None
        name = rel.as_posix()
        if name not in self.listed:
            raise BundleError(f"{self.folder} needs {name}, which its manifest does not list: the bundle is damaged "
                              "or was not written by edgenlp; rebuild it")
        return name

    def exists(self, path: str | Path) -> bool:
        try:
            self.name_of(path)
        except BundleError:
            return False
        return True

    def read(self, path: str | Path) -> bytes:
        name = self.name_of(path)
        data = read_inside(self.folder, name)
        entry = self.listed[name]
        if self.verify and (len(data) != entry["bytes"] or self._sha256(data) != entry["sha256"]):
            raise BundleError(f"{name} in {self.folder} does not match its sha256 in the manifest: the file was changed "
                              "or damaged; copy the bundle again")
        self.checked.add(name)
        return data


def path_inside(folder: Path, name: str) -> Path:
    """`folder/name` where no part of the way is a symbolic link (checked with lstat), nor '..': a path that
    stays inside `folder` whatever the folder holds."""
    path = Path(folder)
    parts = Path(name).parts
    if not parts or Path(name).is_absolute() or any(p in ("..", ".") for p in parts):
        raise BundleError(f"{name} is not a name inside {folder}: a bundle only opens its own files")
    for i, part in enumerate(parts):
        path = path / part
        try:
            mode = os.lstat(path).st_mode
        except FileNotFoundError:
            raise BundleError(f"{folder} is missing {name}: copy the whole bundle again") from None
        if stat.S_ISLNK(mode):
            raise BundleError(f"{name} in {folder} is a symbolic link: a bundle holds its own files; copy it without links")
        if i < len(parts) - 1 and not stat.S_ISDIR(mode):
            raise BundleError(f"{folder} is missing {name}: copy the whole bundle again")
    return path


def read_inside(folder: Path, name: str) -> bytes:
    """The bytes of `path_inside(folder, name)`, opened without following a link."""
    path = path_inside(folder, name)
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise BundleError(f"{name} in {folder} is not a regular file: copy the bundle again")
        with os.fdopen(fd, "rb") as f:
            fd = -1
            return f.read()
    finally:
        if fd >= 0:
            os.close(fd)
