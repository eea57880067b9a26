"""Progress for long steps: silent in library use; once the CLI turns it on, rich bars on a terminal and
plain lines elsewhere (a script, a CI log), where a bar would only appear once it had finished.

Off a terminal, a step prints a line when it starts, one when it finishes, and a heartbeat at least
once a minute in between (its count so far, or that it is still running), so a log always shows
where a run is.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

_console = None
HEARTBEAT_S = 60.0


def enable(console) -> None:
    """Report on this rich console (the CLI calls this; library users stay silent)."""
    global _console
    _console = console


def _plain() -> bool:
    return _console is not None and not _console.is_terminal


def _say(line: str) -> None:
    _console.print(line, highlight=False, soft_wrap=True)


def note(line: str) -> None:
    """A line the user should read whatever the console (a decision, not a step's progress)."""
    if _console is not None:
        _say(line)


def _elapsed(seconds: float) -> str:
    minutes, seconds = divmod(int(seconds), 60)
    return f"{minutes}m{seconds:02d}s" if minutes else f"{seconds}s"


@contextmanager
def _heartbeat(what: Callable[[], str], started: float) -> Iterator[None]:
    """A line every HEARTBEAT_S while the block runs (from a timer thread: the block may never call back)."""
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(HEARTBEAT_S):
            _say(f"{what()} ({_elapsed(time.monotonic() - started)})")

    thread = threading.Thread(target=beat, name="edgenlp-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(1)


@contextmanager
def task(description: str, total: float | None) -> Iterator[Callable[..., None]]:
    """Yields `advance(steps=1, description=None)`."""
    if _console is None:
        yield lambda steps=1, description=None: None
        return
    if _plain():
        state = {"done": 0.0, "description": description}
        of = f"/{total:g}" if total else ""

        def advance(steps: float = 1, description: str | None = None) -> None:
            state["done"] += steps
            state["description"] = description or state["description"]

        started = time.monotonic()
        _say(f"{description}: started" + (f" ({total:g} steps)" if total else ""))
        with _heartbeat(lambda: f"{state['description']}: {state['done']:g}{of}", started):
            yield advance
        _say(f"{state['description']}: finished {state['done']:g}{of} in {_elapsed(time.monotonic() - started)}")
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns = [
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    ]
    with Progress(*columns, console=_console, transient=False) as bar:
        tid = bar.add_task(description, total=total)

        def advance(steps: float = 1, description: str | None = None) -> None:
            bar.update(tid, advance=steps, **({"description": description} if description else {}))

        yield advance


@contextmanager
def stage(variant: str, stage_name: str) -> Iterator[Callable[[str], None]]:
    """One variant's build: off a terminal, a line at its start and at its end (with how it ended and the time),
    and a heartbeat while it runs. Yields `ended(how)`, e.g. `ended("reused")`; the default is "built"."""
    outcome = {"how": "built"}
    if not _plain():
        yield lambda how: outcome.update(how=how)
        return
    started = time.monotonic()
    _say(f"variant {variant} ({stage_name}): started")
    try:
        with _heartbeat(lambda: f"variant {variant} ({stage_name}): running", started):
            yield lambda how: outcome.update(how=how)
    except BaseException:
        _say(f"variant {variant} ({stage_name}): failed after {_elapsed(time.monotonic() - started)}")
        raise
    _say(f"variant {variant} ({stage_name}): {outcome['how']} in {_elapsed(time.monotonic() - started)}")
