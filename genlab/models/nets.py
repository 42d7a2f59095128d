"""Plain ``nn.Module`` networks, built from config by partial functions.

A model config names a builder (``_target_: genlab.models.nets.mlp_pair``, ``_partial_: true``)
with its layer options; the model completes it with the data's sample shape and its code
sizes, and gets back ``(encoder, decoder)``:

    encoder: x (B, *in_shape) -> (B, enc_out)
    decoder: h (B, latent_dim) -> raw output (B, *in_shape)  (logits or values; the model maps them)

Encoders and decoders are ``nn.Sequential``s of blocks (one Linear or conv layer with its
normalisation and activation each), so greedy layer-wise training can address block i.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from genlab.errors import IncompatibleError

_ACTIVATIONS = {
    "relu": nn.ReLU, "leaky_relu": lambda: nn.LeakyReLU(0.2), "elu": nn.ELU, "gelu": nn.GELU,
    "silu": nn.SiLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "none": nn.Identity,
}


def activation(name: str) -> nn.Module:
    """An activation module by name (``none`` is the identity)."""
    if name not in _ACTIVATIONS:
        raise ValueError(f"unknown activation '{name}'; choose from {', '.join(_ACTIVATIONS)}")
    return _ACTIVATIONS[name]()


class TiedLinear(nn.Module):
    """A decoder layer whose weight is the transpose of an encoder layer's (W_d = W_eᵀ)."""

    def __init__(self, tied_to: nn.Linear) -> None:
        super().__init__()
        self.tied_to = [tied_to]  # a list, so the encoder's layer is not registered twice
        self.bias = nn.Parameter(torch.zeros(tied_to.in_features))

    def forward(self, h: Tensor) -> Tensor:
        return F.linear(h, self.tied_to[0].weight.t(), self.bias)


class TiedConvTranspose2d(nn.Module):
    """The transpose of an encoder convolution, sharing its weight (C_out, C_in, k, k)."""

    def __init__(self, tied_to: nn.Conv2d, output_padding: tuple[int, int]) -> None:
        super().__init__()
        self.tied_to = [tied_to]
        self.output_padding = output_padding
        self.bias = nn.Parameter(torch.zeros(tied_to.in_channels))

    def forward(self, h: Tensor) -> Tensor:
        c = self.tied_to[0]
        return F.conv_transpose2d(h, c.weight, self.bias, c.stride, c.padding, self.output_padding)


class Conditioned(nn.Module):
    """A network that also takes a condition c (B, cond_dim), e.g. a one-hot class.

    c is concatenated to the flattened input (MLP encoders, all decoders) or, with
    ``planes=True``, appended as cond_dim constant input planes (B, cond_dim, H, W) for
    convolutional encoders. ``net`` is the plain Sequential, which stays addressable by block.
    """

    def __init__(self, net: nn.Sequential, planes: bool = False) -> None:
        super().__init__()
        self.net = net
        self.planes = planes

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        c = c.to(x.dtype)
        if self.planes:
            return self.net(torch.cat([x, c[:, :, None, None].expand(-1, -1, *x.shape[-2:])], dim=1))
        return self.net(torch.cat([x.flatten(1), c], dim=1))


def _conditioned(
    enc: nn.Sequential, dec: nn.Sequential, cond_dim: int, tied: bool, planes: bool
) -> tuple[nn.Module, nn.Module]:
    """(enc, dec) as they are for cond_dim = 0, both wrapped in ``Conditioned`` otherwise."""
    if cond_dim == 0:
        return enc, dec
    if tied:
        raise ValueError("tied_weights cannot be combined with a condition (cond_dim > 0): the shapes differ")
    return Conditioned(enc, planes=planes), Conditioned(dec)


def _block(layer: nn.Module, act: str | None, norm: nn.Module | None = None) -> nn.Sequential:
    parts = [layer] + ([norm] if norm is not None else []) + ([activation(act)] if act else [])
    return nn.Sequential(*parts)


