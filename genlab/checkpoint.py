"""The run's checkpoint callback: Lightning's ModelCheckpoint with two corrections.

1. ``last.ckpt`` is written at every save point (each epoch's validation, or each training
   epoch's end without validation). Lightning 2.6 rewrites it only when a top-k checkpoint is
   saved in the same step, so it fell behind, silently, whenever the monitored metric did not
   improve: a resumed run would lose those epochs.
2. Models whose validation loss cannot rank checkpoints (``ranks_checkpoints = False``: the
   GANs, whose val/loss is a divergence estimate by the current discriminator, lowest in the
   first epochs when D is still weak) keep the latest epoch instead of the "best" one, so the
   test after training and ``best_checkpoint`` in metrics.json are the trained model's.
"""

from __future__ import annotations

import logging

import pytorch_lightning as pl
from pytorch_lightning.callbacks import ModelCheckpoint

log = logging.getLogger("genlab")


class Checkpoint(ModelCheckpoint):
    """ModelCheckpoint with an up-to-date last.ckpt and no ranking by a meaningless metric."""

    _last_saved_step = -1

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        if stage == "fit" and self.monitor is not None and not getattr(pl_module, "ranks_checkpoints", True):
            log.info(
                "%s: %s does not rank checkpoints; keeping the latest epoch's (the one tested)",
                type(pl_module).__name__, self.monitor,
            )
            self.monitor = None  # save_top_k=1 then keeps the newest checkpoint

    def _save_last_checkpoint(self, trainer: pl.Trainer, monitor_candidates: dict) -> None:
        super()._save_last_checkpoint(trainer, monitor_candidates)
        self._last_saved_step = trainer.global_step

    def _refresh_last(self, trainer: pl.Trainer) -> None:
        if self.save_last and not self._should_skip_saving_checkpoint(trainer):
            if self._last_saved_step != trainer.global_step:
                self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        if self._should_save_on_train_epoch_end(trainer):
            self._refresh_last(trainer)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_validation_end(trainer, pl_module)
        if not self._should_save_on_train_epoch_end(trainer):
            self._refresh_last(trainer)
