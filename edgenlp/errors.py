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
