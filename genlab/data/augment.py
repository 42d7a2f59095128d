"""The lectures' disturbances of an image — crop and rescale, rotation, translation, blur, noise, colour —
drawn independently for every image of a batch and applied on the batch's device.

Contrastive models (``simclr``) learn that x and a disturbed x̃ are the same thing, so each image of a
batch needs its own draw. ``torchvision.transforms.v2`` draws one set of parameters per call: applied
to a batch tensor, every image would get the same rotation. kornia's augmentation modules draw per
image and apply them as batched tensor operations (one ``grid_sample`` for a crop or an affine map, one
grouped convolution for the blurs), with no Python loop over images; their random draws come from
torch's generator, so a seeded run (and a resumed one) sees the same views.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated

import kornia.augmentation as K
import torch
from torch import Tensor, nn

from genlab.config.fields import Bounds, checked
from genlab.errors import ArgumentError, IncompatibleError

KEY = "model.views"  # where a model configures its disturbances: for the data checks made at fit


def _pair(name: str, value: Sequence[float] | None, lo: float, hi: float) -> tuple[float, float] | None:
    """[a, b] with lo <= a <= b <= hi, or None; an ArgumentError naming the argument otherwise."""
    if value is None:
        return None
    pair = list(value) if isinstance(value, Sequence) and not isinstance(value, str) else None
    numbers = pair and len(pair) == 2 and all(isinstance(v, (int, float)) for v in pair)
    if not (numbers and lo <= pair[0] <= pair[1] <= hi):
        raise ArgumentError("Disturbances", name, lambda key: (
            f"{key}={value}: give [low, high] with {lo} <= low <= high <= {hi} (or null)"))
    return float(pair[0]), float(pair[1])


Probability = Annotated[float, Bounds(ge=0, le=1)]


class Disturbances(nn.Module):
    """x (B, C, H, W) in [0, 1] -> one disturbed view (B, C, H, W), every image with its own parameters.

    In this order (SimCLR's): a random crop of ``crop_scale`` of the area (aspect ratio 3/4..4/3) rescaled
    to the full size; a horizontal flip (``flip``); rotation by up to ±``rotation`` degrees and translation
    by up to ``translate`` of the size; colour jitter of strength ``colour`` (RGB only: brightness,
    contrast and saturation 0.8·s, hue 0.2·s) with probability ``colour_p`` and greyscale with
    ``grayscale_p``; Gaussian blur with σ in ``blur_sigma`` with probability ``blur_p``; additive Gaussian
    noise of std ``noise_std`` with probability ``noise_p``; finally the values clipped to [0, 1].
    A disturbance set to 0 / null is left out.
    """

    @checked
    def __init__(
        self, *, crop_scale: Sequence[float] | None = (0.5, 1.0), flip: bool = False,
        rotation: Annotated[float, Bounds(ge=0, le=180)] = 15.0,  # degrees, ±
        translate: Annotated[float, Bounds(ge=0, le=1)] = 0.1,  # fraction of the size, ±
        colour: Annotated[float, Bounds(ge=0)] = 0.0, colour_p: Probability = 0.8, grayscale_p: Probability = 0.0,
        blur_sigma: Sequence[float] | None = (0.1, 1.0), blur_p: Probability = 0.5,
        noise_std: Annotated[float, Bounds(ge=0)] = 0.1, noise_p: Probability = 0.5,
    ) -> None:
        super().__init__()
        self.crop_scale = _pair("crop_scale", crop_scale, 1e-3, 1.0)
        self.blur_sigma = _pair("blur_sigma", blur_sigma, 1e-3, 100.0)
        self.flip, self.rotation, self.translate = bool(flip), float(rotation), float(translate)
        self.colour, self.colour_p, self.grayscale_p = float(colour), float(colour_p), float(grayscale_p)
        self.blur_p, self.noise_std, self.noise_p = float(blur_p), float(noise_std), float(noise_p)
        self.steps = nn.Sequential()  # built for the data's shape by ``fit``

    def fit(self, shape: tuple[int, ...]) -> Disturbances:
        """Build the steps for images of ``shape`` (C, H, W); IncompatibleError for colour on grey images."""
        if len(shape) != 3:
            raise IncompatibleError(f"disturbances need images (C, H, W), not samples of shape {tuple(shape)}")
        c, h, w = shape
        if c != 3 and (self.colour > 0 or self.grayscale_p > 0):
            raise IncompatibleError(f"{KEY}.colour and {KEY}.grayscale_p jitter RGB images, and these have {c} "
                                    f"channel(s): set {KEY}.colour=0 {KEY}.grayscale_p=0")
        steps: list[nn.Module] = []
        if self.crop_scale is not None:
            steps.append(K.RandomResizedCrop((h, w), scale=self.crop_scale, ratio=(3 / 4, 4 / 3)))
        if self.flip:
            steps.append(K.RandomHorizontalFlip())
        if self.rotation > 0 or self.translate > 0:
            translate = (self.translate, self.translate) if self.translate > 0 else None
            steps.append(K.RandomAffine(degrees=self.rotation, translate=translate, p=1.0))
        if self.colour > 0:
            s = self.colour
            steps.append(K.ColorJitter(0.8 * s, 0.8 * s, 0.8 * s, min(0.5, 0.2 * s), p=self.colour_p))
        if self.grayscale_p > 0:
            steps.append(K.RandomGrayscale(p=self.grayscale_p))
        if self.blur_sigma is not None and self.blur_p > 0:
            # a kernel of about ±2σ, odd, at most the image's size
            k = max(3, min(2 * int(2 * self.blur_sigma[1]) + 1, (min(h, w) - 1) // 2 * 2 + 1))
            steps.append(K.RandomGaussianBlur((k, k), self.blur_sigma, p=self.blur_p))
        if self.noise_std > 0 and self.noise_p > 0:
            steps.append(K.RandomGaussianNoise(std=self.noise_std, p=self.noise_p))
        self.steps = nn.Sequential(*steps)
        return self

    def forward(self, x: Tensor) -> Tensor:
        """x (B, C, H, W) in [0, 1] -> a disturbed view (B, C, H, W) in [0, 1] of the same dtype."""
        if len(self.steps) == 0:
            return x
        # kornia computes its sampling grids in float32; bf16 batches are disturbed in float32 and cast back
        return self.steps(x.float()).clamp_(0.0, 1.0).to(x.dtype)

    def describe(self) -> str:
        """The disturbances in words, for figure titles and logs."""
        parts = []
        if self.crop_scale is not None:
            parts.append(f"crop {self.crop_scale[0]:g}-{self.crop_scale[1]:g} of the area")
        if self.flip:
            parts.append("flip")
        if self.rotation > 0:
            parts.append(f"rotation ±{self.rotation:g}°")
        if self.translate > 0:
            parts.append(f"shift ±{self.translate:g}")
        if self.colour > 0:
            parts.append(f"colour {self.colour:g}")
        if self.blur_sigma is not None and self.blur_p > 0:
            parts.append(f"blur σ {self.blur_sigma[0]:g}-{self.blur_sigma[1]:g} (p {self.blur_p:g})")
        if self.noise_std > 0 and self.noise_p > 0:
            parts.append(f"noise {self.noise_std:g} (p {self.noise_p:g})")
        return ", ".join(parts) or "none"


def views(disturb: nn.Module, x: Tensor, n: int = 2) -> Tensor:
    """n independent disturbed views of a batch: (n, B, *shape)."""
    return torch.stack([disturb(x) for _ in range(n)])
