"""The autoencoder family of the lectures: x̂ = g_d(g_e(x)), plus denoising, sparse and
contractive variants that each add one idea (a corruption or a penalty term) to the base."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from genlab.capabilities import CanDecode, CanEncode, CanReconstruct
from genlab.data.base import Batch, DataInfo
from genlab.errors import UserError
from genlab.models.base import GenerativeModel, OptimizerFactory
from genlab.nets.autoencoder import EncoderDecoder
from genlab.nets.layers import activation

NetFactory = Callable[..., EncoderDecoder]  # a genlab.nets.autoencoder builder


def resolve_likelihood(likelihood: str, info: DataInfo) -> str:
    """``auto`` -> bernoulli (BCE) for data in [0, 1], gaussian (squared error) otherwise."""
    if likelihood == "auto":
        return "bernoulli" if info.bounded else "gaussian"
    if likelihood == "bernoulli" and not info.bounded:
        raise UserError(f"likelihood=bernoulli needs data in [0, 1]; '{info.name}' holds unbounded points.")
    return likelihood


def recon_nll(raw: Tensor, x: Tensor, likelihood: str) -> Tensor:
    """Reconstruction loss per sample (B,), summed over dimensions.

    bernoulli: raw are logits, loss is BCE (nats); gaussian: raw are values, loss is ½‖x − x̂‖²
    (the negative log-likelihood of a unit-variance Gaussian up to a constant).
    """
    if likelihood == "bernoulli":
        per = F.binary_cross_entropy_with_logits(raw, x, reduction="none")
    else:
        per = 0.5 * (raw - x).pow(2)
    return per.flatten(1).sum(1)


class CodeModel(GenerativeModel):
    """The base of the autoencoder and VAE families: an encoder/decoder pair from a
    ``genlab.nets.autoencoder`` builder, a code of ``latent_dim`` numbers, and the likelihood
    p(x|h) the decoder's raw output parameterises (bernoulli logits or gaussian means)."""

    def __init__(
        self, *, data_info: DataInfo, net: NetFactory, latent_dim: int, likelihood: str = "auto",
        optimizer: OptimizerFactory | None = None, scheduler: Callable[..., Any] | None = None, compile: bool = False,
        updates_per_batch: int = 1,
    ) -> None:
        super().__init__(data_info=data_info, optimizer=optimizer, scheduler=scheduler, builders=[net], compile=compile,
                         updates_per_batch=updates_per_batch)
        self.latent_dim = latent_dim
        self.likelihood = resolve_likelihood(likelihood, data_info)

    def data_mean(self, raw: Tensor) -> Tensor:
        """The decoder's raw output (B, *shape) -> the mean of p(x|h) in data space."""
        return torch.sigmoid(raw) if self.likelihood == "bernoulli" else raw


