"""Denoising networks of the diffusion family: a small U-Net for images and an MLP for vectors.

A diffusion config names the builder (``_target_: genlab.nets.unet.denoiser``, ``_partial_: true``)
with its layer options; the model completes it with the shape it denoises (the images (C, H, W), the
2-D points, or an autoencoder's codes (L,)) and the number of classes of a conditional model, and gets
back a network

    net(x_t (B, *shape), t (B,) time steps in 1..T, y (B,) classes or None) -> (B, *shape)

that predicts the noise ε (or v). For class-conditional networks ``y`` takes values 0..num_classes, where
``num_classes`` is the "no class" token that classifier-free guidance trains with and samples from; the
class embedding is added to the time embedding. Vector-conditional networks (``cond_dim`` > 0: a CLIP
text embedding, another run's code) take y (B, cond_dim) float, projected and added the same way; the
zero vector is their "no condition". Unconditional networks (neither) ignore y.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from genlab.errors import IncompatibleError, UserError


def timestep_embedding(t: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    """Sinusoidal embedding of (B,) time steps as in the Transformer and Ho et al. 2020: (B, dim),
    cos of dim/2 geometric frequencies beside sin of them (an odd dim gets a zero column)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]  # (B, half)
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=1)
    return F.pad(emb, (0, dim % 2))


