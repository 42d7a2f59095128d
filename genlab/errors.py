"""User-facing errors: a short message and a non-zero exit, never a deep traceback."""

from __future__ import annotations


class UserError(Exception):
    """A mistake in the user's config, data or command line; the message says how to fix it."""

    exit_code = 2


class IncompatibleError(UserError):
    """A model cannot run on a dataset (e.g. a convolutional model on 2-D points)."""


class MissingDataError(UserError):
    """Dataset files are not where the config says; the message names them and how to get them."""
