"""The invertible layers of RealNVP (Dinh et al. 2017) and the networks that condition its couplings.

Every layer maps x -> (y, log|det ∂y/∂x|) in ``forward`` and y -> x in ``inverse``; the log-determinants are
per sample (B,). An affine coupling keeps one part x_a of its input and moves the other,
y_b = x_b·exp(s(x_a)) + t(x_a), so its Jacobian is triangular with log-determinant Σ s and its inverse needs
no inverse of the networks s and t. The parts are a checkerboard of pixels (``CheckerboardCoupling``) or one
half of the channels, or of the coordinates of a vector (``SplitCoupling``). ``RealNVPFlow`` stacks them:
for vectors, couplings that alternate the half they move; for images, the paper's multi-scale architecture,
where each scale runs checkerboard couplings, squeezes 2x2 pixels into channels, runs channel couplings
and factors half of the channels out to the code, and the last scale runs checkerboard couplings only.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from genlab.errors import UserError

CouplingNetFactory = Callable[..., nn.Module]  # coupling_net: (in_shape, out_shape) -> net(x_a) (B, 2·C_b, ...)


# ---- the networks s(x_a), t(x_a) ---------------------------------------------------------------------------
class ResidualBlock(nn.Module):
    """x + conv(relu(conv(relu(x)))), 3x3 convolutions at constant width."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.ReLU(), nn.Conv2d(channels, channels, 3, padding=1),
                                  nn.ReLU(), nn.Conv2d(channels, channels, 3, padding=1))

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


def zero_output(layer: nn.Module) -> nn.Module:
    """The layer with its weights and bias at zero: every coupling starts as the identity (s = t = 0), so
    the untrained flow is the logit transform and the first steps are stable."""
    nn.init.zeros_(layer.weight)
    nn.init.zeros_(layer.bias)
    return layer


def coupling_net(*, in_shape: Sequence[int], out_shape: Sequence[int], kind: str = "auto",
                 hidden: Sequence[int] = (128, 128), channels: int = 64, blocks: int = 2) -> nn.Module:
    """The network of one coupling: x_a (B, *in_shape) -> (B, 2·out_shape[0], *out_shape[1:]), the raw scale
    and the shift of x_b stacked along dimension 1. ``kind`` conv (a ResNet of ``blocks`` residual blocks of
    ``channels``, for images), mlp (``hidden`` widths, ReLU, for vectors) or auto (conv for images (C, H, W),
    mlp for vectors (D,)). The last layer starts at zero (``zero_output``)."""
    if kind not in ("auto", "conv", "mlp"):
        raise UserError(f"model.net.kind={kind!r} is not one of auto, conv, mlp")
    image = len(in_shape) == 3
    if kind == "auto":
        kind = "conv" if image else "mlp"
    if kind == "conv":
        if not image:
            raise UserError("model.net.kind=conv needs image data (C, H, W); use kind=mlp (or auto) for points")
        return nn.Sequential(nn.Conv2d(in_shape[0], channels, 3, padding=1),
                             *[ResidualBlock(channels) for _ in range(blocks)], nn.ReLU(),
                             zero_output(nn.Conv2d(channels, 2 * out_shape[0], 3, padding=1)))
    layers: list[nn.Module] = [nn.Flatten()]
    width = math.prod(in_shape)
    for h in hidden:
        layers += [nn.Linear(width, h), nn.ReLU()]
        width = h
    layers += [zero_output(nn.Linear(width, 2 * math.prod(out_shape))),
               nn.Unflatten(1, (2 * out_shape[0], *out_shape[1:]))]
    return nn.Sequential(*layers)


# ---- the couplings ---------------------------------------------------------------------------------------------
class AffineCoupling(nn.Module):
    """y_b = x_b·exp(s) + t with (s, t) from the kept part; s = scale·tanh(raw), with a learned scale per
    channel (the paper's), so that s stays bounded while the network is far from its optimum."""

    def __init__(self, net: nn.Module, channels: int) -> None:
        super().__init__()
        self.net = net
        self.scale = nn.Parameter(torch.ones(channels))

    def scale_shift(self, kept: Tensor) -> tuple[Tensor, Tensor]:
        """(s, t) for the moved part, each (B, C_b, ...), from the network's input ``kept``."""
        raw, t = self.net(kept).chunk(2, dim=1)
        scale = self.scale.view(1, -1, *[1] * (raw.dim() - 2))
        return scale * torch.tanh(raw), t


