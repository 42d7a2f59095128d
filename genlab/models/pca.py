"""PCA as the linear autoencoder, fitted in closed form from the SVD (no gradient descent):
h = V_hᵀ(x − μ), x̂ = V_h h + μ, with V_h the top principal directions."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from genlab.capabilities import CanDecode, CanEncode, CanReconstruct
from genlab.data.base import Batch, DataInfo
from genlab.errors import UserError
from genlab.models.base import GenerativeModel


# ---- PCA as functions on tensors (also the baseline of every code: genlab.metrics.reconstruction) ----
@dataclass
class PCAFit:
    """A fitted PCA: h = Vᵀ(x − mean), x̂ = V h + mean."""

    mean: Tensor  # (D,)
    components: Tensor  # V (D, k), orthonormal columns, by decreasing variance
    explained_variance: Tensor  # (k,) eigenvalues of the sample covariance (divisor N − 1)

    @property
    def k(self) -> int:
        return self.components.shape[1]


def fit_pca(x: Tensor, k: int) -> PCAFit:
    """Fit PCA with k components to x (N, D) (extra dims are flattened).

    SVD of the centred data in float64: float32 loses digits in the small singular
    values, which are exactly what the reconstruction error is made of.
    """
    x64 = x.reshape(x.shape[0], -1).to(torch.float64)
    n, dim = x64.shape
    k = max(0, min(k, dim, n))
    mean = x64.mean(dim=0)
    _, s, vh = torch.linalg.svd(x64 - mean, full_matrices=False)  # s (min(N, D),), vh (min(N, D), D)
    var = s[:k] ** 2 / max(n - 1, 1)
    return PCAFit(mean.float(), vh[:k].T.contiguous().float(), var.float())


def pca_encode(fit: PCAFit, x: Tensor) -> Tensor:
    """x (N, *shape) -> codes h (N, k)."""
    flat = x.reshape(x.shape[0], -1).to(fit.mean)
    return (flat - fit.mean) @ fit.components


def pca_decode(fit: PCAFit, h: Tensor, shape: tuple[int, ...] | None = None) -> Tensor:
    """codes h (N, k) -> x̂ (N, D), or (N, *shape) when shape is given."""
    x_hat = h.to(fit.mean) @ fit.components.T + fit.mean
    return x_hat if shape is None else x_hat.reshape(h.shape[0], *shape)


def pca_reconstruct(fit: PCAFit, x: Tensor) -> Tensor:
    """x (N, *shape) -> its projection onto the PCA subspace, same shape."""
    return pca_decode(fit, pca_encode(fit, x), tuple(x.shape[1:]))



class PCA(GenerativeModel):
    """Closed-form linear autoencoder; ``fit`` runs once when training starts."""

    capabilities = frozenset({CanEncode, CanDecode, CanReconstruct})

    data_parallel_refusal = ("it is fitted in closed form on the whole training set and has no weights to train "
                             "in parallel; run it in one process (trainer=cpu or trainer=gpu)")

    def __init__(self, *, data_info: DataInfo, latent_dim: int = 32, whiten: bool = False) -> None:
        super().__init__(data_info=data_info)
        d = data_info.dim
        if latent_dim > d:
            raise UserError(f"model.latent_dim={latent_dim} exceeds the data dimension {d} of '{data_info.name}': "
                            f"set model.latent_dim={d} or less")
        self.latent_dim, self.whiten = latent_dim, whiten
        self.automatic_optimization = False  # nothing to optimise
        self.register_buffer("mean", torch.zeros(d))
        self.register_buffer("components", torch.zeros(d, latent_dim))  # V_h (D, k)
        self.register_buffer("scale", torch.ones(latent_dim))  # √eigenvalue when whitening

    def fit(self, x: Tensor) -> None:
        """x (N, *shape) -> fills mean, components (and scale)."""
        result = fit_pca(x.flatten(1), self.latent_dim)
        self.mean.copy_(result.mean)
        self.components.copy_(result.components)
        if self.whiten:
            self.scale.copy_(result.explained_variance.clamp_min(1e-12).sqrt())

    def setup(self, stage: str) -> None:
        if stage == "fit":  # the datamodule is set up before the model
            self.fit(self.trainer.datamodule.tensors("train").x.to(self.mean.device))

    def encode(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        return (x.flatten(1) - self.mean) @ self.components / self.scale  # (B, k)

    def decode(self, h: Tensor, y: Tensor | None = None) -> Tensor:
        return ((h * self.scale) @ self.components.T + self.mean).view(-1, *self.data_info.shape)

    def reconstruct(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        return self.decode(self.encode(x))

    def loss_terms(self, batch: Batch, stage: str) -> dict[str, Tensor]:
        x = batch["x"]
        err = (self.reconstruct(x) - x).pow(2).flatten(1).sum(1).mean()
        return {"loss": 0.5 * err}

    def training_step(self, batch: Batch, batch_idx: int) -> None:
        self.step(batch, "train")  # logged only: the fit is already done

    def on_train_epoch_end(self) -> None:
        super().on_train_epoch_end()
        self.trainer.should_stop = True  # one pass is enough

    def configure_optimizers(self) -> Any:
        return None
