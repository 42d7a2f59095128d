"""genlab.checkpoint.Checkpoint: last.ckpt follows training; GANs keep their latest epoch."""

from __future__ import annotations

from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from genlab.checkpoint import Checkpoint


class Worsening(pl.LightningModule):
    """val/loss = 1, 2, 3, ... by epoch: the first epoch stays the best."""

    def __init__(self, ranks: bool = True) -> None:
        super().__init__()
        self.layer = nn.Linear(2, 1)
        self.ranks_checkpoints = ranks

    def training_step(self, batch, batch_idx):
        return self.layer(batch[0]).pow(2).mean()

    def validation_step(self, batch, batch_idx):
        self.log("val/loss", float(self.current_epoch + 1))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _fit(tmp_path: Path, module: pl.LightningModule, epochs: int = 3, validate: bool = True) -> Checkpoint:
    data = DataLoader(TensorDataset(torch.randn(8, 2)), batch_size=4)
    ckpt = Checkpoint(dirpath=tmp_path, filename="epoch_{epoch:03d}", monitor="val/loss", save_last=True,
                      auto_insert_metric_name=False)
    trainer = pl.Trainer(
        max_epochs=epochs, callbacks=[ckpt], logger=False, enable_progress_bar=False, enable_model_summary=False,
        num_sanity_val_steps=0, limit_val_batches=1.0 if validate else 0,
    )
    trainer.fit(module, train_dataloaders=data, val_dataloaders=data if validate else None)
    return ckpt


def _epoch(path: str | Path) -> int:
    return torch.load(path, weights_only=False)["epoch"]


@pytest.mark.parametrize("validate", [True, False])
def test_last_checkpoint_is_the_last_epoch_when_the_metric_does_not_improve(tmp_path: Path, validate: bool) -> None:
    ckpt = _fit(tmp_path, Worsening(), validate=validate)
    assert _epoch(tmp_path / "last.ckpt") == 2  # Lightning's own callback leaves it at epoch 0 here
    if validate:
        assert Path(ckpt.best_model_path).name == "epoch_000.ckpt"


def test_models_that_cannot_rank_checkpoints_keep_the_latest(tmp_path: Path) -> None:
    ckpt = _fit(tmp_path, Worsening(ranks=False))
    assert ckpt.monitor is None
    assert Path(ckpt.best_model_path).name == "epoch_002.ckpt"
    assert sorted(p.name for p in tmp_path.glob("*.ckpt")) == ["epoch_002.ckpt", "last.ckpt"]
    assert _epoch(tmp_path / "last.ckpt") == 2


def test_every_gan_family_model_declares_it() -> None:
    from genlab.models.autoencoder import Autoencoder
    from genlab.models.cyclegan import CycleGAN
    from genlab.models.gan import CGAN, GAN
    from genlab.models.infogan import InfoGAN
    from genlab.models.toy_gan import ToyGAN
    from genlab.models.vae import VAE
    from genlab.models.wgan_gp import WGANGP

    assert not any(m.ranks_checkpoints for m in (GAN, CGAN, InfoGAN, WGANGP, CycleGAN, ToyGAN))
    assert VAE.ranks_checkpoints and Autoencoder.ranks_checkpoints
