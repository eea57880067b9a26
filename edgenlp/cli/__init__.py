"""The `edgenlp` command, one module per group of commands:

    app.py       the application, setup, and user errors as one line (exit 2)
    options.py   shared options, and options generated from typed settings (stage Configs)
    run.py       optimize (the main job), report, compare
    stages.py    finetune, prune, distill: one stage on one model
    measure.py   bench, explain, preflight
    bundles.py   bundle, run, serve, generate
"""

from __future__ import annotations

# each module registers its commands, in the order `edgenlp --help` lists them
from . import run  # noqa: F401, I001
from . import stages  # noqa: F401
from . import measure  # noqa: F401
from . import bundles  # noqa: F401
from .app import app, guarded
from .run import run_name

__all__ = ["app", "guarded", "main", "run_name"]


def main() -> None:
    app()
