"""Errors a user can cause. Each message names the bad value and the fix, on one line."""

from __future__ import annotations

from .runtime.engines import EngineMissing  # noqa: F401
from .runtime.errors import BundleError, EdgeNLPError, InputError  # noqa: F401  (the runtime ships them alone)


class ModelNotFoundError(EdgeNLPError):
    pass


class DataError(EdgeNLPError):
    pass


class RecipeError(EdgeNLPError):
    pass


class ArtifactError(EdgeNLPError):
    pass


class ValidationFailed(EdgeNLPError):
    pass


class BenchError(EdgeNLPError):
    pass


class EngineError(ArtifactError):
    """A model an engine cannot convert (an operator or layer it lacks)."""


class VariantsSkipped(EdgeNLPError):
    """Some variants could not be built (an engine not installed, a conversion refused); the rest were."""


def printable(part: object) -> str:
    """A key as one line: a stranger's key may hold line breaks or control characters (shown escaped)."""
    text = str(part)
    return text if text.isprintable() else repr(text)[1:-1]


def key_path(loc: tuple) -> str:
    """A pydantic location as a recipe reader writes it: `variants[0].config.epochs`."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{printable(part)}" if out else printable(part))
    return out or "the document"


def dotted_path(loc: tuple) -> str:
    """A pydantic location with dots only: `variants.0.metrics` (JSON documents, request bodies)."""
    return ".".join(printable(part) for part in loc) or "the document"


def validation_detail(exc, *, name=key_path, prefix: tuple = (), skip: tuple = ()) -> str:
    """The first error of a pydantic validation (anything with `.errors()`) as where and what, on one line.

    The one formatter behind every such message (recipes, stage options, profiles, results files,
    request bodies): an unknown key and a missing key say so and how to fix it; any other error names
    its place (`name` spells it: a key path, a dotted path, a command-line option) and the offending
    value when that is small.
    """
    # of a union's alternatives, the one that matched furthest says what is wrong (the first: that it is no str)
    errors = exc.errors()
    err = max(errors, key=lambda e: len(e.get("loc", ())))
    loc = tuple(part for part in (*prefix, *err.get("loc", ())) if part not in skip)
    where = name(loc)
    if err.get("type") == "extra_forbidden":
        return f"unknown key '{printable(loc[-1])}' at {where}: check its spelling against the documented keys"
    if err.get("type") == "missing":
        return f"{where} is required but missing: add it"
    message = str(err.get("msg", "invalid")).removeprefix("Value error, ")
    message = message[:1].lower() + message[1:]
    value = err.get("input")
    shown = "" if isinstance(value, (dict, list)) or len(repr(value)) > 80 else f" (got {value!r})"
    return f"{where} {message}{shown}"


def validation_line(exc, origin: str, *, fix: str = "fix that value", **how) -> str:
    """`origin: <validation_detail>: fix` (unknown and missing keys carry their own fix)."""
    detail = validation_detail(exc, **how)
    errors = exc.errors()
    known_fix = max(errors, key=lambda e: len(e.get("loc", ()))).get("type") in ("extra_forbidden", "missing")
    return f"{origin}: {detail}" + ("" if known_fix else f": {fix}")