def mlp_pair(
    in_shape: tuple[int, ...],
    enc_out: int,
    latent_dim: int,
    hidden: list[int] = (512, 256),  # type: ignore[assignment]
    activation: str = "relu",
    tied_weights: bool = False,
    batch_norm: bool = False,
    cond_dim: int = 0,
) -> tuple[nn.Module, nn.Module]:
    """MLP encoder D-h1-...-hk-enc_out and a mirrored decoder latent-hk-...-h1-D.

    cond_dim > 0: both take a condition c (B, cond_dim) as a second argument, concatenated
    to the flattened input (the first layers take D + cond_dim and latent_dim + cond_dim).
    """
    d = math.prod(in_shape)
    sizes = [d + cond_dim, *hidden]
    enc_blocks: list[nn.Module] = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        enc_blocks.append(_block(nn.Linear(a, b), activation, nn.BatchNorm1d(b) if batch_norm else None))
    enc_blocks.append(_block(nn.Linear(sizes[-1], enc_out), None))
    encoder = nn.Sequential(nn.Flatten(), *enc_blocks)

    if tied_weights and enc_out != latent_dim:
        raise ValueError("tied_weights needs an encoder output of the code size (not a mean and variance)")
    linears = [blk[0] for blk in enc_blocks]
    dec_sizes = [latent_dim + cond_dim, *reversed(hidden), d]
    dec_blocks: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(dec_sizes[:-1], dec_sizes[1:])):
        layer = TiedLinear(linears[-1 - i]) if tied_weights else nn.Linear(a, b)
        last = i == len(dec_sizes) - 2
        norm = nn.BatchNorm1d(b) if batch_norm and not last else None
        dec_blocks.append(_block(layer, None if last else activation, norm))
    decoder = nn.Sequential(*dec_blocks, nn.Unflatten(1, tuple(in_shape)))
    return _conditioned(encoder, decoder, cond_dim, tied_weights, planes=False)


def _conv_out(size: int, k: int, pad: int) -> int:
    return (size + 2 * pad - k) // 2 + 1


def conv_pair(
    in_shape: tuple[int, ...],
    enc_out: int,
    latent_dim: int,
    channels: list[int] = (32, 64),  # type: ignore[assignment]
    kernel_size: int = 4,
    activation: str = "relu",
    tied_weights: bool = False,
    batch_norm: bool = False,
    hidden: list[int] = (),  # type: ignore[assignment]
    cond_dim: int = 0,
) -> tuple[nn.Module, nn.Module]:
    """Stride-2 convolutions then linear layers; the decoder mirrors them with transposed convs.

    Every stride-2 layer halves the image (28 -> 14 -> 7); the decoder's output padding is
    chosen per layer so it returns exactly the input size, whatever it was. cond_dim > 0:
    both take a condition c (B, cond_dim) as a second argument, given to the encoder as
    cond_dim constant input planes and to the decoder's first Linear (latent_dim + cond_dim).
    """
    if len(in_shape) != 3:
        raise IncompatibleError(
            f"a convolutional network needs image data (C, H, W), but the samples have shape {tuple(in_shape)}"
        )
    c, h, w = in_shape
    pad = (kernel_size - 1) // 2 if kernel_size % 2 else 1
    sizes = [(h, w)]
    for _ in channels:
        sizes.append((_conv_out(sizes[-1][0], kernel_size, pad), _conv_out(sizes[-1][1], kernel_size, pad)))
    if min(sizes[-1]) < 1:
        raise IncompatibleError(f"{len(channels)} stride-2 layers are too many for {h}x{w} images")
    chans = [c, *channels]
    convs = [nn.Conv2d(a + (cond_dim if i == 0 else 0), b, kernel_size, 2, pad)
             for i, (a, b) in enumerate(zip(chans[:-1], chans[1:]))]
    norm = (lambda n: nn.BatchNorm2d(n)) if batch_norm else (lambda n: None)
    flat = chans[-1] * sizes[-1][0] * sizes[-1][1]
    fc = [flat, *hidden]
    enc_fc = [_block(nn.Linear(a, b), activation) for a, b in zip(fc[:-1], fc[1:])]
    encoder = nn.Sequential(
        *[_block(conv, activation, norm(conv.out_channels)) for conv in convs],
        nn.Flatten(), *enc_fc, _block(nn.Linear(fc[-1], enc_out), None),
    )

    if tied_weights and enc_out != latent_dim:
        raise ValueError("tied_weights needs an encoder output of the code size (not a mean and variance)")
    enc_linears = [blk[0] for blk in enc_fc] + [encoder[-1][0]]
    dec_fc_sizes = [latent_dim + cond_dim, *reversed(fc)]
    dec: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(dec_fc_sizes[:-1], dec_fc_sizes[1:])):
        dec.append(_block(TiedLinear(enc_linears[-1 - i]) if tied_weights else nn.Linear(a, b), activation))
    dec.append(nn.Unflatten(1, (chans[-1], *sizes[-1])))
    for i in reversed(range(len(convs))):
        target, source = sizes[i], sizes[i + 1]
        # output padding 0 or 1 per axis recovers odd sizes such as 3 -> 7 -> 14 -> 28
        out_pad = tuple(t - ((s - 1) * 2 - 2 * pad + kernel_size) for t, s in zip(target, source))
        if tied_weights:
            layer: nn.Module = TiedConvTranspose2d(convs[i], out_pad)
        else:
            layer = nn.ConvTranspose2d(chans[i + 1], chans[i], kernel_size, 2, pad, output_padding=out_pad)
        last = i == 0
        dec.append(_block(layer, None if last else activation, None if last else norm(chans[i])))
    decoder = nn.Sequential(*dec)
    return _conditioned(encoder, decoder, cond_dim, tied_weights, planes=True)
