"""The run's progress bar: Lightning's rich bar, redrawn at most every ``interval`` seconds in training."""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ProgressBar, TQDMProgressBar
from torch.utils.data import DataLoader, TensorDataset

from genlab.callbacks.progress import ThrottledProgressBar
from genlab.run import make_trainer


class Line(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Linear(3, 1)

    def training_step(self, batch: list[torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self.w(batch[0]).pow(2).mean()

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.01)


def fit(bar: ThrottledProgressBar, epochs: int = 2, batches: int = 5) -> pl.Trainer:
    data = DataLoader(TensorDataset(torch.randn(batches * 4, 3)), batch_size=4)
    trainer = pl.Trainer(max_epochs=epochs, callbacks=[bar], logger=False, enable_checkpointing=False,
                         enable_model_summary=False, accelerator="cpu")
    trainer.fit(Line(), data)
    return trainer


@pytest.mark.parametrize(("interval", "skipped"), [(1e9, 3 + 4), (0.0, 0)])
def test_the_bar_skips_redraws_within_the_interval_and_ends_every_epoch_on_its_full_count(
        interval: float, skipped: int) -> None:
    bar = ThrottledProgressBar(interval=interval)
    fit(bar)
    # an interval longer than the run: the run's first batch and each epoch's last redraw, no other (2 epochs
    # of 5 batches: 3 skipped in the first, 4 in the second)
    assert bar.skipped == skipped
    assert bar.train_progress_bar.completed == 5  # the bar ends on the full count of the last epoch


def test_runs_get_the_throttled_bar_unless_it_is_off_or_the_config_brings_one(make_cfg) -> None:
    class Model:  # what make_trainer asks of a model
        ranks_checkpoints = True

        def steps_leave_parameters_unused(self) -> bool:
            return False

    def bars(*overrides: str) -> list[ProgressBar]:
        cfg = make_cfg("model=ae", "data=digits", "logger=csv", *overrides)
        trainer = make_trainer(cfg, Model(), [])
        return [c for c in trainer.callbacks if isinstance(c, ProgressBar)]

    assert [type(b) for b in bars()] == [ThrottledProgressBar]
    assert bars("trainer.enable_progress_bar=false") == []
    own = bars("+callbacks.bar._target_=pytorch_lightning.callbacks.TQDMProgressBar")
    assert [type(b) for b in own] == [TQDMProgressBar]
