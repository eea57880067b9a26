"""Progress bars for long steps: silent in library use, rich bars once the CLI turns them on."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator

_console = None


def enable(console) -> None:
    """Show bars on this rich console (the CLI calls this; library users stay silent)."""
    global _console
    _console = console


@contextmanager
def task(description: str, total: float | None) -> Iterator[Callable[..., None]]:
    """Yields `advance(steps=1, description=None)`."""
    if _console is None:
        yield lambda steps=1, description=None: None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TimeRemainingColumn()]
    with Progress(*columns, console=_console, transient=False) as bar:
        tid = bar.add_task(description, total=total)

        def advance(steps: float = 1, description: str | None = None) -> None:
            bar.update(tid, advance=steps, **({"description": description} if description else {}))

        yield advance