class Conditioning(nn.Module):
    """The time step (and condition) as one embedding e (B, emb_dim): an MLP over the sinusoids, plus a
    learned embedding of the class (row num_classes is "no class") for class-conditional networks, or a
    learned linear map of a condition vector (B, cond_dim) of about unit norm for vector-conditional ones."""

    def __init__(self, emb_dim: int, num_classes: int = 0, cond_dim: int = 0) -> None:
        super().__init__()
        if num_classes and cond_dim:
            raise ValueError("a denoiser is conditioned on a class or on a vector, not both")
        self.emb_dim, self.num_classes, self.cond_dim = emb_dim, num_classes, cond_dim
        self.time = nn.Sequential(nn.Linear(emb_dim, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.label = nn.Embedding(num_classes + 1, emb_dim) if num_classes else None
        # a linear map of the condition vector, without bias so that the zero vector adds nothing; its weights
        # start N(0, 1), so a unit vector (a CLIP embedding) starts as strong as a class embedding does
        # (N(0, 1) entries); a linear map can still give each of a few near-orthogonal class directions
        # its own embedding, as the lookup does (PyTorch's default init would start 10x weaker)
        self.vector = nn.Linear(cond_dim, emb_dim, bias=False) if cond_dim else None
        if self.vector is not None:
            nn.init.normal_(self.vector.weight)

    def forward(self, t: Tensor, y: Tensor | None) -> Tensor:
        e = self.time(timestep_embedding(t, self.emb_dim))
        if self.label is not None:
            if y is None:  # no class asked for: the unconditional token
                y = torch.full((len(t),), self.num_classes, device=t.device, dtype=torch.long)
            e = e + self.label(y.long())
        elif self.vector is not None:
            if y is None:  # no condition: the zero vector, as classifier-free training drops to
                y = torch.zeros(len(t), self.cond_dim, device=t.device)
            if y.dim() != 2 or y.shape[1] != self.cond_dim:
                raise ValueError(f"condition vectors of shape {tuple(y.shape)}, expected (B, {self.cond_dim})")
            e = e + self.vector(y.to(e.dtype))
        return e


def norm(channels: int, groups: int) -> nn.GroupNorm:
    """GroupNorm with the largest group count up to ``groups`` that divides ``channels``."""
    return nn.GroupNorm(math.gcd(groups, channels), channels)


class ResBlock(nn.Module):
    """norm -> SiLU -> conv3x3, plus the embedding as a per-channel shift, norm -> SiLU -> dropout -> conv3x3,
    added to the input (through a 1x1 conv when the channel count changes): (B, C_in, H, W) -> (B, C_out, H, W)."""

    def __init__(self, c_in: int, c_out: int, emb_dim: int, groups: int, dropout: float) -> None:
        super().__init__()
        self.in_layers = nn.Sequential(norm(c_in, groups), nn.SiLU(), nn.Conv2d(c_in, c_out, 3, padding=1))
        self.emb = nn.Sequential(nn.SiLU(), nn.Linear(emb_dim, c_out))
        self.out_layers = nn.Sequential(norm(c_out, groups), nn.SiLU(), nn.Dropout(dropout),
                                        nn.Conv2d(c_out, c_out, 3, padding=1))
        nn.init.zeros_(self.out_layers[-1].weight)  # each block starts as the identity
        nn.init.zeros_(self.out_layers[-1].bias)
        self.skip = nn.Identity() if c_in == c_out else nn.Conv2d(c_in, c_out, 1)

    def forward(self, x: Tensor, e: Tensor) -> Tensor:
        h = self.in_layers(x) + self.emb(e)[:, :, None, None]
        return self.skip(x) + self.out_layers(h)


class SelfAttention(nn.Module):
    """Single-head self-attention over the H·W positions of a feature map, residual: (B, C, H, W) -> same."""

    def __init__(self, channels: int, groups: int) -> None:
        super().__init__()
        self.norm = norm(channels, groups)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = nn.Conv2d(channels, channels, 1)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).flatten(2).transpose(1, 2).chunk(3, dim=2)  # each (B, HW, C)
        out = F.scaled_dot_product_attention(q, k, v)  # (B, HW, C)
        return x + self.proj(out.transpose(1, 2).reshape(b, c, h, w))


class Level(nn.Module):
    """``blocks`` residual blocks at one resolution, each followed by self-attention when ``attention``."""

    def __init__(self, c_in: int, c_out: int, blocks: int, attention: bool, emb_dim: int, groups: int,
                 dropout: float) -> None:
        super().__init__()
        self.res = nn.ModuleList(ResBlock(c_in if i == 0 else c_out, c_out, emb_dim, groups, dropout)
                                 for i in range(blocks))
        self.attn = nn.ModuleList(SelfAttention(c_out, groups) if attention else nn.Identity() for _ in range(blocks))

    def forward(self, x: Tensor, e: Tensor) -> Tensor:
        for res, attn in zip(self.res, self.attn):
            x = attn(res(x, e))
        return x


class UNet(nn.Module):
    """U-Net (Ronneberger et al. 2015, as Ho et al. 2020 use it): one level per entry of ``channels``,
    halving the resolution between levels (stride-2 convolutions) and doubling it back on the way up
    (nearest upsampling and a conv), each up level reading the down level's output as a skip
    connection; a middle block (res, attention, res) at the lowest resolution, where ``attention``
    also adds self-attention to the lowest level. Sizes that do not halve evenly (28 -> 14 -> 7 -> ?)
    are zero-padded up to a multiple of 2^(levels−1) and the output is cropped back."""

    def __init__(self, in_channels: int, channels: list[int], blocks: int, attention: bool, emb_dim: int,
                 num_classes: int, dropout: float, groups: int, cond_dim: int = 0) -> None:
        super().__init__()
        self.multiple = 2 ** (len(channels) - 1)
        self.cond = Conditioning(emb_dim, num_classes, cond_dim)
        last = len(channels) - 1
        self.stem = nn.Conv2d(in_channels, channels[0], 3, padding=1)
        self.down = nn.ModuleList()
        self.downsample = nn.ModuleList()
        c_prev = channels[0]
        for i, c in enumerate(channels):
            self.down.append(Level(c_prev, c, blocks, attention and i == last, emb_dim, groups, dropout))
            if i < last:
                self.downsample.append(nn.Conv2d(c, c, 3, stride=2, padding=1))
            c_prev = c
        self.mid = nn.ModuleList([ResBlock(c_prev, c_prev, emb_dim, groups, dropout),
                                  SelfAttention(c_prev, groups) if attention else nn.Identity(),
                                  ResBlock(c_prev, c_prev, emb_dim, groups, dropout)])
        self.up = nn.ModuleList()
        self.upsample = nn.ModuleList()
        for i in reversed(range(len(channels))):  # up level i reads the running map and down level i's output
            c = channels[i]
            self.up.append(Level(c_prev + c, c, blocks, attention and i == last, emb_dim, groups, dropout))
            if i > 0:
                self.upsample.append(nn.Conv2d(c, c, 3, padding=1))
            c_prev = c
        self.out = nn.Sequential(norm(c_prev, groups), nn.SiLU(), nn.Conv2d(c_prev, in_channels, 3, padding=1))
        nn.init.zeros_(self.out[-1].weight)  # the first prediction is 0: the noise's mean
        nn.init.zeros_(self.out[-1].bias)

    def forward(self, x: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        e = self.cond(t, y)  # (B, emb_dim)
        height, width = x.shape[-2:]
        pad_h, pad_w = (-height) % self.multiple, (-width) % self.multiple
        h = F.pad(x, (0, pad_w, 0, pad_h)) if pad_h or pad_w else x  # (B, C, H', W'), H' and W' halve evenly
        h = self.stem(h)
        skips = []
        for i, level in enumerate(self.down):
            h = level(h, e)
            skips.append(h)
            if i < len(self.downsample):
                h = self.downsample[i](h)
        h = self.mid[2](self.mid[1](self.mid[0](h, e)), e)
        for j, level in enumerate(self.up):
            h = level(torch.cat([h, skips.pop()], dim=1), e)
            if j < len(self.upsample):
                h = self.upsample[j](F.interpolate(h, scale_factor=2.0, mode="nearest"))
        return self.out(h)[..., :height, :width]


class MLPDenoiser(nn.Module):
    """For vectors (2-D points, codes) (B, D): Linear layers of widths ``hidden``, each followed by the
    embedding's own projection added and SiLU, then a Linear back to D (zero-initialised)."""

    def __init__(self, dim: int, hidden: list[int], emb_dim: int, num_classes: int, dropout: float,
                 cond_dim: int = 0) -> None:
        super().__init__()
        self.cond = Conditioning(emb_dim, num_classes, cond_dim)
        sizes = [dim, *hidden]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))
        self.emb = nn.ModuleList(nn.Linear(emb_dim, b) for b in hidden)
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(sizes[-1], dim)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        e = F.silu(self.cond(t, y))  # (B, emb_dim)
        h = x.flatten(1)
        for layer, emb in zip(self.layers, self.emb):
            h = self.dropout(F.silu(layer(h) + emb(e)))
        return self.out(h).view_as(x)


