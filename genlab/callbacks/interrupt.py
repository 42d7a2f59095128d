"""Stopping cleanly on SIGTERM (what SLURM and most schedulers send before they kill a job) and SIGINT
(Ctrl-C): the run finishes the step it is in, writes a resumable ``last.ckpt``, records why it stopped
in ``<run>/interrupted.json`` and exits non-zero — 143 for SIGTERM (128 + 15, what schedulers that
requeue a job look for), 130 for SIGINT. A second Ctrl-C stops at once.

The stop comes where a resumed run can take up exactly what the uninterrupted one would have done:
after a training batch (the model's own batch-end bookkeeping done first), or at the end of an epoch,
after last.ckpt is written. Never after validation, whose random draws a resume would repeat. During the
test, which changes nothing a resume needs (it starts from the seed), a signal stops the run at once: its
training is in last.ckpt, and ``resume=`` runs the test again (a long evaluation, a diffusion model's
sampling, would otherwise keep a scheduler waiting).
"""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Checkpoint, ModelCheckpoint

from genlab.errors import SIGNAL_EXIT_CODES as EXIT_CODES
from genlab.files import write_json
from genlab.runfolder import RunFolder


class Interrupted(BaseException):
    """The run stopped at a signal after saving a resumable checkpoint. A BaseException, as KeyboardInterrupt:
    code that goes on after any error (a picture that could not be drawn) must not swallow a stop."""

    def __init__(self, signum: int, checkpoint: Path, epoch: int, step: int, stage: str = "train") -> None:
        self.signum, self.checkpoint, self.epoch, self.step = signum, checkpoint, epoch, step
        self.exit_code = EXIT_CODES.get(signal.Signals(signum), 128 + int(signum))
        where = f"at epoch {epoch}, global step {step}" if stage == "train" else \
            f"during the test, after training to epoch {epoch}, global step {step}"
        super().__init__(f"stopped by {signal.Signals(signum).name} {where}; resumable checkpoint {checkpoint}")


#: the test's stop once raised: Python drops an exception a signal handler raises while the interpreter runs a
#: finalizer (a weakref callback of the garbage collector: "Exception ignored in ..."), and the test would
#: run on; ``raise_pending`` raises it again at the test's next batch, metric, and before the records
PENDING: list[Interrupted] = []


def raise_pending() -> None:
    """Raise the test's stop if a signal asked for it and its first raise was lost."""
    if PENDING:
        raise PENDING.pop()


@contextmanager
def stopping_at_once_in_the_test(trainer: pl.Trainer) -> Iterator[None]:
    """The test stage's stop from the moment fit returns until the run's records are written: the checkpoint
    to test is loaded, the test run and metrics.json written under it (Lightning composes its own SIGTERM
    handler with it, and ``GracefulStop.on_test_start`` installs the same stop inside the test), so a signal at
    the test's first or last moment also ends with the documented exit code and interrupted.json."""
    handler = GracefulStop.test_handler(trainer)
    if handler is None:
        yield
        return
    previous = {signum: signal.getsignal(signum) for signum in EXIT_CODES}
    PENDING.clear()
    for signum in EXIT_CODES:
        signal.signal(signum, handler)
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)


