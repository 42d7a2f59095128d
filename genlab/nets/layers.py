"""Building blocks shared by the network builders."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from genlab.capabilities import Needs
from genlab.errors import IncompatibleError

Builder = TypeVar("Builder", bound=Callable)

ACTIVATIONS = {
    "relu": nn.ReLU, "leaky_relu": lambda: nn.LeakyReLU(0.2), "elu": nn.ELU, "gelu": nn.GELU,
    "silu": nn.SiLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "none": nn.Identity,
}


def needs(**what: object) -> Callable[[Builder], Builder]:
    """Declare what a builder needs from the data (``@needs(image=True)``): read by the model
    (``genlab.capabilities.needs_of``) and by the tests, before any network is built."""

    def mark(fn: Builder) -> Builder:
        fn.needs = Needs(**what)  # type: ignore[attr-defined]
        return fn

    return mark


def activation(name: str) -> nn.Module:
    """An activation module by name (``none`` is the identity)."""
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation '{name}'; choose from {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[name]()


def image_shape(in_shape: tuple[int, ...]) -> tuple[int, int, int]:
    """(C, H, W) of an image sample; IncompatibleError for anything else (a builder's own check)."""
    if len(in_shape) != 3:
        raise IncompatibleError(
            f"a convolutional network needs image data (C, H, W), but the samples have shape {tuple(in_shape)}"
        )
    return in_shape[0], in_shape[1], in_shape[2]


def block(layer: nn.Module, act: str | None, norm: nn.Module | None = None, dropout: float = 0.0) -> nn.Sequential:
    """layer -> [norm] -> [activation] -> [dropout], as one addressable block."""
    parts = [layer] + ([norm] if norm is not None else []) + ([activation(act)] if act else [])
    return nn.Sequential(*parts, *([nn.Dropout(dropout)] if dropout > 0 else []))


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

    c is concatenated to the flattened input (MLP encoders, all decoders and generators) or,
    with ``planes=True``, appended as cond_dim constant input planes (B, cond_dim, H, W) for
    convolutional inputs. ``net`` is the plain Sequential, which stays addressable by block.
    """

    def __init__(self, net: nn.Module, planes: bool = False) -> None:
        super().__init__()
        self.net = net
        self.planes = planes

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        c = c.to(x.dtype)
        if self.planes:
            return self.net(torch.cat([x, c[:, :, None, None].expand(-1, -1, *x.shape[-2:])], dim=1))
        return self.net(torch.cat([x.flatten(1), c], dim=1))


def conditioned(first: nn.Module, second: nn.Module, cond_dim: int, planes: bool) -> tuple[nn.Module, nn.Module]:
    """Both nets as they are for cond_dim = 0; else both take c (B, cond_dim) as a second argument:
    ``first`` (the one reading data: an encoder, a discriminator) as constant planes when
    ``planes``, ``second`` (reading a code) concatenated."""
    if cond_dim == 0:
        return first, second
    return Conditioned(first, planes=planes), Conditioned(second)
