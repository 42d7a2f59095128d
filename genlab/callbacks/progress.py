"""The progress bar of a run: Lightning's rich bar, redrawn at most ten times a second in training.

Lightning's bar moves the task, gathers the logged metrics and refreshes the display after every
training batch, a noticeable share of a small model's step on a CPU (docs/speed.md). A person reads a
bar a few times a second, so a batch that ends within
``interval`` seconds of the last redraw leaves it as it is; the last batch of an epoch always redraws,
so every epoch ends on its full count. Validation and test bars are Lightning's own (a few large batches).
"""

from __future__ import annotations

import time
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import RichProgressBar


class ThrottledProgressBar(RichProgressBar):
    """``RichProgressBar`` whose training bar is redrawn at most every ``interval`` seconds (see the module)."""

    def __init__(self, interval: float = 0.1, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.interval = interval
        self.drawn = -float("inf")  # time.monotonic() of the last redraw
        self.skipped = 0  # training batches that left the bar as it was (the tests read it)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        now = time.monotonic()
        last = batch_idx + 1 >= self.total_train_batches  # inf for a loader without a length: never "last"
        if now - self.drawn < self.interval and not last:
            self.skipped += 1
            return
        self.drawn = now
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
