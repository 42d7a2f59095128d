"""Latent diffusion (Rombach et al. 2022): a DDPM over the standardised codes of a finished autoencoder or
VAE run (latent_ddpm), whose frozen decoder turns the sampled codes into images."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from genlab.capabilities import Budget, CanDecode, CanEncode, LikelihoodBound, capable
from genlab.data.base import DataInfo, TensorDataModule
from genlab.errors import UserError
from genlab.models.base import GenerativeModel
from genlab.models.diffusion import DDPM
from genlab.run import load_finished_run


class LatentDDPM(DDPM):
    """Latent diffusion (Rombach et al. 2022) over the codes of a finished autoencoder or VAE run
    (``autoencoder``: its folder; the tested checkpoint is loaded, frozen): the codes of the training
    images are standardised per dimension (their mean and standard deviation, computed when training
    starts and kept in checkpoints) and diffused with the MLP denoiser; samples are decoded by the run's
    decoder. It reports no likelihood bound: a deterministic decoder gives the codes' density no
    density over images."""

    def __init__(self, *, autoencoder: str, data_info: DataInfo, **kwargs: Any) -> None:
        ae = load_autoencoder(autoencoder)
        if tuple(ae.data_info.shape) != tuple(data_info.shape):
            raise UserError(f"model.autoencoder={autoencoder} was trained on samples of shape "
                            f"{tuple(ae.data_info.shape)}, but this data has {tuple(data_info.shape)}: "
                            f"train on the run's data ({ae.data_info.name}).")
        self.code_dim = int(ae.latent_dim or ae.encode(torch.zeros(1, *data_info.shape)).shape[1])
        super().__init__(data_info=data_info, **kwargs)
        self.autoencoder = ae.requires_grad_(False).eval()
        self.register_buffer("code_mean", torch.zeros(self.code_dim))
        self.register_buffer("code_std", torch.ones(self.code_dim))
        self.register_buffer("code_stats_ready", torch.tensor(False))

    @property
    def image_space(self) -> bool:
        return False

    def space_shape(self) -> tuple[int, ...]:
        return (self.code_dim,)

    def train(self, mode: bool = True) -> LatentDDPM:
        super().train(mode)
        self.autoencoder.eval()  # frozen: its dropout and batch norm stay in evaluation mode
        return self

    def on_fit_start(self) -> None:
        if bool(self.code_stats_ready):
            return
        dm = self.trainer.datamodule
        if not isinstance(dm, TensorDataModule):
            raise UserError("model=latent_ddpm needs one of genlab's datasets (a TensorDataModule) to standardise "
                            "the codes")
        self.fit_code_stats(dm.tensors("train").x, dm.options.eval_batch_size)

    @torch.no_grad()
    def fit_code_stats(self, x: Tensor, batch_size: int = 256) -> None:
        """The per-dimension mean and standard deviation of the codes of x (N, *shape)."""
        codes = torch.cat([self.encode_raw(x[i:i + batch_size].to(self.device)) for i in range(0, len(x), batch_size)])
        self.code_mean.copy_(codes.mean(0))
        self.code_std.copy_(codes.std(0).clamp_min(1e-6) if len(codes) > 1 else torch.ones_like(codes[0]))
        self.code_stats_ready.fill_(True)

    @torch.no_grad()
    def encode_raw(self, x: Tensor) -> Tensor:
        return self.autoencoder.encode(x).flatten(1).float()

    def to_space(self, x: Tensor) -> Tensor:
        return (self.encode_raw(x) - self.code_mean) / self.code_std

    def from_space(self, z: Tensor) -> Tensor:
        out = self.autoencoder.decode(z * self.code_std + self.code_mean)
        return out.clamp(0, 1) if self.data_info.bounded else out

    def likelihood_bounds(self, budget: Budget) -> list[LikelihoodBound]:
        return []


def load_autoencoder(run_dir: str | Path) -> GenerativeModel:
    """The frozen autoencoder of LatentDDPM: a finished run's model that encodes and decodes."""
    model = load_finished_run(run_dir, "model.autoencoder", "autoencoder or VAE")
    check_autoencoder(model, str(run_dir))
    return model


def check_autoencoder(model: GenerativeModel, where: str) -> None:
    """UserError unless ``model`` encodes and decodes (without labels) to a flat code."""
    if not (capable(model, CanEncode) and capable(model, CanDecode)):
        raise UserError(f"model.autoencoder={where} holds a {type(model).__name__}, which cannot both encode and "
                        "decode: give the folder of an autoencoder or VAE run (model=ae, conv_ae, vae, ...).")
    if model.conditional:
        raise UserError(f"model.autoencoder={where} holds a conditional {type(model).__name__}, whose codes depend "
                        "on the class: give an unconditional autoencoder or VAE run.")
