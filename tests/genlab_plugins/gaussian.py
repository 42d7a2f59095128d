"""A model family written only inside the test suite, to show that a new family is one module and one YAML
(tests/conf/model/gaussian.yaml), with no edit of genlab: the module is found in the ``genlab_plugins``
namespace package (its SCHEMAS registered with genlab's own), the YAML through ``hydra.searchpath``.

``DiagonalGaussian``: x ~ N(μ, diag σ²) per pixel, fitted by maximum likelihood with gradient
descent. It samples iteratively (Langevin-like steps towards the density, with a step budget) and
reports its exact negative log-likelihood in bits per dimension, a bound it names itself.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from genlab.capabilities import Budget, CanBoundLikelihood, CanSample, LikelihoodBound, Needs
from genlab.config import opt
from genlab.config.core import ModelConfig
from genlab.data.base import Batch
from genlab.models.base import GenerativeModel


class DiagonalGaussian(GenerativeModel):
    """N(μ, diag σ²) over images; ``steps`` Langevin-like steps from noise per sample by default."""

    capabilities = frozenset({CanSample, CanBoundLikelihood})

    needs: ClassVar[Needs] = Needs(image=True)

    def __init__(self, *, steps: int, step_size: float, **kwargs: Any) -> None:
        """``kwargs``: data_info, optimizer, scheduler (GenerativeModel's)."""
        super().__init__(**kwargs)
        shape = self.data_info.shape
        self.mu = nn.Parameter(torch.full(shape, 0.5))
        self.log_sigma = nn.Parameter(torch.full(shape, math.log(0.3)))
        self.default_steps, self.step_size = steps, step_size
        self.steps_asked: list[int | None] = []  # what callers asked sample() for (the tests read it)

    def nll(self, x: Tensor) -> Tensor:
        """−log N(x; μ, σ²) summed over dimensions: (B,) nats."""
        z = (x - self.mu) * torch.exp(-self.log_sigma)
        return (0.5 * z.pow(2) + self.log_sigma + 0.5 * math.log(2 * math.pi)).flatten(1).sum(1)

    def loss_terms(self, batch: Batch, stage: str) -> dict[str, Tensor]:
        nll = self.nll(batch["x"]).mean()
        return {"nll": nll, "loss": nll}

    # ---- capabilities ---------------------------------------------------------------------
    def sample(self, n: int, y: Tensor | None = None, steps: int | None = None) -> Tensor:
        """x ← x − s(x − μ) + √(2s)·σ·ε from x ~ N(0, 1), ``steps`` times (stationary near N(μ, σ²))."""
        self.steps_asked.append(steps)
        s, sigma = self.step_size, self.log_sigma.exp()
        x = torch.randn(n, *self.data_info.shape, device=self.device)
        for _ in range(self.default_steps if steps is None else steps):
            x = x - s * (x - self.mu) + math.sqrt(2 * s) * sigma * torch.randn_like(x)
        return x.clamp(0, 1)

    def likelihood_bounds(self, budget: Budget) -> list[LikelihoodBound]:
        dims = self.data_info.dim
        return [LikelihoodBound("bpd", "bits/dim", lambda x, y: self.nll(x) / (dims * math.log(2)),
                                "exact negative log-likelihood of the diagonal Gaussian")]


@dataclass
class DiagonalGaussianConfig(ModelConfig):
    steps: int = opt(20, ge=0)  # sampling steps when the caller sets no budget
    step_size: float = opt(0.2, gt=0, lt=1)  # s of the Langevin-like step


SCHEMAS = {"model": {"gaussian": DiagonalGaussianConfig}}
