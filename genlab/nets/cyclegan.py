"""CycleGAN's networks (Zhu et al. 2017), scaled down: a ResNet generator and a PatchGAN discriminator.

Each builder makes one network of (B, C, H, W) images; the model builds two of each (A -> B, B -> A;
a judge of A, a judge of B).
"""

from __future__ import annotations

from torch import Tensor, nn

from genlab.errors import IncompatibleError
from genlab.nets.layers import image_shape, needs


def _norm(kind: str, channels: int) -> nn.Module:
    return nn.InstanceNorm2d(channels) if kind == "instance" else nn.BatchNorm2d(channels)


class ResidualBlock(nn.Module):
    """x + (reflect-pad, 3x3 conv, norm, ReLU, reflect-pad, 3x3 conv, norm)(x)."""

    def __init__(self, channels: int, norm: str) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, 3), _norm(norm, channels), nn.ReLU(),
            nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, 3), _norm(norm, channels),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


@needs(image=True)
def resnet_generator(*, in_shape: tuple[int, ...], channels: int = 32, n_down: int = 1, n_blocks: int = 3,
                     norm: str = "instance") -> nn.Module:
    """The paper's ResNet generator, scaled down: 7x7 conv to ``channels``, ``n_down`` stride-2
    3x3 convs (doubling the channels), ``n_blocks`` residual blocks, as many transposed convs back,
    7x7 conv to C and tanh. (B, C, H, W) in [-1, 1] -> (B, C, H, W) in [-1, 1]; H, W divisible by 2^n_down.
    """
    c, h, w = image_shape(in_shape)
    if h % 2**n_down or w % 2**n_down:
        raise IncompatibleError(f"the CycleGAN generator halves {h}x{w} images {n_down} times: the sides must be "
                                f"divisible by {2**n_down} (set data.image_size or model.generator.n_down)")
    layers: list[nn.Module] = [nn.ReflectionPad2d(3), nn.Conv2d(c, channels, 7), _norm(norm, channels), nn.ReLU()]
    k = channels
    for _ in range(n_down):  # (B, k, H, W) -> (B, 2k, H/2, W/2)
        layers += [nn.Conv2d(k, 2 * k, 3, stride=2, padding=1), _norm(norm, 2 * k), nn.ReLU()]
        k *= 2
    layers += [ResidualBlock(k, norm) for _ in range(n_blocks)]
    for _ in range(n_down):  # (B, k, H', W') -> (B, k/2, 2H', 2W')
        layers += [nn.ConvTranspose2d(k, k // 2, 3, stride=2, padding=1, output_padding=1), _norm(norm, k // 2),
                   nn.ReLU()]
        k //= 2
    layers += [nn.ReflectionPad2d(3), nn.Conv2d(k, c, 7), nn.Tanh()]
    return nn.Sequential(*layers)


@needs(image=True)
def patch_discriminator(*, in_shape: tuple[int, ...], channels: int = 32, n_layers: int = 2,
                        norm: str = "instance") -> nn.Module:
    """PatchGAN: ``n_layers`` stride-2 4x4 convs (channels doubling, no norm on the first), a stride-1
    4x4 conv, then a 4x4 conv to one logit per patch: (B, C, H, W) -> (B, 1, H', W')."""
    c, h, w = image_shape(in_shape)
    side = min(h, w)
    for _ in range(n_layers):
        side //= 2
    if side - 2 < 1:
        raise IncompatibleError(f"{h}x{w} images are too small for a PatchGAN with {n_layers} stride-2 layers "
                                "(lower model.discriminator.n_layers)")
    layers: list[nn.Module] = [nn.Conv2d(c, channels, 4, 2, 1), nn.LeakyReLU(0.2)]
    k = channels
    for _ in range(n_layers - 1):
        layers += [nn.Conv2d(k, 2 * k, 4, 2, 1), _norm(norm, 2 * k), nn.LeakyReLU(0.2)]
        k *= 2
    layers += [nn.Conv2d(k, 2 * k, 4, 1, 1), _norm(norm, 2 * k), nn.LeakyReLU(0.2), nn.Conv2d(2 * k, 1, 4, 1, 1)]
    return nn.Sequential(*layers)
