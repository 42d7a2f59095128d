"""model.updates_per_batch: several optimiser steps per loader batch, each on its next slice, under
Lightning's manual optimisation; the run of the smaller batches, update for update."""

from __future__ import annotations

import functools
import tempfile

import pytest
import pytorch_lightning as pl
import torch

from genlab.data.base import DataInfo, Split, Splits, TensorDataModule
from genlab.errors import UserError
from genlab.models.autoencoder import Autoencoder
from genlab.models.base import GenerativeModel
from genlab.models.diffusion import DDPM
from genlab.models.plumbing import split_batch
from genlab.nets.autoencoder import mlp_pair
from genlab.nets.unet import denoiser

PTS = DataInfo("pts", (3,), bounded=False)
DATA = torch.randn(80, 3, generator=torch.Generator().manual_seed(0))


def fit(model: GenerativeModel, batch_size: int, **trainer_kw: object) -> pl.Trainer:
    """3 epochs on 60 points (the loader's seeded order), no validation."""

    class Points(TensorDataModule):
        info = property(lambda self: PTS)

        def load(self) -> Splits:
            return Splits(train=Split(DATA[:60]), val=Split(DATA[60:]), test=Split(DATA[60:]))

    pl.seed_everything(0, verbose=False)
    dm = Points(batch_size=batch_size, seed=0)
    trainer = pl.Trainer(accelerator="cpu", devices=1, max_epochs=3, limit_val_batches=0, num_sanity_val_steps=0,
                         enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
                         logger=pl.loggers.CSVLogger(tempfile.mkdtemp(prefix="genlab-upb-")),
                         **{"log_every_n_steps": 1, **trainer_kw})
    trainer.fit(model, datamodule=dm)
    return trainer


def autoencoder(**kw: object) -> Autoencoder:
    torch.manual_seed(1)
    return Autoencoder(data_info=PTS, net=functools.partial(mlp_pair, hidden=[8]), latent_dim=2,
                       optimizer=functools.partial(torch.optim.Adam, lr=1e-2), **kw)


def test_two_updates_per_batch_of_20_are_the_run_of_batches_of_10() -> None:
    small, split = autoencoder(), autoencoder(updates_per_batch=2)
    t_small, t_split = fit(small, 10), fit(split, 20)
    assert small.automatic_optimization and not split.automatic_optimization
    assert t_small.global_step == t_split.global_step == 18  # global_step counts updates, not loader batches
    assert small.trained_batches == 18 and split.trained_batches == 9
    for (name, a), b in zip(small.state_dict().items(), split.state_dict().values()):
        torch.testing.assert_close(a, b, msg=name)
    for k in ("train/loss", "train/recon"):  # the epoch means take every update's terms
        torch.testing.assert_close(t_small.callback_metrics[k], t_split.callback_metrics[k], msg=k)


def test_the_step_log_holds_the_terms_of_the_batch_at_its_step() -> None:
    import csv

    class Losses(pl.Callback):  # each batch's loss, as training_step returned it
        def __init__(self) -> None:
            self.values: list[float] = []

        def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: object,
                               batch: object, batch_idx: int) -> None:
            self.values.append(float(outputs["loss"]))

    losses = Losses()
    trainer = fit(autoencoder(), 10, callbacks=[losses], log_every_n_steps=4)
    trainer.loggers[0].save()
    with open(f"{trainer.loggers[0].log_dir}/metrics.csv") as f:
        logged = [(int(r["step"]), float(r["train/loss_step"]), int(r["epoch"]))
                  for r in csv.DictReader(f) if r.get("train/loss_step")]
    # every 4th of the 18 batches (6 an epoch), at its 0-based step, as Lightning counts its own step logs
    assert [step for step, _, _ in logged] == [3, 7, 11, 15]
    assert [epoch for _, _, epoch in logged] == [0, 1, 1, 2]
    assert [value for _, value, _ in logged] == pytest.approx([losses.values[s] for s in (3, 7, 11, 15)], rel=1e-6)


def test_an_ema_follows_every_update() -> None:
    torch.manual_seed(2)
    model = DDPM(data_info=PTS, net=functools.partial(denoiser, hidden=[16], emb_dim=8), timesteps=20, ema=0.9,
                 optimizer=functools.partial(torch.optim.Adam, lr=1e-3), updates_per_batch=3)
    trainer = fit(model, 30)
    assert trainer.global_step == 18 and int(model.ema.n_averaged) == 18


def test_split_batch_cuts_every_entry_in_order() -> None:
    batch = {"x": torch.arange(10).view(5, 2), "y": torch.arange(5)}
    parts = split_batch(batch, 2)
    assert [p["y"].tolist() for p in parts] == [[0, 1, 2], [3, 4]]
    assert torch.equal(torch.cat([p["x"] for p in parts]), batch["x"])
    assert split_batch(batch, 1) == [batch]


@pytest.mark.parametrize("trainer_kw,model_kw,match", [
    ({"gradient_clip_val": 1.0}, {}, "gradient clipping"),
    ({"accumulate_grad_batches": 2}, {}, "gradient accumulation"),
    ({}, {"scheduler": functools.partial(torch.optim.lr_scheduler.StepLR, step_size=1)}, "scheduler"),
])
def test_runs_that_need_lightnings_loop_are_refused(trainer_kw: dict, model_kw: dict, match: str) -> None:
    with pytest.raises(UserError, match=f"updates_per_batch=2 needs genlab's own update loop.*{match}"):
        fit(autoencoder(updates_per_batch=2, **model_kw), 20, **trainer_kw)
    with pytest.raises(UserError, match="must be >= 1"):
        autoencoder(updates_per_batch=0)
