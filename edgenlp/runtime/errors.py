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
