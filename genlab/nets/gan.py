"""Generator and discriminator networks of the GAN family, built from config by partial functions.

A GAN config names a builder (``_target_: genlab.nets.gan.dcgan``, ``_partial_: true``)
with its layer options; the model completes it with the data's sample shape, the size of the
generator's input and of the condition, and gets back ``GANNets``:

    generator: z (B, latent_dim) [, c (B, cond_dim)] -> raw output (B, *in_shape)
    body:      x (B, *in_shape) [, c (B, cond_dim)] -> features (B, features)

The model puts its own heads on the discriminator's body (the real/fake logit, InfoGAN's Q)
and its own output map on the generator (tanh for images in [0, 1], none for points).
"""

from __future__ import annotations

import math
from typing import NamedTuple

from torch import nn

from genlab.errors import IncompatibleError
from genlab.nets.layers import activation as make_activation
from genlab.nets.layers import conditioned, image_shape, needs

MAX_FINAL_SIZE = 7  # dcgan halves the image until its smaller side is at most this (28 -> 14 -> 7)


class GANNets(NamedTuple):
    generator: nn.Module
    body: nn.Module  # the discriminator without its output layer
    features: int  # width of the body's output


def _players(generator: nn.Module, body: nn.Module, cond_dim: int, planes: bool) -> tuple[nn.Module, nn.Module]:
    """Both nets as they are for cond_dim = 0; else both also take c (B, cond_dim): concatenated
    to z, and to the flattened input (MLP) or as cond_dim constant input planes (conv)."""
    body, generator = conditioned(body, generator, cond_dim, planes)
    return generator, body


def mlp_gan(
    *,
    in_shape: tuple[int, ...],
    latent_dim: int,
    cond_dim: int = 0,
    hidden: list[int] = (256, 256),  # type: ignore[assignment]
    activation: str = "leaky_relu",
    batch_norm: bool = False,
) -> GANNets:
    """MLP generator latent-h1-...-hk-D and discriminator body D-hk-...-h1 (points or flattened images).

    ``batch_norm`` normalises the generator's hidden layers only: the discriminator sees real
    and fake batches separately, and a per-sample critic (WGAN-GP) must not mix samples.
    """
    d = math.prod(in_shape)
    g_sizes = [latent_dim + cond_dim, *hidden]
    g_blocks: list[nn.Module] = []
    for a, b in zip(g_sizes[:-1], g_sizes[1:]):
        g_blocks += [nn.Linear(a, b), *([nn.BatchNorm1d(b)] if batch_norm else []), make_activation(activation)]
    generator = nn.Sequential(*g_blocks, nn.Linear(g_sizes[-1], d), nn.Unflatten(1, tuple(in_shape)))
    d_sizes = [d + cond_dim, *reversed(hidden)]
    d_blocks: list[nn.Module] = [nn.Flatten()]
    for a, b in zip(d_sizes[:-1], d_sizes[1:]):
        d_blocks += [nn.Linear(a, b), make_activation(activation)]
    generator, body = _players(generator, nn.Sequential(*d_blocks), cond_dim, planes=False)
    return GANNets(generator, body, d_sizes[-1])


def layer_sizes(h: int, w: int) -> list[tuple[int, int]]:
    """Image sizes through dcgan's stride-2 layers (kernel 4, padding 1: ⌊s/2⌋ per axis), from
    (h, w) until the smaller side is at most MAX_FINAL_SIZE; at least one layer.

    28 -> 14 -> 7, 32 -> 16 -> 8 -> 4, 64 -> 32 -> 16 -> 8 -> 4, 8 -> 4.
    """
    sizes = [(h, w)]
    while len(sizes) == 1 or min(sizes[-1]) > MAX_FINAL_SIZE:
        sizes.append((sizes[-1][0] // 2, sizes[-1][1] // 2))
    return sizes


@needs(image=True)
def dcgan(
    *,
    in_shape: tuple[int, ...],
    latent_dim: int,
    cond_dim: int = 0,
    width: int = 64,
    max_width: int = 512,
    activation: str = "leaky_relu",
    g_norm: str = "batch",
    d_norm: str = "batch",
) -> GANNets:
    """DCGAN (Radford et al. 2016) nets with the layer plan computed from the image size.

    Discriminator: stride-2 4x4 convolutions with width, 2·width, ... channels (at most
    max_width), normalisation from the second layer on, the activation after each; the body
    ends flattened (its output layer, the model's Linear head, sees the whole last map, as
    DCGAN's final full-size convolution does). Generator, the mirror: a Linear projection of z
    to the last map, then transposed convolution -> batch norm -> activation per layer up to
    the image (output padding 0 or 1 per axis recovers odd sizes: 7 -> 14 -> 28, 3 -> 7).
    ``d_norm``: batch, layer (per-sample, for WGAN-GP's critic) or none.
    """
    c, h, w = image_shape(in_shape)
    sizes = layer_sizes(h, w)
    if min(sizes[-1]) < 1:
        raise IncompatibleError(f"{h}x{w} images are too small for a stride-2 convolution")
    chans = [c] + [min(width * 2**i, max_width) for i in range(len(sizes) - 1)]
    last = chans[-1] * sizes[-1][0] * sizes[-1][1]

    d_layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(chans[:-1], chans[1:])):
        d_layers.append(nn.Conv2d(a + (cond_dim if i == 0 else 0), b, 4, 2, 1))
        if i > 0 and d_norm != "none":  # none on the input layer: DCGAN found it destabilising
            d_layers.append(nn.BatchNorm2d(b) if d_norm == "batch" else nn.GroupNorm(1, b))
        d_layers.append(make_activation(activation))
    body = nn.Sequential(*d_layers, nn.Flatten())

    norm = (lambda n: [nn.BatchNorm2d(n)]) if g_norm == "batch" else (lambda n: [])
    g_layers: list[nn.Module] = [
        nn.Linear(latent_dim + cond_dim, last), nn.Unflatten(1, (chans[-1], *sizes[-1])),
        *norm(chans[-1]), make_activation(activation),
    ]
    for i in reversed(range(len(chans) - 1)):
        target, source = sizes[i], sizes[i + 1]
        out_pad = tuple(t - 2 * s for t, s in zip(target, source))  # (s-1)·2 - 2 + 4 = 2s before padding
        g_layers.append(nn.ConvTranspose2d(chans[i + 1], chans[i], 4, 2, 1, output_padding=out_pad))
        if i > 0:
            g_layers += [*norm(chans[i]), make_activation(activation)]
    generator, body = _players(nn.Sequential(*g_layers), body, cond_dim, planes=True)
    return GANNets(generator, body, last)