def denoiser(
    *, in_shape: tuple[int, ...], num_classes: int = 0, cond_dim: int = 0,  # what the model supplies
    kind: str = "auto", channels: list[int] = (32, 64), blocks: int = 1, attention: bool = True,  # type: ignore[assignment]
    hidden: list[int] = (256, 256, 256), emb_dim: int = 128, dropout: float = 0.0, groups: int = 8,  # type: ignore[assignment]
) -> nn.Module:
    """The denoiser for samples of ``in_shape``: ``kind`` auto is the U-Net for images (C, H, W) and the
    MLP for vectors; ``unet`` or ``mlp`` force one (the MLP flattens images). U-Net options: ``channels``
    per level, ``blocks`` residual blocks per level, ``attention`` at the lowest resolution, ``groups``
    of GroupNorm (each width a multiple of it); MLP: ``hidden`` widths. Both:
    ``emb_dim`` of the time (and class) embedding, ``dropout`` in every block. ``num_classes`` (a class
    embedding) or ``cond_dim`` (a projection of condition vectors) come from the model. The options'
    ranges and choices are the schema's (genlab/config/diffusion.py)."""
    for name, widths in (("channels", channels), ("hidden", hidden)):  # the schema checks each width, not the count
        if not widths:
            raise UserError(f"model.net.{name}=[] must list at least one width")
    image = len(in_shape) == 3
    if kind == "unet" and not image:
        raise IncompatibleError(f"model.net.kind=unet needs images (C, H, W), but the samples have shape "
                                f"{tuple(in_shape)}; use kind=mlp (or auto)", "the U-Net")
    if image and kind != "mlp":
        uneven = [c for c in channels if c % groups]
        if uneven:  # GroupNorm splits a layer's channels into equal groups
            raise UserError(f"model.net.groups={groups} does not divide the U-Net widths {uneven} of "
                            f"model.net.channels={list(channels)}: give groups that divide every width (e.g. "
                            f"{math.gcd(*channels)}) or widths that are multiples of {groups}")
        return UNet(in_shape[0], list(channels), blocks, attention, emb_dim, num_classes, dropout, groups, cond_dim)
    return MLPDenoiser(math.prod(in_shape), list(hidden), emb_dim, num_classes, dropout, cond_dim)
