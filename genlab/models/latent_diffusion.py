"""Latent diffusion (Rombach et al. 2022): a DDPM over the standardised codes of a finished autoencoder or
VAE run (latent_ddpm), whose frozen decoder turns the sampled codes into images."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor

from genlab.capabilities import Budget, CanDecode, CanEncode, FrozenRun, LikelihoodBound
from genlab.data.base import DataInfo, TensorDataModule
from genlab.errors import UserError
from genlab.models.base import GenerativeModel
from genlab.models.diffusion import DDPM


class LatentDDPM(DDPM):
    """Latent diffusion (Rombach et al. 2022) over the codes of a finished autoencoder or VAE run
    (``autoencoder``: its tested model, frozen; the config gives the run's folder and the recipe loads it):
    the codes of the training images are standardised per dimension (their mean and standard deviation,
    computed when training starts and kept in checkpoints) and diffused with the MLP denoiser; samples are
    decoded by the run's decoder. It reports no likelihood bound: a deterministic decoder gives the codes'
    density no density over images."""

    frozen_runs: ClassVar[dict[str, FrozenRun]] = {
        "autoencoder": FrozenRun("autoencoder or VAE", can=(CanEncode, CanDecode), unconditional=True,
                                 how="genlab-train model=ae, conv_ae, vae, ...")}

    def __init__(self, *, autoencoder: GenerativeModel, data_info: DataInfo, **kwargs: Any) -> None:
        self.code_dim = int(autoencoder.latent_dim or autoencoder.encode(torch.zeros(1, *data_info.shape)).shape[1])
        super().__init__(data_info=data_info, **kwargs)
        self.autoencoder = autoencoder.requires_grad_(False).eval()
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

