"""Errors a user can cause. Each message names the bad value and the fix, on one line."""

from __future__ import annotations


class EdgeNLPError(Exception):
    """Base class: the CLI prints the message and exits with code 2."""


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


class InputError(EdgeNLPError):
    """A request the model cannot serve: an empty prompt, one longer than its context, a bad count."""
