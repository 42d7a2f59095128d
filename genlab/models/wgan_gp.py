"""WGAN-GP (Gulrajani et al. 2017): the Wasserstein GAN whose critic is kept near 1-Lipschitz by
a gradient penalty on random interpolates between real and generated samples."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from genlab.errors import UserError
from genlab.models.gan import AdversarialModel, Extra


def gradient_penalty(critic: Callable[[Tensor], Tensor], real: Tensor, fake: Tensor, eps: Tensor) -> Tensor:
    """mean_i (‖∇D(x̂_i)‖₂ − 1)² at x̂_i = ε_i·x_i + (1 − ε_i)·x̃_i (Gulrajani et al. 2017); eps (B,).

    create_graph: the penalty is itself differentiated with respect to the critic's weights.
    """
    e = eps.view(-1, *[1] * (real.dim() - 1))
    x_hat = (e * real.detach() + (1 - e) * fake.detach()).requires_grad_(True)
    (grad,) = torch.autograd.grad(critic(x_hat).sum(), x_hat, create_graph=True)  # rows are independent
    return (grad.flatten(1).norm(dim=1) - 1).pow(2).mean()


class WGANGP(AdversarialModel):
    """WGAN-GP (Gulrajani et al. 2017): an unbounded critic D estimates the Wasserstein-1 distance
    E D(x) − E D(G(z)); the gradient penalty λ·E(‖∇D(x̂)‖ − 1)² on random interpolates x̂ keeps D
    near 1-Lipschitz. d_real / d_fake are the critic's mean scores, not probabilities."""

    def __init__(self, *, gp_weight: float = 10.0, d_steps: int = 5, **kwargs: Any) -> None:
        super().__init__(d_steps=d_steps, **kwargs)
        self.gp_weight = gp_weight
        if any(isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)) for m in self.body.modules()):
            raise UserError(
                "wgan_gp penalises the critic's gradient per sample, and batch norm mixes the samples of a "
                "batch: set model.net.d_norm=layer (or none)"
            )

    def d_loss(self, real_out: Tensor, fake_out: Tensor) -> Tensor:
        return fake_out.mean() - real_out.mean()

    def g_loss(self, fake_out: Tensor) -> Tensor:
        return -fake_out.mean()

    def d_score(self, out: Tensor) -> Tensor:
        return out.mean()

    def divergence(self, d_loss: Tensor) -> Tensor:
        return -d_loss  # E D(x) − E D(G(z))

    def discriminator_extra(self, x: Tensor, fake: Tensor, c: Tensor | None, inputs: Tensor, feats: Tensor) -> Extra:
        eps = torch.rand(len(x), device=x.device)  # one interpolation point per pair
        gp = gradient_penalty(lambda v: self.critic(v, c), x, fake, eps)
        return self.gp_weight * gp, {"gp": gp}
