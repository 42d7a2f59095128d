"""The stop at SIGTERM and Ctrl-C outside fit and the test, from a command's first moment: a run stopped
before training ends with the documented exit code (143, 130) and no half-made run folder, rather than being
killed by the signal.

Three phases: while modules load and Hydra composes, a signal stops at once (no folder exists yet); while
Hydra makes the run folder and hands over to the recipe, a signal is noted (``defer_signals``) and raised as
the recipe starts (``raise_deferred``), where the folder is known and can be removed; in the recipe it stops at
once again, until ``GracefulStop`` takes over for fit and the test. Light to import (the standard library and
genlab.errors): the command installs it before Hydra, torch and Lightning, which take seconds.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Callable

from genlab.errors import SIGNAL_EXIT_CODES, StoppedEarly, stopped_early_in

_deferred: list[int] | None = None  # signals noted while Hydra sets the run up; None: raise at once


def stop_early(signum: int, frame: object) -> None:
    """The handler outside fit and the test."""
    if _deferred is not None:
        _deferred.append(signum)
        return
    raise StoppedEarly(signum)


def defer_signals() -> None:
    global _deferred
    _deferred = []


def raise_deferred() -> None:
    """The recipe has started: a signal noted since ``defer_signals`` stops it now; later ones at once."""
    global _deferred
    pending, _deferred = _deferred, None
    if pending:
        raise StoppedEarly(pending[0])


def stoppable(command: str, main: Callable[[], None]) -> None:
    """Run ``main`` with the stop installed; a stop ends the process with the signal's exit code and one line
    saying what was kept (``StoppedEarly.kept``: a run folder to resume)."""
    for signum in SIGNAL_EXIT_CODES:  # GracefulStop takes over during fit and the test, and gives these back
        signal.signal(signum, stop_early)
    try:
        main()
        # done: a signal now has nothing to stop, and while Python shuts down it would interrupt the exit
        # functions or, once Python has reset its handlers, kill the finished process; ignored, it exits 0
        for signum in SIGNAL_EXIT_CODES:
            signal.signal(signum, signal.SIG_IGN)
    except BaseException as error:
        e = stopped_early_in(error)
        if e is None:
            raise
        print(f"{command}: stopped by {e.signal.name}; "
              + (f"continue it with: {command} resume={e.kept}" if e.kept else "nothing was trained, no run kept"),
              file=sys.stderr)
        raise SystemExit(e.code) from None
