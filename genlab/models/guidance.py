"""Classifier-free guidance (Ho & Salimans 2021) as a wrapper of any conditional denoiser: the network,
trained with its condition sometimes dropped to a "no condition" value, predicts both with and without
it, and sampling mixes the two, out = out_u + s·(out_c − out_u)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

Denoiser = Callable[[Tensor, Tensor, Any], Tensor]  # (x_t (B, ...), t (B,), condition (B, ...) or None) -> (B, ...)


class ClassifierFreeGuidance:
    """``denoiser`` guided at scale s (0: unconditional, 1: conditional, > 1: guided): a denoiser itself,
    (x_t, t, c) -> out_u + s(out_c − out_u), out_u at ``null(B)``, the "no condition" (B, ...); c None
    asks for the unconditional output. One network call for s = 0 or 1, else one over the batch twice."""

    def __init__(self, denoiser: Denoiser, null: Callable[[int], Tensor], scale: float) -> None:
        self.denoiser, self.null, self.scale = denoiser, null, scale

    def at_scale(self, scale: float) -> ClassifierFreeGuidance:
        """The same denoiser guided at another scale."""
        return ClassifierFreeGuidance(self.denoiser, self.null, scale)

    def __call__(self, x: Tensor, t: Tensor, c: Any) -> Tensor:
        n = x.shape[0]
        if c is None or self.scale == 0:
            return self.denoiser(x, t, self.null(n))
        if self.scale == 1:
            return self.denoiser(x, t, c)
        both = self.denoiser(torch.cat([x, x]), torch.cat([t, t]), torch.cat([c, self.null(n)]))  # (2B, ...)
        cond, uncond = both.chunk(2)
        return uncond + self.scale * (cond - uncond)
