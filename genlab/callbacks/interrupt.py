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
from pathlib import Path
from types import FrameType
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Checkpoint, ModelCheckpoint

from genlab.errors import SIGNAL_EXIT_CODES as EXIT_CODES
from genlab.files import write_json
from genlab.runfolder import RunFolder


class Interrupted(Exception):
    """The run stopped at a signal after saving a resumable checkpoint."""

    def __init__(self, signum: int, checkpoint: Path, epoch: int, step: int, stage: str = "train") -> None:
        self.signum, self.checkpoint, self.epoch, self.step = signum, checkpoint, epoch, step
        self.exit_code = EXIT_CODES.get(signal.Signals(signum), 128 + int(signum))
        where = f"at epoch {epoch}, global step {step}" if stage == "train" else \
            f"during the test, after training to epoch {epoch}, global step {step}"
        super().__init__(f"stopped by {signal.Signals(signum).name} {where}; resumable checkpoint {checkpoint}")


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
        checkpoint = self.last_checkpoint(trainer)
        if not checkpoint.is_file():  # a test of a given checkpoint (train=false): nothing to resume
            return

        def stop_now(signum: int, frame: FrameType | None) -> None:
            self.restore()
            self.record(trainer, signum, checkpoint, "test")
            raise Interrupted(signum, checkpoint, trainer.current_epoch, trainer.global_step, stage="test")

        for signum in EXIT_CODES:
            self.previous[signum] = signal.getsignal(signum)
            signal.signal(signum, stop_now)

    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.restore()

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
