"""Errors a user can cause. Each message names the bad value and the fix, on one line.

They live in the runtime so that an app that installs only the runtime gets the same classes as
the toolkit, whose `edgenlp.errors` builds on them.
"""

from __future__ import annotations


class EdgeNLPError(Exception):
    """Base class: the CLI prints the message and exits with code 2."""


class InputError(EdgeNLPError):
    """A request the model cannot serve: empty text, a prompt longer than its context, a bad count."""


class BundleError(EdgeNLPError):
    """A bundle that cannot be trusted or read: a tampered, missing or extra file, a newer format."""


def first_problem(exc) -> str:
    """A pydantic ValidationError as one line: where (dotted) and what was wrong, with the value given."""
    err = exc.errors()[0]
    where = ".".join(str(x) for x in err.get("loc", ()))
    given = err.get("input")
    shown = repr(given) if not isinstance(given, (dict, list)) else type(given).__name__
    if len(shown) > 80:
        shown = shown[:77] + "..."
    message = err.get("msg", "invalid").replace("\n", " ")
    message = message[0].lower() + message[1:] if message else "invalid"
    return f"{where}: {message} (got {shown})" if where else message
