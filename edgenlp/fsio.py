"""Crash-safe file system steps: atomic writes, durable renames, folder swaps and run-folder locks.

Everything edgenlp publishes goes through here, so that a process killed at any instant leaves
either the old or the new version of a file or folder, never a mix and never nothing.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import json
import os
import shutil
import socket
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from .errors import EdgeNLPError

LOCK_FILE = ".edgenlp.lock"


class FolderInUseError(EdgeNLPError):
    pass


def fsync_dir(path: Path) -> None:
    """Make a rename or a new entry in `path` survive a power cut (no-op where unsupported)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def fsync_tree(root: Path) -> None:
    """fsync every file and folder below `root`, so a folder renamed into place is complete on disk."""
    for folder, _, files in os.walk(root):
        for name in files:
            with open(os.path.join(folder, name), "rb") as f:
                os.fsync(f.fileno())
        fsync_dir(Path(folder))


def write_bytes_atomic(path: Path, data: bytes) -> Path:
    """Write `data` to `path` through a uniquely named temporary file, fsynced, then renamed."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
    return path


def write_text_atomic(path: Path, text: str) -> Path:
    return write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: Path, data: Any) -> Path:
    return write_text_atomic(path, json.dumps(data, indent=2, sort_keys=False, default=str))


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> bool:
    """Swap two folders in one atomic step (Linux renameat2); False where the system cannot."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    if ctypes.get_errno() in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):
        return False
    raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()), str(a))


def refuse_link(dest: Path) -> None:
    """A folder edgenlp replaces whole must not be a symbolic link: swapping would put a folder where the
    user's link was (and leave the link's target behind). The user passes the folder it points to."""
    if Path(dest).is_symlink():
        raise EdgeNLPError(
            f"{dest} is a symbolic link: edgenlp replaces this folder whole and never replaces a "
            f"link; pass the folder it points to ({os.path.realpath(dest)}) or a new path"
        )


def replace_folder(new: Path, dest: Path, old: Path) -> None:
    """Put the complete folder `new` at `dest`; a previous `dest` goes away.

    Where the system can swap folders atomically, `dest` always names a complete folder. Elsewhere
    the previous folder is first renamed to `old`; if the process dies before the second rename,
    `recover_folder` renames `old` back on the next run.
    """
    refuse_link(dest)
    fsync_tree(new)
    if not dest.exists():
        os.rename(new, dest)
    elif _exchange(new, dest):
        shutil.rmtree(new)
    else:
        os.rename(dest, old)
        fsync_dir(dest.parent)
        os.rename(new, dest)
        fsync_dir(dest.parent)
        shutil.rmtree(old)
    fsync_dir(dest.parent)


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def leftovers(dest: Path) -> list[tuple[Path, str, int]]:
    """Temporary siblings of `dest` that edgenlp made: (path, kind `partial`/`old`, owner pid)."""
    found = []
    if not dest.parent.is_dir():
        return found
    prefix = f".{dest.name}."
    for p in dest.parent.iterdir():
        if not p.name.startswith(prefix):
            continue
        kind, _, pid = p.name[len(prefix) :].partition("-")
        if kind in ("partial", "old") and pid.isdigit():
            found.append((p, kind, int(pid)))
    return found


def recover_folder(dest: Path) -> list[str]:
    """Undo what dead processes left beside `dest`; returns what was done, for the log.

    An `old` folder with no `dest` is a publish cut between its two renames: it goes back into
    place. Every other leftover of a dead process is a temporary folder nobody will finish.
    """
    done = []
    for path, kind, pid in sorted(leftovers(dest), key=lambda x: x[1] != "old"):
        if _pid_alive(pid):
            continue
        if kind == "old" and not dest.exists():
            os.rename(path, dest)
            fsync_dir(dest.parent)
            done.append(f"restored {dest} from {path.name}")
        else:
            shutil.rmtree(path, ignore_errors=True)
            done.append(f"removed {path.name}")
    return done


class FolderLock:
    """An exclusive lock on a folder for one edgenlp process (flock: released when the process dies).

    A second process gets `FolderInUseError` naming the holder instead of racing on the same files;
    with `wait`, it (or another thread: each `FolderLock` opens its own file description) waits its
    turn instead, for locks held only as long as a short critical section.
    """

    def __init__(self, folder: Path, lock_name: str = LOCK_FILE, wait: bool = False):
        self.folder = Path(folder)
        self.path = self.folder / lock_name
        self.wait = wait
        self._fd: int | None = None

    def __enter__(self) -> FolderLock:
        self.folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if self.wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise FolderInUseError(
                f"{self.folder} is in use by another edgenlp process (PID {holder.get('pid', '?')} on "
                f"{holder.get('host', '?')}, `{holder.get('command', '?')}`, since {holder.get('since', '?')}): "
                "wait for it to finish, or pass another --out"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(
            fd,
            json.dumps(
                {
                    "pid": os.getpid(),
                    "host": socket.gethostname(),
                    "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])[:200],
                    "since": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                }
            ).encode(),
            0,
        )
        self._fd = fd
        return self

    def __exit__(self, *exc) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


def _read_holder(fd: int) -> dict:
    try:
        return json.loads(os.pread(fd, 4096, 0).decode() or "{}")
    except (OSError, ValueError):
        return {}
