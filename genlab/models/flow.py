"""Normalizing flows: RealNVP (Dinh, Sohl-Dickstein & Bengio 2017), a bijection f of affine couplings from the
data to a code z with the prior N(0, I), so that log p(x) = log N(f(x); 0, I) + log|det ∂f/∂x| exactly, and
samples are f⁻¹(z). The couplings and the multi-scale architecture are in ``genlab.nets.flow``.

Points (DataInfo.bounded False) are modelled as they are, and −log p(x) is exact, in nats per point.
Images in [0, 1] are treated as 8-bit pixels, as in the paper: uniform dequantisation v = (255·x + u)/256,
u ~ U[0, 1)^D, puts each pixel level in a bin of width 1/256 of [0, 1), and the flow models the logit
w = logit(α + (1 − 2α)·v) (α = ``alpha``), whose ends are far from ±∞. The probability of x's bins is at
least exp E_u[log p(v)]·256^−D (Jensen), so −log P(x) <= E_u[−log p(v)] + D·log 256: the bound reported in
bits/dim under ddpm's key and unit (test/bpd, bits/dim: the probability of 8-bit bins, ddpm's discretised
decoder's), one draw of u per image. Images whose levels are not multiples of 1/255 (digits: 17 levels)
get the bin of width 1/256 that starts at their value, as ddpm gives them the bin centred on it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from genlab.capabilities import Budget, CanBoundLikelihood, CanDecode, CanEncode, CanSample, LikelihoodBound
from genlab.data.base import Batch, DataInfo
from genlab.errors import UserError
from genlab.models.base import GenerativeModel, OptimizerFactory
from genlab.nets.flow import CouplingNetFactory, RealNVPFlow

LOG_2PI = math.log(2 * math.pi)
LEVELS = 256  # the bins of dequantised pixels: 8-bit images
VAL_SEED = 0  # validation and test draw the same dequantisation noise every epoch: val/loss ranks checkpoints
POINT_COUPLINGS = 8  # couplings of a flow on points when model.couplings is null


class RealNVP(GenerativeModel):
    """RealNVP on images (checkerboard and channel couplings at ``scales`` scales, ``couplings`` per scale;
    null: the paper's 3) or vectors (``couplings`` couplings that alternate the half they move; null: 8).
    ``net``: a ``genlab.nets.flow.coupling_net`` builder, one network per coupling. ``alpha``: the logit
    transform's margin; ``temperature``: the prior's standard deviation when sampling (1: the model's own
    distribution, which the likelihood scores; below 1 smoother samples, as Kingma & Dhariwal's Glow)."""

    capabilities = frozenset({CanEncode, CanDecode, CanSample, CanBoundLikelihood})

    def __init__(
        self, *, data_info: DataInfo, net: CouplingNetFactory, couplings: int | None = None, scales: int = 2,
        alpha: float = 0.05, temperature: float = 1.0, optimizer: OptimizerFactory | None = None,
        scheduler: Callable[..., Any] | None = None, compile: bool = False, updates_per_batch: int = 1,
    ) -> None:
        super().__init__(data_info=data_info, optimizer=optimizer, scheduler=scheduler, builders=[net], compile=compile,
                         updates_per_batch=updates_per_batch)
        if not 0 < alpha < 0.5:
            raise UserError(f"model.alpha={alpha} must be in (0, 0.5)")
        if temperature <= 0:
            raise UserError(f"model.temperature={temperature} must be > 0")
        self.alpha, self.temperature = alpha, temperature
        self.latent_dim = data_info.dim  # a bijection: the code is as large as the data
        image = data_info.is_image
        if couplings is None:
            couplings = 3 if image else POINT_COUPLINGS
        self.flow = RealNVPFlow(data_info.shape, net, couplings, scales if image else 1)

    @property
    def pixels(self) -> bool:
        """Whether the data are 8-bit images in [0, 1] (dequantised and logit-transformed) rather than reals."""
        return self.data_info.is_image and self.data_info.bounded

    # ---- data <-> the flow's input -------------------------------------------------------------------------
    def to_flow(self, x: Tensor, u: Tensor | float) -> tuple[Tensor, Tensor]:
        """x (B, *shape) with dequantisation noise u (B, *shape) in [0, 1) (or a constant) -> the flow's input
        w (B, *shape) and log|det ∂w/∂v| (B,) of the map from the dequantised v in [0, 1) to w; points: x, 0."""
        if not self.pixels:
            return x, x.new_zeros(x.shape[0])
        v = ((LEVELS - 1) * x + u) / LEVELS
        s = self.alpha + (1 - 2 * self.alpha) * v
        w = torch.logit(s)
        # dw/dv = (1 − 2α) / (s(1 − s)), elementwise; log s(1 − s) = −softplus(w) − softplus(−w)
        logdet = (math.log(1 - 2 * self.alpha) + F.softplus(w) + F.softplus(-w)).flatten(1).sum(1)
        return w, logdet

    def from_flow(self, w: Tensor) -> Tensor:
        """The flow's input w (B, *shape) -> data (B, *shape): the inverse of ``to_flow`` at u = 1/2, the bin's
        middle, clipped to [0, 1] (the range the bins of [0, 1) stand for)."""
        if not self.pixels:
            return w
        v = (torch.sigmoid(w) - self.alpha) / (1 - 2 * self.alpha)
        return ((LEVELS * v - 0.5) / (LEVELS - 1)).clamp(0, 1)

    # ---- densities ---------------------------------------------------------------------------------------------
    def log_density(self, x: Tensor, u: Tensor | float) -> Tensor:
        """log p (B,) in nats of the points x, or of the dequantised images v = (255x + u)/256 in [0, 1)^D:
        log N(f(w); 0, I) + log|det ∂f/∂w| + log|det ∂w/∂v|."""
        w, logdet_in = self.to_flow(x, u)
        z, logdet = self.flow(w)
        log_prior = -0.5 * (z.pow(2) + LOG_2PI).sum(1)
        return log_prior + logdet + logdet_in

    def nll(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """−log p(x) (B,): exact, in nats, for points; for images the dequantisation bound on −log P(x) of 8-bit
        bins in bits/dim, at one draw of the noise u per image."""
        if not self.pixels:
            return -self.log_density(x, 0.0)
        nats = -self.log_density(x, torch.rand_like(x)) + self.data_info.dim * math.log(LEVELS)
        return nats / (self.data_info.dim * math.log(2))

    # ---- capabilities -------------------------------------------------------------------------------------------
    def encode(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """The flow of x (B, *shape) to z (B, D); images at the middle of their bins (u = 1/2), so that
        ``decode`` gives x back."""
        return self.flow(self.to_flow(x, 0.5)[0])[0]

    def decode(self, h: Tensor, y: Tensor | None = None) -> Tensor:
        """z (B, D) -> x (B, *shape) through the inverse flow."""
        return self.from_flow(self.flow.inverse(h))

    @torch.no_grad()
    def sample(self, n: int, y: Tensor | None = None, steps: int | None = None) -> Tensor:
        """n samples (n, *shape): f⁻¹ of z ~ N(0, temperature² I); one pass, whatever the step budget."""
        z = self.temperature * torch.randn(n, self.latent_dim, device=self.device)
        return self.decode(z)

    def likelihood_bounds(self, budget: Budget) -> list[LikelihoodBound]:
        """Images: test/bpd, the dequantisation bound on −log P(x) of 8-bit bins in bits/dim (ddpm's key and
        unit), at one noise draw per image; points: test/nll, the exact −log p(x) in nats. Neither samples more
        than once per image, whatever the budget: the bound's test mean is estimated without bias by one draw
        per image, and the points' value is exact."""
        if self.pixels:
            return [LikelihoodBound("bpd", "bits/dim", self.nll,
                                    "uniform dequantisation bound E_u[−log p((255x + u)/256)] + D log 256, "
                                    "in bits/dim, one draw of u per image")]
        return [LikelihoodBound("nll", "nats", self.nll, "exact −log p(x) by the change of variables")]

    # ---- training --------------------------------------------------------------------------------------------------
    def val_loss_record(self) -> dict[str, Any]:
        what = ("−log p(x) in bits/dim (uniform dequantisation bound)" if self.pixels
                else "−log p(x) in nats per point (exact)")
        return {**super().val_loss_record(), "means": what}

    def loss_terms(self, batch: Batch, stage: str) -> dict[str, Tensor]:
        """The mean −log p(x): bits/dim for images (so the learning rate does not depend on the image size),
        nats for points. Validation and test draw the dequantisation noise from a fixed seed."""
        x = batch["x"]
        if stage == "train" or not self.pixels:
            return {"loss": self.nll(x).mean()}
        devices = [x.device.index or 0] if x.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(VAL_SEED)
            return {"loss": self.nll(x).mean()}
