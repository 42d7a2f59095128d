"""Random draws that torch's CPU generator makes slowly.

torch's CPU generator (mt19937) spends one call per element of ``torch.rand``: a batch's uniform draw
takes as long as a small network's layer (docs/speed.md). A Bernoulli draw needs far fewer
random bits than a float32 uniform carries; ``bernoulli16`` takes four draws from each 64-bit word.
"""

from __future__ import annotations

import torch
from torch import Tensor


def bernoulli16(p: Tensor) -> Tensor:
    """Binary samples with probabilities p (in p's dtype), at 16 bits on the CPU: each draw compares p with
    one 16-bit lane k of a 64-bit random word from torch's generator (four draws per word, k uniform on
    {−2¹⁵ … 2¹⁵ − 1}), a 1 when k + 2¹⁵ + ½ < 2¹⁶p. So P(1) is p to within 2⁻¹⁶, exactly 0 and 1 at p = 0
    and 1, and a NaN p gives 0. One generator call per four draws instead of one per draw (docs/speed.md
    has the timings). Used where draws are made every step (training's dynamic
    binarisation, an RBM's negative phase). Small tensors, other devices (whose generators are fast) and
    half precisions (which cannot hold k exactly) get ``torch.rand_like(p) < p``, 24-bit uniforms."""
    n = p.numel()
    if p.device.type != "cpu" or n < 4096 or p.dtype not in (torch.float32, torch.float64):  # bf16: k inexact
        return torch.rand_like(p).lt_(p)
    words = torch.empty((n + 3) // 4, dtype=torch.int64).random_(-(2**63), 2**63 - 1)
    k = words.view(torch.int16)[:n].view(p.shape)
    return k.to(p.dtype).lt_(p.mul(65536.0).sub_(32768.5))
