"""The `edgenlp` application: setup, and user errors as one line on stderr with exit code 2."""

from __future__ import annotations

import errno
import logging
import traceback
from collections.abc import Callable
from functools import wraps
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape

from .. import progress
from ..errors import EdgeNLPError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Make fine-tuned transformer NLP models small and fast for edge CPUs, with benchmarks.",
)
err_console = Console(stderr=True)
EXIT_USER_ERROR = 2


def setup(verbose: bool, trust_remote_code: bool = False) -> None:
    from ..trust import allow_remote_code

    allow_remote_code(trust_remote_code)
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    progress.enable(err_console)
    if not verbose:
        import warnings

        warnings.filterwarnings("ignore")
        for noisy in ("transformers", "optimum", "onnxruntime", "root", "torch"):
            logging.getLogger(noisy).setLevel(logging.ERROR)


def guarded(fn: Callable) -> Callable:
    """Turn user errors into one line; keep a traceback file for bugs instead of dumping it."""

    @wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except EdgeNLPError as exc:
            err_console.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False, soft_wrap=True)
            raise typer.Exit(getattr(exc, "exit_code", EXIT_USER_ERROR)) from None
        except KeyboardInterrupt:
            err_console.print("interrupted: finished variants are kept; rerun to continue")
            raise typer.Exit(130) from None
        except (typer.Exit, typer.Abort):
            raise
        except OSError as exc:
            if exc.errno not in USER_OS_ERRORS:
                internal_error(exc)
            where = f" {exc.filename}" if exc.filename else ""
            err_console.print(
                f"[red]error:[/red] cannot write or read{escape(where)}: {escape(exc.strerror or str(exc))}: "
                f"{USER_OS_ERRORS[exc.errno]}",
                highlight=False,
                soft_wrap=True,
            )
            raise typer.Exit(EXIT_USER_ERROR) from None
        except Exception as exc:
            internal_error(exc)

    return wrapper


USER_OS_ERRORS = {
    errno.EACCES: "fix the permissions, or point --out (or the working directory) at a writable folder",
    errno.EPERM: "fix the permissions, or point --out (or the working directory) at a writable folder",
    errno.EROFS: "the file system is read-only: point --out (or the working directory) at a writable folder",
    errno.ENOSPC: "the disk is full: free space, or point --out at another disk; finished variants are kept",
    errno.EDQUOT: "the disk quota is used up: free space, or point --out at another disk",
}


def internal_error(exc: Exception) -> None:
    """A bug: one line on the terminal, the traceback in a file of the user's own cache folder."""
    first_line = escape(str(exc).splitlines()[0]) if str(exc) else ""
    log = write_traceback(traceback.format_exc())
    where = f"traceback written to {log}" if log else "no folder was writable for the traceback"
    err_console.print(
        f"[red]internal error:[/red] {type(exc).__name__}: {first_line} (a bug: {where}; please report it)",
        highlight=False,
        soft_wrap=True,
    )
    raise typer.Exit(1)


def write_traceback(trace: str) -> Path | None:
    """A new file under `EDGENLP_CACHE_DIR/errors` (a folder only the user can enter), created exclusively and
    never through a link: nothing planted in a shared folder can redirect it."""
    import os
    import time

    from ..settings import cache_dir

    folder = cache_dir() / "errors"
    try:
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        if folder.is_symlink() or folder.stat().st_uid != os.getuid():
            return None
        path = folder / f"edgenlp-error-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(trace)
        return path
    except OSError:
        return None


def typed(cls, what: str, flags: dict[str, tuple[str, ...]] | None = None, **values):
    """Build a settings model from command-line values; a bad value is one line naming the option."""
    from pydantic import ValidationError

    from ..errors import validation_line

    def option(loc: tuple) -> str:
        if not loc:
            return what
        return (flags or {}).get(str(loc[0]), ("--" + str(loc[0]).replace("_", "-"),))[0]

    try:
        return cls(**values)
    except ValidationError as exc:
        raise EdgeNLPError(validation_line(exc, what, name=option)) from None
