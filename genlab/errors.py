"""User-facing errors: a short message and a non-zero exit, never a deep traceback."""

from __future__ import annotations

import signal
from collections.abc import Callable

# the exit codes of a run stopped by a signal: 128 + the signal's number, what schedulers that requeue a job
# look for (SIGTERM), and what a shell reports for Ctrl-C (SIGINT)
SIGNAL_EXIT_CODES = {signal.SIGTERM: 143, signal.SIGINT: 130}


def with_article(noun: str) -> str:
    """``noun`` with its indefinite article, for messages: "an autoencoder", "a CLIP"."""
    return f"{'an' if noun[:1].lower() in 'aeiou' else 'a'} {noun}"


class UserError(Exception):
    """A mistake in the user's config, data or command line; the message says how to fix it."""

    exit_code = 2


class ArgumentError(UserError):
    """A constructor's argument out of what its signature declares (``genlab.config.fields.checked``).

    The message is made for a key: alone, the class and the argument ("Probes: knn_k=0 is out of range");
    the builder of a config node puts the node's full key in front (``at``:
    "callbacks.evaluator.metrics.probes.knn_k=0 ..."), so no object names its own place in the config."""

    def __init__(self, owner: str, argument: str, message: Callable[[str], str]) -> None:
        self.owner, self.argument, self.message = owner, argument, message
        super().__init__(f"{owner}: {message(argument)}.")

    def at(self, node_key: str) -> UserError:
        """The same problem under the full key of the config node that built the object."""
        return UserError(f"{self.message(f'{node_key}.{self.argument}' if node_key else self.argument)}.")


class GenlabWarning(UserWarning):
    """Something genlab skipped so that the run goes on (a picture it could not draw, a metric on NaN codes).
    The test suite turns these into failures: a picture or a metric that silently fails is a bug there."""


class StoppedEarly(SystemExit):
    """SIGTERM or SIGINT outside training and the test (while the run is being set up): nothing was trained,
    so nothing is saved; the exit code is the signal's (``SIGNAL_EXIT_CODES``)."""

    def __init__(self, signum: int) -> None:
        self.signal = signal.Signals(signum)
        self.kept: str | None = None  # the run folder, when it holds a checkpoint to resume from (genlab.train)
        super().__init__(SIGNAL_EXIT_CODES.get(self.signal, 128 + int(signum)))


def stopped_early_in(error: BaseException) -> StoppedEarly | None:
    """The StoppedEarly an error is, or was raised from: Python wraps what a signal handler raises inside some
    calls (a dataclass field's ``__set_name__`` gives a RuntimeError), and a stop must stay a stop."""
    seen: set[int] = set()
    e: BaseException | None = error
    while e is not None and id(e) not in seen:
        if isinstance(e, StoppedEarly):
            return e
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    return None


class IncompatibleError(UserError):
    """A model cannot run on a dataset (e.g. a convolutional model on 2-D points).

    ``reason`` is the sentence about the data alone, so that genlab-train can put it after
    "model=X cannot run on data=Y:"; ``who`` names the model class for other callers.
    """

    def __init__(self, reason: str, who: str | None = None) -> None:
        self.reason = reason
        super().__init__(reason if who is None else f"{who} cannot run on this data: {reason}")


class WriteFailed(UserError):
    """A file could not be written (a full disk, a quota, a read-only or forbidden folder): the message names
    the file, the reason and the space free there. A run keeps its last whole checkpoint, so ``resume=``
    continues it once the space is freed. ``advice`` is the message with what the command offers instead."""

    def __init__(self, message: str, option: str | None = None) -> None:
        super().__init__(message)
        self.option = option  # the setting that moves this file elsewhere, where it is not the command's own

    def advice(self, elsewhere: str, then: str = "") -> str:
        """The message and what to do: ``elsewhere`` names how this command writes to another place (an
        option; the error's own ``option`` wins), ``then`` what follows once space is freed."""
        return f"{self} Free some space (or write elsewhere: {self.option or elsewhere}){then}."


class MissingDataError(UserError):
    """Dataset files are not where the config says; the message names them and how to get them."""


class NonFiniteLoss(UserError):
    """Training diverged: a loss term became NaN or inf (the message names the model, term and step)."""

    exit_code = 3
