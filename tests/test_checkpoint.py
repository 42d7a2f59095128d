"""Checkpoints through the stock ModelCheckpoint entries of conf/callbacks/model_checkpoint.yaml:
last.ckpt follows training every epoch, the best epoch is tested, and models whose val/loss cannot
rank checkpoints (declared ranks_checkpoints = False) test their latest epoch."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from conftest import CONF, FAST, TINY
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from genlab.run import build, checkpoint_to_test
from genlab.train import train


class Worsening(pl.LightningModule):
    """val/loss = 1, 2, 3, ... by epoch: the first epoch stays the best."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.Linear(2, 1)

    def training_step(self, batch, batch_idx):
        return self.layer(batch[0]).pow(2).mean()

    def validation_step(self, batch, batch_idx):
        self.log("val/loss", float(self.current_epoch + 1))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def configured_checkpoints(folder: Path) -> list[pl.Callback]:
    """The callbacks exactly as conf/callbacks/model_checkpoint.yaml makes them."""
    node = OmegaConf.load(CONF / "callbacks" / "model_checkpoint.yaml")
    node = OmegaConf.merge({"paths": {"output_dir": str(folder)}}, node)
    return [instantiate(node[k]) for k in node if k != "paths"]


def _fit(folder: Path, epochs: int = 3, validate: bool = True, every: int = 1) -> pl.Trainer:
    data = DataLoader(TensorDataset(torch.randn(8, 2)), batch_size=4)
    trainer = pl.Trainer(
        max_epochs=epochs, callbacks=configured_checkpoints(folder), logger=False, enable_progress_bar=False,
        enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=1.0 if validate else 0,
        check_val_every_n_epoch=every,
    )
    trainer.fit(Worsening(), train_dataloaders=data, val_dataloaders=data if validate else None)
    return trainer


def _epoch(path: str | Path) -> int:
    return torch.load(path, weights_only=True)["epoch"]


@pytest.mark.parametrize(("validate", "every"), [(True, 1), (False, 1), (True, 2)])
def test_last_checkpoint_follows_every_epoch_and_the_best_is_tested(tmp_path: Path, validate: bool,
                                                                     every: int) -> None:
    trainer = _fit(tmp_path, validate=validate, every=every)
    assert _epoch(tmp_path / "checkpoints" / "last.ckpt") == 2  # also between validations (every = 2)
    tested = checkpoint_to_test(trainer)
    if validate:  # the monitored val/loss ranks the first validated epoch first
        assert Path(tested).name == f"epoch_{every - 1:03d}.ckpt" and _epoch(tested) == every - 1
    else:  # nothing to rank by: the newest checkpoint
        assert Path(tested).name == "last.ckpt"


def test_models_that_cannot_rank_checkpoints_test_their_latest_epoch(make_cfg) -> None:
    cfg = make_cfg("model=gan", "data=toy2d", *TINY["toy2d"], *FAST, "trainer.max_epochs=2")
    train(cfg)
    out = Path(cfg.paths.output_dir)
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["last.ckpt"]  # no "best" by val/loss
    tested = out / json.loads((out / "metrics.json").read_text())["best_checkpoint"]
    assert tested == out / "checkpoints" / "last.ckpt" and _epoch(tested) == 1


def test_a_model_fitted_in_closed_form_still_gets_its_checkpoint(make_cfg) -> None:
    cfg = make_cfg("model=pca", "data=digits", *TINY["digits"], *FAST)
    train(cfg)  # PCA takes no optimiser step, after which Lightning's callbacks would save
    tested = Path(cfg.paths.output_dir) / json.loads((Path(cfg.paths.output_dir) / "metrics.json").read_text())[
        "best_checkpoint"]
    state = torch.load(tested, weights_only=True)["state_dict"]
    assert Path(tested).name == "last.ckpt" and state["components"].abs().sum() > 0  # the fitted PCA


def test_every_adversarial_model_declares_it() -> None:
    from genlab.models.autoencoder import Autoencoder
    from genlab.models.cyclegan import CycleGAN
    from genlab.models.gan import CGAN, GAN
    from genlab.models.infogan import InfoGAN
    from genlab.models.toy_gan import ToyGAN
    from genlab.models.vae import VAE
    from genlab.models.wgan_gp import WGANGP

    assert not any(m.ranks_checkpoints for m in (GAN, CGAN, InfoGAN, WGANGP, CycleGAN, ToyGAN))
    assert VAE.ranks_checkpoints and Autoencoder.ranks_checkpoints


def test_a_failed_write_leaves_the_old_file_whole_and_no_temporary_file(tmp_path: Path) -> None:
    import errno

    from genlab.checkpoints import AtomicCheckpointIO
    from genlab.files import write_atomically, write_json

    target = tmp_path / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint({"state_dict": {"w": torch.ones(3)}}, target)

    def disk_full(f) -> None:
        f.write(b"half a checkpoint")
        raise OSError(errno.ENOSPC, "No space left on device")

    from genlab.errors import WriteFailed

    with pytest.raises(WriteFailed, match="last.ckpt could not be written: No space left on device"):
        write_atomically(target, disk_full)
    assert torch.equal(AtomicCheckpointIO().load_checkpoint(target)["state_dict"]["w"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]  # the temporary file is gone
    write_json(tmp_path / "metrics.json", {"test/loss": float("nan"), "x": [float("inf"), 1.0]})
    assert json.loads((tmp_path / "metrics.json").read_text()) == {"test/loss": None, "x": [None, 1.0]}


def test_the_trainer_writes_checkpoints_through_the_atomic_io(make_cfg) -> None:
    from genlab.checkpoints import AtomicCheckpointIO
    from genlab.run import make_trainer, new_model

    cfg = make_cfg("model=ae", "data=digits", *TINY["digits"], *FAST)
    model = new_model(cfg, build(cfg.data).info)
    trainer = make_trainer(cfg, model, [])
    assert isinstance(trainer.strategy.checkpoint_io, AtomicCheckpointIO)
