"""The `edgenlp` command, one module per group of commands:

app.py       the application, setup, and user errors as one line (exit 2)
options.py   shared options, and options generated from typed settings (stage Configs)
run.py       optimize (the main job), report, compare
stages.py    finetune, prune, distill: one stage on one model
measure.py   bench, explain, preflight
bundles.py   bundle, run, serve, generate
targets.py   target setup (the emulated machines of bundle --check-on)
"""

from __future__ import annotations

from importlib import import_module

from .app import app, guarded
from .run import run_name

for _group in (
    "run",
    "stages",
    "measure",
    "bundles",
    "targets",
):  # each registers its commands, in `edgenlp --help` order
    import_module(f"{__name__}.{_group}")

__all__ = ["app", "guarded", "main", "run_name"]


def main() -> None:
    app()
