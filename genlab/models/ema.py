"""An exponential moving average of a network's weights, through torch's ``AveragedModel``.

Used by the GAN family to sample from the generator's average (``model.ema``), and meant for any
model that samples from averaged weights (diffusion models do).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.optim.swa_utils import AveragedModel


def warmed_up_ema(decay: float):  # noqa: ANN201 (torch's multi_avg_fn signature)
    """AveragedModel's ``multi_avg_fn`` for an EMA whose decay warms up: at the t-th update after the
    first (which copies the weights), θ_ema ← d_t·θ_ema + (1 − d_t)·θ with d_t = min(decay, (1 + t)/(10 + t)),
    so a short run's average does not keep its early weights (0.999^2000 = 0.14 of them otherwise).
    Integer buffers (batch-norm counters) take the newest value."""

    def update(averaged: list[Tensor], current: list[Tensor], num_averaged: Tensor) -> None:
        t = num_averaged.float()
        d = torch.clamp((1 + t) / (10 + t), max=decay)  # on the device: no host sync
        for e, p in zip(averaged, current):
            if e.is_floating_point():
                e.lerp_(p, (1 - d).to(e.dtype))
            else:
                e.copy_(p)

    return update


def ema_of(net: nn.Module, decay: float) -> AveragedModel:
    """A frozen EMA copy of ``net`` (its buffers averaged too); call ``update_parameters(net)`` after
    each optimiser step of ``net``. Its ``n_averaged`` buffer is saved with the model."""
    if not 0.0 <= decay < 1.0:
        raise ValueError(f"an EMA decay must be in [0, 1), got {decay}")
    avg = AveragedModel(net, multi_avg_fn=warmed_up_ema(decay), use_buffers=True)
    return avg.requires_grad_(False)