class Autoencoder(CodeModel):
    """Deterministic autoencoder; the encoder/decoder networks come from ``net``."""

    capabilities = frozenset({CanEncode, CanDecode, CanReconstruct})

    val_loss_means = "the reconstruction error of clean inputs (plus the model's penalties)"

    def __init__(self, *, net: NetFactory, latent_dim: int = 32, code_activation: str = "none", **kwargs: Any) -> None:
        """``kwargs``: data_info, likelihood, optimizer, scheduler (see CodeModel)."""
        super().__init__(net=net, latent_dim=latent_dim, **kwargs)
        self.encoder, self.decoder = net(in_shape=self.data_info.shape, enc_out=latent_dim, latent_dim=latent_dim)
        self.code_activation = activation(code_activation)

    # ---- capabilities --------------------------------------------------------------
    def encode(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        return self.code_activation(self.encoder(x))  # (B, latent_dim)

    def decode(self, h: Tensor, y: Tensor | None = None) -> Tensor:
        return self.data_mean(self.decoder(h))  # (B, *shape)

    def reconstruct(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        return self.decode(self.encode(x))

    # ---- training -------------------------------------------------------------------
    def corrupt(self, x: Tensor) -> Tensor:
        """The input the encoder sees in training (the denoising variant overrides this)."""
        return x

    def penalties(self, x_in: Tensor, h: Tensor) -> dict[str, Tensor]:
        """Extra named loss terms on the code (sparse and contractive variants override this)."""
        return {}

    def loss_terms(self, batch: Batch, stage: str) -> dict[str, Tensor]:
        x = batch["x"]
        x_in = self.corrupt(x) if stage == "train" else x
        h = self.encode(x_in)
        terms = {"recon": recon_nll(self.decoder(h), x, self.likelihood).mean()}
        terms.update(self.penalties(x_in, h))
        terms["loss"] = torch.stack(list(terms.values())).sum()
        return terms


class DenoisingAutoencoder(Autoencoder):
    """x̂ = g_d(g_e(x̃)) with x̃ a corrupted x; the loss compares x̂ with the clean x."""

    def __init__(self, *, noise: str = "gaussian", noise_level: float = 0.3, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.noise, self.noise_level = noise, noise_level

    def corrupt(self, x: Tensor) -> Tensor:
        p = self.noise_level
        if self.noise == "gaussian":
            x_t = x + p * torch.randn_like(x)
            return x_t.clamp(0, 1) if self.data_info.bounded else x_t
        if self.noise == "masking":  # each value set to 0 with probability p
            return x * (torch.rand_like(x) >= p)
        if self.noise == "salt_and_pepper":  # with probability p, set to 0 or 1 at random
            hit = torch.rand_like(x) < p
            return torch.where(hit, (torch.rand_like(x) < 0.5).to(x.dtype), x)
        return x


class SparseAutoencoder(Autoencoder):
    """Adds λ·Σ_k |h_k| (and optionally the KL sparsity target ρ on sigmoid codes)."""

    def __init__(
        self, *, l1_weight: float = 1e-3, sparsity_target: float | None = None, sparsity_weight: float = 0.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if sparsity_target is not None and not isinstance(self.code_activation, nn.Sigmoid):
            raise UserError("model.sparsity_target needs codes in (0, 1): set model.code_activation=sigmoid")
        self.l1_weight, self.sparsity_target, self.sparsity_weight = l1_weight, sparsity_target, sparsity_weight

    def penalties(self, x_in: Tensor, h: Tensor) -> dict[str, Tensor]:
        out = {"l1": self.l1_weight * h.abs().sum(1).mean()}
        if self.sparsity_target is not None:
            rho = self.sparsity_target
            rho_hat = h.mean(0).clamp(1e-6, 1 - 1e-6)  # (latent_dim,) mean activation per unit
            kl = rho * torch.log(rho / rho_hat) + (1 - rho) * torch.log((1 - rho) / (1 - rho_hat))
            out["kl_sparsity"] = self.sparsity_weight * kl.sum()
        return out


def contractive_penalty(encode: Callable[[Tensor], Tensor], x: Tensor) -> Tensor:
    """‖∂h/∂x‖²_F per sample (B,), exact, for any differentiable per-sample encoder.

    The Jacobian (B, d_h, d_x) is built with vmap over reverse-mode products when the code is
    smaller than the input (d_h vector-Jacobian products), forward-mode otherwise; it stays
    differentiable, so the penalty trains the encoder.
    """
    from torch.func import jacfwd, jacrev, vmap

    flat = x.flatten(1)
    shape = x.shape[1:]

    def f(xi: Tensor) -> Tensor:  # (d_x,) -> (d_h,)
        return encode(xi.view(1, *shape))[0]

    d_h = encode(x[:1]).shape[1]
    jac = vmap(jacrev(f) if d_h <= flat.shape[1] else jacfwd(f))(flat)  # (B, d_h, d_x)
    return jac.pow(2).flatten(1).sum(1)


class ContractiveAutoencoder(Autoencoder):
    """Adds λ‖∂h/∂x‖²_F (exact) or its stochastic estimate λ·E‖h(x) − h(x + ε)‖²/σ²."""

    def __init__(
        self, *, contractive_weight: float = 0.1, contractive: str = "exact", contractive_sigma: float = 0.1,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if any(isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)) for m in self.encoder.modules()):
            raise UserError("the contractive penalty is per sample: use an encoder without batch_norm")
        self.weight, self.mode, self.sigma = contractive_weight, contractive, contractive_sigma

    def jacobian_norm(self, x: Tensor) -> Tensor:
        """‖J_h(x)‖²_F per sample (B,); closed form for one sigmoid layer h = σ(Wx + b)."""
        blocks = [m for m in self.encoder if not isinstance(m, nn.Flatten)]
        if len(blocks) == 1 and isinstance(self.code_activation, nn.Sigmoid) and isinstance(blocks[0][0], nn.Linear):
            w = blocks[0][0].weight  # (d_h, d_x)
            h = self.encode(x)
            # J = diag(h(1-h)) W  =>  ‖J‖² = Σ_j (h_j(1-h_j))² Σ_i W_ji²
            return ((h * (1 - h)).pow(2) * w.pow(2).sum(1)).sum(1)
        return contractive_penalty(self.encode, x)

    def penalties(self, x_in: Tensor, h: Tensor) -> dict[str, Tensor]:
        if self.mode == "exact":
            pen = self.jacobian_norm(x_in)
        else:  # E‖J ε‖² = σ²‖J‖²_F, so dividing by σ² estimates the same quantity
            noisy = self.encode(x_in + self.sigma * torch.randn_like(x_in))
            pen = (noisy - h).pow(2).sum(1) / self.sigma**2
        return {"contractive": self.weight * pen.mean()}
