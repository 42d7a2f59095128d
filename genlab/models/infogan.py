"""InfoGAN (Chen et al. 2016): a GAN whose generator also gets structured codes — a categorical
c ~ Uniform{0..K−1} (one-hot) and continuous codes u ~ U[−1, 1]^C — and an auxiliary head Q on
the discriminator's body that recovers them from G's samples. Maximising the variational lower
bound on the mutual information I(c, u; G(z, c, u)) makes the codes control distinct factors."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from genlab.capabilities import PictureRequest, PictureSpec
from genlab.errors import UserError
from genlab.figures import Grid
from genlab.models.gan import GAN, Extra

LOG_2PI = math.log(2 * math.pi)
Q_HIDDEN = 128  # Q's own hidden layer on top of the shared body


class InfoGAN(GAN):
    """G(z ⊕ onehot(c) ⊕ u); Q shares D's body (and D's optimiser).

    The information term, λ·(CE(Q_cat, c) + NLL of u under Q's factored Gaussian — or ½‖u − μ‖²
    with ``continuous_loss=mse``), is the negative MI lower bound up to the constant H(c, u); it
    is added to D's loss (it trains Q and the body, on detached fakes) and to G's (it trains G).
    """

    def __init__(
        self, *, n_categories: int = 10, n_continuous: int = 2, info_weight: float = 1.0,
        continuous_loss: str = "gaussian", latent_dim: int = 62, **kwargs: Any,
    ) -> None:
        if n_categories + n_continuous == 0:
            raise UserError("infogan needs a code: model.n_categories or model.n_continuous must be > 0")
        # set before the base is built: it draws the fixed inputs, codes included
        self.n_categories, self.n_continuous = n_categories, n_continuous
        self.code_dim = n_categories + n_continuous
        super().__init__(latent_dim=latent_dim, **kwargs)
        self.info_weight, self.continuous_loss = info_weight, continuous_loss
        q_out = n_categories + n_continuous * (2 if continuous_loss == "gaussian" else 1)  # logits, μ, log σ
        self.q_head = nn.Sequential(nn.Linear(self.d_head.in_features, Q_HIDDEN), nn.LeakyReLU(0.2),
                                    nn.Linear(Q_HIDDEN, q_out))

    def generator_input(self, n: int) -> Tensor:
        """z ⊕ onehot(c) ⊕ u (n, latent_dim + K + C)."""
        c = torch.randint(self.n_categories, (n,), device=self.device) if self.n_categories else None
        return self.with_codes(self.draw_noise(n), c, 2 * torch.rand(n, self.n_continuous, device=self.device) - 1)

    def with_codes(self, z: Tensor, c: Tensor | None, u: Tensor) -> Tensor:
        """G's input from noise z (n, latent_dim), classes c (n,) (None when K = 0), codes u (n, C)."""
        onehot = F.one_hot(c, self.n_categories).to(z.dtype) if c is not None else z.new_zeros(len(z), 0)
        return torch.cat([z, onehot, u.to(z.dtype)], dim=1)

    def info_terms(self, inputs: Tensor, feats: Tensor) -> dict[str, Tensor]:
        """−log Q(c|x) and −log Q(u|x) (batch means, nats) for G's inputs (B, latent_dim + K + C)
        and D's body on the samples made from them (B, features); their sum under "info"."""
        k, n_cont, start = self.n_categories, self.n_continuous, self.latent_dim
        q = self.q_head(feats)  # (B, K + C [+ C])
        terms = {}
        if k:
            terms["info_cat"] = F.cross_entropy(q[:, :k], inputs[:, start : start + k].argmax(1))
        if n_cont:
            u, mu = inputs[:, start + k :], q[:, k : k + n_cont]
            if self.continuous_loss == "gaussian":
                log_sigma = q[:, k + n_cont :]
                nll = 0.5 * LOG_2PI + log_sigma + 0.5 * ((u - mu) * torch.exp(-log_sigma)).pow(2)
            else:
                nll = 0.5 * (u - mu).pow(2)
            terms["info_cont"] = nll.sum(1).mean()
        terms["info"] = sum(terms.values())  # type: ignore[assignment]
        return terms

    def discriminator_extra(self, x: Tensor, fake: Tensor, c: Tensor | None, inputs: Tensor, feats: Tensor) -> Extra:
        terms = self.info_terms(inputs, feats)
        return self.info_weight * terms["info"], terms

    def generator_extra(self, inputs: Tensor, feats: Tensor) -> Extra:
        terms = self.info_terms(inputs, feats)
        return self.info_weight * terms["info"], terms

    def pictures(self, request: PictureRequest) -> list[PictureSpec]:
        """At the test's end, on images: ``code_traversals.png`` (``test/code_traversals``), one block per code,
        top to bottom, each sweeping it along ``request.columns`` columns."""
        if request.moment != "test" or not request.info.is_image:
            return []
        blocks = lambda: self.code_traversals(request.columns)  # noqa: E731
        return [PictureSpec("test/code_traversals", "code_traversals.png", blocks)]

    @torch.no_grad()
    def code_traversals(self, steps: int = 8) -> list[Grid]:
        """One grid per continuous code from the sampling generator, all from the noise
        z = fixed_noise[0]: row r with categorical value r (one row when K = 0), columns sweeping
        that code from −1 to 1 with the others at 0. Without continuous codes, one grid whose columns
        take their noise from fixed_noise[0..steps). Images (rows·steps, *shape) in data space."""
        grids = self.traversal_images(steps)
        rows = tuple(f"category {r}" for r in range(self.n_categories))
        if self.n_continuous == 0:
            return [Grid(grids[0], steps, rows, "categorical code: one row per category; columns: different noise")]
        ends = ("u=−1", *[""] * (steps - 2), "u=1") if steps > 1 else ("u=−1",)
        return [Grid(g, steps, rows, f"continuous code u{j + 1}: swept from −1 to 1 along the columns, the other "
                     "codes 0, the same noise", ends) for j, g in enumerate(grids)]

    @torch.no_grad()
    def traversal_images(self, steps: int) -> Tensor:
        """The images of ``code_traversals``: (grids, rows·steps, *shape)."""
        rows, n_cont = max(self.n_categories, 1), self.n_continuous
        c = torch.arange(rows, device=self.device).repeat_interleave(steps) if self.n_categories else None
        z = self.fixed_noise[:, : self.latent_dim]
        if n_cont == 0:
            cols = torch.arange(steps, device=self.device) % len(z)
            inputs = [self.with_codes(z[cols].repeat(rows, 1), c, z.new_zeros(rows * steps, 0))]
        else:
            sweep = torch.linspace(-1, 1, steps, device=self.device).repeat(rows)  # (rows·steps,)
            inputs = []
            for j in range(n_cont):
                u = z.new_zeros(rows * steps, n_cont)
                u[:, j] = sweep
                inputs.append(self.with_codes(z[:1].expand(rows * steps, -1), c, u))
        return self.to_data(torch.stack([self.generate(i, None, self.sampler) for i in inputs]))
