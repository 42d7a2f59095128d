"""User-facing errors: a short message and a non-zero exit, never a deep traceback."""

from __future__ import annotations


class UserError(Exception):
    """A mistake in the user's config, data or command line; the message says how to fix it."""

    exit_code = 2


class GenlabWarning(UserWarning):
    """Something genlab skipped so that the run goes on (a picture it could not draw, a metric on NaN codes).
    The test suite turns these into failures: a picture or a metric that silently fails is a bug there."""


class IncompatibleError(UserError):
    """A model cannot run on a dataset (e.g. a convolutional model on 2-D points).

    ``reason`` is the sentence about the data alone, so that genlab-train can put it after
    "model=X cannot run on data=Y:"; ``who`` names the model class for other callers.
    """

    def __init__(self, reason: str, who: str | None = None) -> None:
        self.reason = reason
        super().__init__(reason if who is None else f"{who} cannot run on this data: {reason}")


class MissingDataError(UserError):
    """Dataset files are not where the config says; the message names them and how to get them."""


class NonFiniteLoss(UserError):
    """Training diverged: a loss term became NaN or inf (the message names the model, term and step)."""

    exit_code = 3
