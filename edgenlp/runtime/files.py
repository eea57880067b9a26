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
import shutil
import stat
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path

from .errors import BundleError


class Files:
    """Plain reads of any path: a variant folder or model the caller trusts."""

    @contextmanager
    def pinned(self, *paths: str | Path):
        """Paths an engine may open by name itself (here: the paths as they are)."""
        yield {p: Path(p) for p in paths}

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
        from .hashing import sha256_bytes

        self.folder = Path(folder)
        self.listed = listed
        """relative name -> {"sha256", "bytes"}, as the manifest's schema checked them."""
        self.verify = verify
        self.checked: set[str] = set()
        self._sha256 = sha256_bytes

    def name_of(self, path: str | Path) -> str:
        """The manifest name of `path` (absolute inside the folder, or relative to it); refuses anything else."""
        path = Path(path)
        for base in (self.folder, self.folder.absolute()):  # a path the loader built from the folder, as given or not
            try:
                rel = path.relative_to(base)
                break
            except ValueError:
                continue
        else:
            if path.is_absolute():
                raise BundleError(f"{path} is outside the bundle {self.folder}: a bundle only opens its own files")
            rel = path  # a name relative to the folder
        name = rel.as_posix()
        if name not in self.listed:
            raise BundleError(
                f"{self.folder} needs {name}, which its manifest does not list: the bundle is damaged "
                "or was not written by edgenlp; rebuild it"
            )
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
        if self.verify and (
            len(data) != self.listed[name]["bytes"] or self._sha256(data) != self.listed[name]["sha256"]
        ):
            raise self._changed(name)
        self.checked.add(name)
        return data

    @contextmanager
    def pinned(self, *paths: str | Path):
        """Paths an engine can open by name (onnxruntime maps a model's weights file rather than copying it)
        whose bytes are still the checked ones: each file is opened once, no link followed, hashed through
        that descriptor, and offered as a link to the descriptor itself (`/proc/self/fd/N`) in a private
        temporary folder, side by side as in the bundle. Whatever replaces a file's name in the bundle
        afterwards, the engine opens what was hashed. Where the system has no /proc (not Linux), engines get
        no paths (None) and take the checked bytes from `read`."""
        if not sys.platform.startswith("linux") or not Path("/proc/self/fd").is_dir():
            yield None
            return
        names = [self.name_of(p) for p in paths]
        folder = Path(tempfile.mkdtemp(prefix="edgenlp-bundle-"))  # mode 0700: nobody else can swap the links
        descriptors: list[int] = []
        try:
            linked = {}
            for path, name in zip(paths, names):
                fd = open_inside(self.folder, name)
                descriptors.append(fd)
                if self.verify and not self._matches(fd, name):
                    raise self._changed(name)
                self.checked.add(name)
                link = folder / Path(name).name
                os.symlink(f"/proc/self/fd/{fd}", link)
                linked[path] = link
            yield linked
        finally:
            for fd in descriptors:
                os.close(fd)
            shutil.rmtree(folder, ignore_errors=True)

    def check(self, path: str | Path) -> None:
        """Hash one listed file without keeping it (for the files no loader reads)."""
        name = self.name_of(path)
        fd = open_inside(self.folder, name)
        try:
            if self.verify and not self._matches(fd, name):
                raise self._changed(name)
        finally:
            os.close(fd)
        self.checked.add(name)

    def _matches(self, fd: int, name: str) -> bool:
        from .hashing import CHUNK, new_sha256

        digest, offset = new_sha256(), 0
        while chunk := os.pread(fd, CHUNK, offset):
            digest.update(chunk)
            offset += len(chunk)
        return offset == self.listed[name]["bytes"] and digest.hexdigest() == self.listed[name]["sha256"]

    def _changed(self, name: str) -> BundleError:
        return BundleError(
            f"{name} in {self.folder} does not match its sha256 in the manifest: the file was changed "
            "or damaged; copy the bundle again"
        )


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
            raise BundleError(
                f"{name} in {folder} is a symbolic link: a bundle holds its own files; copy it without links"
            )
        if i < len(parts) - 1 and not stat.S_ISDIR(mode):
            raise BundleError(f"{folder} is missing {name}: copy the whole bundle again")
    return path


def open_inside(folder: Path, name: str) -> int:
    """A read-only descriptor of the regular file `path_inside(folder, name)`, opened without following a link."""
    fd = os.open(path_inside(folder, name), os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise BundleError(f"{name} in {folder} is not a regular file: copy the bundle again")
    return fd


def read_inside(folder: Path, name: str) -> bytes:
    """The bytes of `path_inside(folder, name)`, opened without following a link."""
    with os.fdopen(open_inside(folder, name), "rb") as f:
        return f.read()
