"""Encoder/decoder pairs for the autoencoder and VAE families.

A model config names a builder (``_target_: genlab.nets.autoencoder.mlp_pair``, ``_partial_: true``)
with its layer options; the model completes it with the data's sample shape and its code sizes,
and gets back ``EncoderDecoder(encoder, decoder)``:

    encoder: x (B, *in_shape) -> (B, enc_out)
    decoder: h (B, latent_dim) -> raw output (B, *in_shape)  (logits or values; the model maps them)

Encoders and decoders are ``nn.Sequential``s of blocks (one Linear or conv layer with its
normalisation and activation each), so greedy layer-wise training can address block i.
"""

from __future__ import annotations

import math
from typing import NamedTuple

from torch import nn

from genlab.errors import IncompatibleError
from genlab.nets.layers import TiedConvTranspose2d, TiedLinear, block, conditioned, image_shape, needs


class EncoderDecoder(NamedTuple):
    encoder: nn.Module  # x (B, *in_shape) [, c (B, cond_dim)] -> (B, enc_out)
    decoder: nn.Module  # h (B, latent_dim) [, c (B, cond_dim)] -> raw output (B, *in_shape)


def _untied_check(tied_weights: bool, enc_out: int, latent_dim: int, cond_dim: int) -> None:
    if tied_weights and enc_out != latent_dim:
        raise ValueError("tied_weights needs an encoder output of the code size (not a mean and variance)")
    if tied_weights and cond_dim:
        raise ValueError("tied_weights cannot be combined with a condition (cond_dim > 0): the shapes differ")


def mlp_pair(
    *, in_shape: tuple[int, ...], enc_out: int, latent_dim: int, cond_dim: int = 0,  # what the model supplies
    hidden: list[int] = (512, 256),  # type: ignore[assignment]
    activation: str = "relu", tied_weights: bool = False, batch_norm: bool = False, dropout: float = 0.0,
) -> EncoderDecoder:
    """MLP encoder D-h1-...-hk-enc_out and a mirrored decoder latent-hk-...-h1-D.

    cond_dim > 0: both take a condition c (B, cond_dim) as a second argument, concatenated
    to the flattened input (the first layers take D + cond_dim and latent_dim + cond_dim).
    ``dropout``: the rate of dropout after every hidden layer of both (not on the code or the output).
    """
    _untied_check(tied_weights, enc_out, latent_dim, cond_dim)
    d = math.prod(in_shape)
    sizes = [d + cond_dim, *hidden]
    enc_blocks: list[nn.Module] = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        enc_blocks.append(block(nn.Linear(a, b), activation, nn.BatchNorm1d(b) if batch_norm else None, dropout))
    enc_blocks.append(block(nn.Linear(sizes[-1], enc_out), None))
    encoder = nn.Sequential(nn.Flatten(), *enc_blocks)

    linears = [blk[0] for blk in enc_blocks]
    dec_sizes = [latent_dim + cond_dim, *reversed(hidden), d]
    dec_blocks: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(dec_sizes[:-1], dec_sizes[1:])):
        layer = TiedLinear(linears[-1 - i]) if tied_weights else nn.Linear(a, b)
        last = i == len(dec_sizes) - 2
        norm = nn.BatchNorm1d(b) if batch_norm and not last else None
        dec_blocks.append(block(layer, None if last else activation, norm, 0.0 if last else dropout))
    decoder = nn.Sequential(*dec_blocks, nn.Unflatten(1, tuple(in_shape)))
    return EncoderDecoder(*conditioned(encoder, decoder, cond_dim, planes=False))


def _conv_out(size: int, k: int, pad: int) -> int:
    return (size + 2 * pad - k) // 2 + 1


@needs(image=True)
def conv_pair(
    *, in_shape: tuple[int, ...], enc_out: int, latent_dim: int, cond_dim: int = 0,  # what the model supplies
    channels: list[int] = (32, 64),  # type: ignore[assignment]
    kernel_size: int = 4, hidden: list[int] = (),  # type: ignore[assignment]
    activation: str = "relu", tied_weights: bool = False, batch_norm: bool = False,
) -> EncoderDecoder:
    """Stride-2 convolutions then linear layers; the decoder mirrors them with transposed convs.

    Every stride-2 layer halves the image (28 -> 14 -> 7); the decoder's output padding is
    chosen per layer so it returns exactly the input size, whatever it was. cond_dim > 0:
    both take a condition c (B, cond_dim) as a second argument, given to the encoder as
    cond_dim constant input planes and to the decoder's first Linear (latent_dim + cond_dim).
    """
    _untied_check(tied_weights, enc_out, latent_dim, cond_dim)
    c, h, w = image_shape(in_shape)
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
    enc_fc = [block(nn.Linear(a, b), activation) for a, b in zip(fc[:-1], fc[1:])]
    encoder = nn.Sequential(
        *[block(conv, activation, norm(conv.out_channels)) for conv in convs],
        nn.Flatten(), *enc_fc, block(nn.Linear(fc[-1], enc_out), None),
    )

    enc_linears = [blk[0] for blk in enc_fc] + [encoder[-1][0]]
    dec_fc_sizes = [latent_dim + cond_dim, *reversed(fc)]
    dec: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(dec_fc_sizes[:-1], dec_fc_sizes[1:])):
        dec.append(block(TiedLinear(enc_linears[-1 - i]) if tied_weights else nn.Linear(a, b), activation))
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
        dec.append(block(layer, None if last else activation, None if last else norm(chans[i])))
    decoder = nn.Sequential(*dec)
    return EncoderDecoder(*conditioned(encoder, decoder, cond_dim, planes=True))