class CheckerboardCoupling(AffineCoupling):
    """Images (C, H, W): the pixels where (i + j) % 2 == ``parity`` are kept (b = 1) and condition the others.
    The network sees b·x with the mask b as an extra channel: a kept value of 0 is then told apart from a
    masked one."""

    def __init__(self, shape: Sequence[int], parity: int, net: CouplingNetFactory) -> None:
        c, h, w = shape
        super().__init__(net(in_shape=(c + 1, h, w), out_shape=(c, h, w)), c)
        ij = torch.arange(h)[:, None] + torch.arange(w)[None, :]
        # follows from the shape and parity: kept out of checkpoints
        self.register_buffer("mask", ((ij % 2) == parity).float().view(1, 1, h, w), persistent=False)

    def conditioned(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(s, t) (B, C, H, W), zero on the kept pixels, from the kept pixels of x."""
        b = self.mask.to(x.dtype)
        kept = torch.cat([x * b, b.expand(x.shape[0], 1, *x.shape[2:])], dim=1)  # (B, C + 1, H, W)
        s, t = self.scale_shift(kept)
        return s * (1 - b), t * (1 - b)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        s, t = self.conditioned(x)
        return x * torch.exp(s) + t, s.flatten(1).sum(1)

    def inverse(self, y: Tensor) -> Tensor:
        s, t = self.conditioned(y)  # the kept pixels are the same in y and x
        return (y - t) * torch.exp(-s)


class SplitCoupling(AffineCoupling):
    """Vectors (D,) or images (C, H, W) cut along dimension 1 into a first part of D//2 (C//2) and the rest:
    ``parity`` 0 keeps the first and moves the rest, 1 the other way round."""

    def __init__(self, shape: Sequence[int], parity: int, net: CouplingNetFactory) -> None:
        sizes = (shape[0] // 2, shape[0] - shape[0] // 2)
        kept, moved = sizes if parity == 0 else sizes[::-1]
        super().__init__(net(in_shape=(kept, *shape[1:]), out_shape=(moved, *shape[1:])), moved)
        self.sizes, self.parity = sizes, parity

    def parts(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(kept, moved) parts of x."""
        a, b = x.split(self.sizes, dim=1)
        return (a, b) if self.parity == 0 else (b, a)

    def join(self, kept: Tensor, moved: Tensor) -> Tensor:
        return torch.cat([kept, moved] if self.parity == 0 else [moved, kept], dim=1)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        kept, moved = self.parts(x)
        s, t = self.scale_shift(kept)
        return self.join(kept, moved * torch.exp(s) + t), s.flatten(1).sum(1)

    def inverse(self, y: Tensor) -> Tensor:
        kept, moved = self.parts(y)
        s, t = self.scale_shift(kept)
        return self.join(kept, (moved - t) * torch.exp(-s))


# ---- the flow --------------------------------------------------------------------------------------------------
class Scale(nn.Module):
    """One scale of the multi-scale architecture on (C, H, W): checkerboard couplings of alternating parity;
    unless it is the last, a squeeze to (4C, H/2, W/2), channel couplings of alternating parity, and the
    first 2C channels factored out (they go to the code as they are)."""

    def __init__(self, shape: Sequence[int], couplings: int, last: bool, net: CouplingNetFactory) -> None:
        super().__init__()
        c, h, w = shape
        self.last = last
        self.checkerboard = nn.ModuleList(CheckerboardCoupling(shape, k % 2, net)
                                          for k in range(couplings + 1 if last else couplings))
        squeezed = (4 * c, h // 2, w // 2)
        self.channel = nn.ModuleList() if last else nn.ModuleList(SplitCoupling(squeezed, k % 2, net)
                                                                  for k in range(couplings))
        #: what this scale factors out (B, *out_shape) and hands on (B, *next_shape)
        self.out_shape = tuple(shape) if last else (2 * c, h // 2, w // 2)
        self.next_shape = None if last else (2 * c, h // 2, w // 2)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor | None, Tensor]:
        """x (B, C, H, W) -> (factored out, handed on or None, log-determinant (B,))."""
        logdet = x.new_zeros(x.shape[0])
        for layer in self.checkerboard:
            x, ld = layer(x)
            logdet = logdet + ld
        if self.last:
            return x, None, logdet
        x = nn.functional.pixel_unshuffle(x, 2)  # (B, 4C, H/2, W/2): a volume-preserving reshape
        for layer in self.channel:
            x, ld = layer(x)
            logdet = logdet + ld
        out, on = x.chunk(2, dim=1)
        return out, on, logdet

    def inverse(self, out: Tensor, on: Tensor | None) -> Tensor:
        if self.last:
            x = out
        else:
            x = torch.cat([out, on], dim=1)
            for layer in reversed(self.channel):
                x = layer.inverse(x)
            x = nn.functional.pixel_shuffle(x, 2)
        for layer in reversed(self.checkerboard):
            x = layer.inverse(x)
        return x


class RealNVPFlow(nn.Module):
    """The bijection f: x (B, *shape) -> z (B, D) of RealNVP, with log|det ∂f/∂x| (B,). Vectors (D,), D >= 2:
    ``couplings`` SplitCouplings that alternate the half they move. Images (C, H, W): ``scales`` scales of
    ``couplings`` couplings each (the last ``couplings`` + 1 checkerboard ones, as the paper's 4 after 3);
    z is the factored-out parts of each scale, flattened, then the last scale's output."""

    def __init__(self, shape: Sequence[int], net: CouplingNetFactory, couplings: int, scales: int = 1) -> None:
        super().__init__()
        self.shape = tuple(shape)
        if couplings < 1 or scales < 1:
            raise UserError(f"model.couplings={couplings} and model.scales={scales} must be >= 1")
        if len(self.shape) == 3:
            c, h, w = self.shape
            side = 2 ** (scales - 1)
            if h % side or w % side:
                raise UserError(f"model.scales={scales} halves the image {scales - 1} times, so its sides must be "
                                f"multiples of {side}; these images are {h}x{w}: lower model.scales")
            self.scales = nn.ModuleList()
            at: tuple[int, ...] = self.shape
            for k in range(scales):
                scale = Scale(at, couplings, k == scales - 1, net)
                self.scales.append(scale)
                at = scale.next_shape or at
            self.out_shapes = [s.out_shape for s in self.scales]
            self.couplings = nn.ModuleList()
        else:
            if math.prod(self.shape) < 2 or len(self.shape) != 1:
                raise UserError(f"RealNVP needs images (C, H, W) or vectors of 2 or more numbers, not shape "
                                f"{self.shape}")
            self.couplings = nn.ModuleList(SplitCoupling(self.shape, k % 2, net) for k in range(couplings))
            self.scales = nn.ModuleList()

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """x (B, *shape) -> (z (B, D), log|det ∂z/∂x| (B,))."""
        logdet = x.new_zeros(x.shape[0])
        if not self.scales:
            for layer in self.couplings:
                x, ld = layer(x)
                logdet = logdet + ld
            return x, logdet
        parts = []
        h: Tensor | None = x
        for scale in self.scales:
            out, h, ld = scale(h)
            parts.append(out.flatten(1))
            logdet = logdet + ld
        return torch.cat(parts, dim=1), logdet

    def inverse(self, z: Tensor) -> Tensor:
        """z (B, D) -> x (B, *shape)."""
        if not self.scales:
            for layer in reversed(self.couplings):
                z = layer.inverse(z)
            return z
        sizes = [math.prod(s) for s in self.out_shapes]
        parts = [p.reshape(-1, *s) for p, s in zip(z.split(sizes, dim=1), self.out_shapes)]
        h: Tensor | None = None
        for scale, part in zip(reversed(self.scales), reversed(parts)):
            h = scale.inverse(part, h)
        assert h is not None
        return h
