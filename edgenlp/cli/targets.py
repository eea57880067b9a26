"""Machines bundles are built for: `target setup`, which prepares an emulated one for `bundle --check-on`."""

from __future__ import annotations

import typer
from rich.console import Console

from ..errors import EdgeNLPError
from .app import app, guarded

target_app = typer.Typer(no_args_is_help=True, help="Emulated machines that check bundles: setup.")
app.add_typer(target_app, name="target")


@target_app.command("setup")
@guarded
def setup_target(
    family: str = typer.Argument(..., help="arm64: Debian's arm64 Python under qemu, with PyPI's aarch64 wheels."),
    refresh: bool = typer.Option(False, "--refresh", help="Build it again from scratch."),
) -> None:
    """Build (once, under EDGENLP_CACHE_DIR) the emulated machine that `edgenlp bundle --check-on` runs bundles on."""
    from .. import targets

    module = targets.family(family)
    env = module.setup(refresh=refresh, fetch_qemu=True)
    console = Console()
    console.print(f"{family}: ready in {module.root()}", highlight=False)
    console.print(
        "  wheels: " + ", ".join(f"{k} {v}" for k, v in env.versions.items()) + f" (Python {module.PYTHON})",
        highlight=False,
        soft_wrap=True,
    )
    for name, cpu in module.CPUS.items():
        try:
            runs_on = module.emulator(name)
        except EdgeNLPError as refused:
            runs_on = f"unavailable: {refused}"
        console.print(
            f"  --check-on {name}: qemu -cpu {cpu.qemu}, {cpu.kernels} INT8 kernels ({cpu.like}); {runs_on}",
            highlight=False,
        )