class GracefulStop(Checkpoint):
    """Turns SIGTERM and SIGINT during fit into a stop at the next step boundary (see the module).

    A ``Checkpoint`` so that Lightning runs its epoch-end hook with the checkpoint callbacks, after
    the model's own epoch end and after last.ckpt is written."""

    def __init__(self) -> None:
        self.requested: int | None = None
        self.active = False  # during fit; Lightning may keep the handler installed after, so it checks
        self.previous: dict[int, Any] = {}

    def request(self, signum: int, frame: FrameType | None) -> None:
        if not self.active or (self.requested == signal.SIGINT and signum == signal.SIGINT):
            if signum == signal.SIGINT:
                raise KeyboardInterrupt  # outside fit, or asked twice: at once
            raise SystemExit(EXIT_CODES.get(signal.Signals(signum), 128 + signum))
        self.requested = signum

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.requested, self.active = None, True
        for signum in EXIT_CODES:
            self.previous[signum] = signal.getsignal(signum)
            signal.signal(signum, self.request)

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.requested is not None:  # after the last epoch's end: its last.ckpt is the finished fit
            self.stop(trainer, save=False)
        self.restore()

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self.restore()

    def on_test_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Lightning's own SIGTERM handler only notes the signal: a test would run on to its end."""
        handler = self.test_handler(trainer, self.restore)
        if handler is None:  # a test of a given checkpoint (train=false): nothing to resume
            return
        for signum in EXIT_CODES:
            self.previous[signum] = signal.getsignal(signum)
            signal.signal(signum, handler)

    @classmethod
    def test_handler(cls, trainer: pl.Trainer, before: Callable[[], None] = lambda: None) -> Any:
        """The handler of the test stage: record the stop in interrupted.json and raise Interrupted at once
        (``before``: restore the handlers it replaced); None when the run has no last.ckpt to resume."""
        checkpoint = cls.last_checkpoint(trainer)
        if not checkpoint.is_file():
            return None

        def stop_now(signum: int, frame: FrameType | None) -> None:
            before()
            cls.record(trainer, signum, checkpoint, "test")
            stop = Interrupted(signum, checkpoint, trainer.current_epoch, trainer.global_step, stage="test")
            PENDING[:] = [stop]  # raised again where the test goes on, should this raise be lost (below)
            raise stop

        return stop_now

    def on_test_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                          batch_idx: int, dataloader_idx: int = 0) -> None:
        raise_pending()

    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.restore()
        raise_pending()

    def restore(self) -> None:
        self.active = False
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)
        self.previous = {}

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if trainer.world_size > 1:  # every process stops at the same step, even when one alone got the signal
            if trainer.strategy.reduce_boolean_decision(self.requested is not None, all=False):
                self.requested = self.requested or signal.SIGTERM
        if self.requested is not None:
            if trainer.fit_loop.epoch_loop.batch_progress.is_last_batch:
                # Lightning resumes a checkpoint taken at the last batch's end as a finished epoch and skips
                # the epoch's end (validation, the train means, checkpoints, schedulers): stop there instead
                return
            # callbacks' batch-end hooks run before the model's: finish its bookkeeping for this batch
            # (the batch count) so the checkpoint holds the batch as done
            pl_module.on_train_batch_end(outputs, batch, batch_idx)
            self.stop(trainer)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.requested is not None:
            self.stop(trainer)

    def stop(self, trainer: pl.Trainer, save: bool = True) -> None:
        """Save last.ckpt where the run keeps it (``save=False``: unless one is there), record the stop,
        raise Interrupted."""
        path = self.last_checkpoint(trainer)
        if save or not path.is_file():
            trainer.save_checkpoint(path, weights_only=False)  # a whole, resumable one
        signum = int(self.requested or signal.SIGTERM)
        self.record(trainer, signum, path, "train")
        self.restore()
        raise Interrupted(signum, path, trainer.current_epoch, trainer.global_step)

    @staticmethod
    def last_checkpoint(trainer: pl.Trainer) -> Path:
        """Where the run keeps last.ckpt: the checkpoint callback's folder, else the run folder's."""
        folders = [Path(cb.dirpath) for cb in trainer.checkpoint_callbacks
                   if isinstance(cb, ModelCheckpoint) and cb.dirpath]
        return folders[0] / "last.ckpt" if folders else RunFolder(trainer.default_root_dir).last_checkpoint

    @staticmethod
    def record(trainer: pl.Trainer, signum: int, checkpoint: Path, stage: str) -> None:
        """<run>/interrupted.json: the signal, the stage it stopped, the epoch and step of last.ckpt."""
        if trainer.is_global_zero:
            write_json(RunFolder(trainer.default_root_dir).interrupted_file, {
                "signal": signal.Signals(signum).name, "stage": stage, "epoch": trainer.current_epoch,
                "global_step": trainer.global_step, "checkpoint": f"{checkpoint.parent.name}/{checkpoint.name}"})
