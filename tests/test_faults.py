"""Faults a user meets that are not bad options: a diverged state the loss never shows, stale temporary files
of a checkpoint write, an edited run folder."""

from __future__ import annotations

import functools
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from conftest import run_cli

from genlab.data.base import DataInfo
from genlab.errors import NonFiniteLoss


def tiny_simclr() -> pl.LightningModule:
    from genlab.data.augment import Disturbances
    from genlab.models.contrastive import SimCLR
    from genlab.nets.autoencoder import mlp_pair

    return SimCLR(data_info=DataInfo("tiny", (1, 8, 8)), net=functools.partial(mlp_pair, hidden=[16]),
                  rep_dim=4, proj_hidden=8, proj_dim=4, views=Disturbances(),
                  optimizer=functools.partial(torch.optim.Adam, lr=1e-3))


def test_a_state_with_nan_or_inf_is_never_saved(tmp_path: Path) -> None:
    """The loss check sees the loss terms only; a batch-norm statistic (here the projection head's running
    variance) can turn inf while every loss stays finite. Saving such a state is refused before the file is
    written, naming the tensor."""
    model = tiny_simclr()
    trainer = pl.Trainer(max_epochs=0, logger=False, enable_progress_bar=False, enable_model_summary=False,
                         default_root_dir=tmp_path)
    trainer.strategy.connect(model)
    trainer.save_checkpoint(tmp_path / "good.ckpt")  # a finite state is saved
    assert (tmp_path / "good.ckpt").is_file()
    name, buffer = next((k, v) for k, v in model.state_dict().items() if k.endswith("running_var"))
    buffer[3] = float("inf")
    with pytest.raises(NonFiniteLoss, match=rf"saved state '{name}' is not finite \(\d+% of its \d+ values"):
        trainer.save_checkpoint(tmp_path / "bad.ckpt")
    assert not (tmp_path / "bad.ckpt").exists()


def test_a_run_whose_batch_norm_statistics_diverge_fails_and_leaves_no_folder(tmp_path: Path) -> None:
    """SimCLR at a learning rate of 1e6 keeps a finite loss while a running variance becomes inf: exit 3 (a
    diverged run), the tensor named, and no checkpoint, metrics or folder left behind."""
    done = run_cli("model=simclr", "model.optimizer.lr=1e6", "data=digits", "data.max_train=256",
                   "data.batch_size=64", "trainer.max_epochs=2", "trainer.enable_progress_bar=false", "logger=csv",
                   f"paths.log_dir={tmp_path}")
    assert done.returncode == 3, done.stderr[-2000:]
    assert "saved state 'head." in done.stderr and "running_var' is not finite" in done.stderr
    assert "Traceback" not in done.stderr
    assert not list(tmp_path.glob("train/runs/*"))
