"""Built-in datasets that need no download: sklearn digits, rendered sprites, 2-D point sets.

Each one is generated or read in well under a second for its default size, so the test
suite and quick experiments run anywhere, offline.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from genlab.data.base import DataInfo, Split, Splits, TensorDataModule
from genlab.errors import UserError

# Added to the data seed for a dataset's own randomness (train/test split, generation), so
# it is a different random stream from the one the base class uses to carve out val.
SALT = 0x5EED


def generator(seed: int) -> torch.Generator:
    """A CPU generator for a dataset's own randomness, distinct from the val-split stream."""
    return torch.Generator().manual_seed(seed + SALT)


def resize_images(x: Tensor, size: int, chunk: int = 2048) -> Tensor:
    """Bilinear resize (N, C, H, W) -> (N, C, size, size), keeping dtype and range.

    uint8 stays uint8 (rounded), float stays float in [0, 1]; chunked to bound memory.
    """
    if tuple(x.shape[-2:]) == (size, size):
        return x
    out = []
    for part in x.split(chunk):
        y = F.interpolate(part.float(), size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        out.append(y.round_().clamp_(0, 255).to(torch.uint8) if x.dtype == torch.uint8 else y.clamp_(0, 1))
    return torch.cat(out)


def split_by_fraction(data: Split, test_fraction: float, seed: int) -> Splits:
    """A fixed random train/test split of one pool (val is carved from train by the base)."""
    perm = torch.randperm(len(data), generator=generator(seed))
    n_test = int(round(test_fraction * len(data)))
    return Splits(train=data.subset(perm[n_test:]), test=data.subset(perm[:n_test]))


class DigitsDataModule(TensorDataModule):
    """scikit-learn's 1,797 handwritten 8x8 digits, scaled to [0, 1] float32; 80/20 train/test."""

    def __init__(
        self, image_size: int = 8,
        **options: Any,
    ) -> None:
        super().__init__(**options)
        self.image_size = image_size

    @property
    def info(self) -> DataInfo:
        s = self.image_size
        return DataInfo("digits", (1, s, s), 10, class_names=tuple(str(i) for i in range(10)))

    def load(self) -> Splits:
        from sklearn.datasets import load_digits  # bundled with scikit-learn: no download

        d = load_digits()
        x = torch.from_numpy(d.images).float().div_(16.0).unsqueeze(1)  # (1797, 1, 8, 8), 0..16 -> [0, 1]
        x = resize_images(x, self.image_size)
        return split_by_fraction(Split(x, torch.from_numpy(d.target).long()), 0.2, self.options.seed)


# ---- dSprites-like sprites ----------------------------------------------------------------
SHAPES = ("square", "ellipse", "heart")
SPRITE_RADIUS = 0.15  # half-extent of a scale-1 sprite, as a fraction of the canvas side
SCALE_RANGE = (0.5, 1.0)
# The heart (u²+v²−1)³ − u²v³ ≤ 0 has its area centroid at v = 0.2935 and reaches 1.29 from
# it; shifting by that and stretching by 1.1 centres it with a radius of about 1.18.
HEART_STRETCH, HEART_SHIFT = 1.1, 0.2935
# Largest distance from the centre to a sprite point in local units: the square's corner.
MAX_LOCAL_RADIUS = math.sqrt(2.0)


def _inside(shape: str, u: Tensor, v: Tensor) -> Tensor:
    """Implicit inequality of a sprite in local coordinates (u right, v up)."""
    if shape == "square":
        return torch.maximum(u.abs(), v.abs()) <= 1.0
    if shape == "ellipse":  # half-axes 1 and 0.5: elongated, so rotation shows
        return u.square() + (2.0 * v).square() <= 1.0
    u, v = u * HEART_STRETCH, v * HEART_STRETCH + HEART_SHIFT
    return (u.square() + v.square() - 1.0).pow(3) - u.square() * v.pow(3) <= 0.0


def render_sprites(factors: Tensor, shapes: tuple[str, ...], size: int, chunk: int = 1024) -> Tensor:
    """Render factors (N, 5) = (shape index, scale, rotation, x, y) to uint8 images (N, 1, size, size).

    x, y are the sprite centre as fractions of the canvas (x along columns, y down the rows);
    each pixel centre is mapped back into the sprite's frame (inverse translation, rotation,
    scale) and the shape's inequality is tested there, a chunk of images at a time.
    """
    centres = (torch.arange(size, dtype=torch.float32) + 0.5) / size
    gy, gx = torch.meshgrid(centres, centres, indexing="ij")  # (S, S) each: row and column coordinates
    out = torch.empty(len(factors), 1, size, size, dtype=torch.uint8)
    for start in range(0, len(factors), chunk):
        f = factors[start : start + chunk, :, None, None]  # (B, 5, 1, 1) broadcast against the grid
        k, scale, rot, cx, cy = f.unbind(1)
        dx, dy = gx - cx, gy - cy  # (B, S, S)
        cos, sin = rot.cos(), rot.sin()
        r = SPRITE_RADIUS * scale
        u = (cos * dx + sin * dy) / r
        v = -(-sin * dx + cos * dy) / r  # rows grow downwards; v points up so the heart stands upright
        mask = torch.zeros_like(u, dtype=torch.bool)
        for i, name in enumerate(shapes):
            sel = k[:, 0, 0] == i
            mask[sel] = _inside(name, u[sel], v[sel])
        out[start : start + chunk, 0] = mask.to(torch.uint8) * 255
    return out


class ShapesDataModule(TensorDataModule):
    """Binary sprites with known generating factors (dSprites-like); labels are the shape.

    Factors per image: shape index, scale in [0.5, 1], rotation in [0, 2π) radians (the
    square repeats every π/2 and the ellipse every π), and the centre x, y as canvas
    fractions, kept far enough from the border that every sprite fits. ``fixed`` holds
    some of scale, rotation, x, y at one value for every image (a manifold of the others:
    ``{scale: 1, rotation: 0}`` with one shape leaves the 2-D manifold of positions); the
    factors a dataset reports (``info.factor_names``, ``Split.factors``) are those that vary.
    85/15 train/test.
    """

    factor_names = ("shape", "scale", "rotation", "x", "y")

    def __init__(
        self, image_size: int = 32, n_samples: int = 20000, shapes: list[str] | tuple[str, ...] = SHAPES,
        fixed: Mapping[str, float] | None = None, **options: Any,
    ) -> None:
        super().__init__(**options)
        self.shapes = tuple(shapes)
        unknown = [s for s in self.shapes if s not in SHAPES]
        if unknown or not self.shapes or len(set(self.shapes)) != len(self.shapes):
            raise UserError(
                f"data.shapes={list(self.shapes)} is invalid: give a non-empty list of distinct shapes "
                f"from {', '.join(SHAPES)}."
            )
        self.image_size = image_size
        self.n_samples = n_samples
        self.fixed = {str(k): float(v) for k, v in (fixed or {}).items()}
        for name, value in self.fixed.items():
            if name not in self.factor_names[1:]:
                raise UserError(f"data.fixed.{name} is not a factor that can be fixed; choose from "
                                f"{', '.join(self.factor_names[1:])} (one shape: data.shapes=[heart])")
            lo, hi = self.factor_range(name)
            if not lo <= value <= hi:
                raise UserError(f"data.fixed.{name}={value:g} is out of range: it must lie in [{lo:g}, {hi:g}]")

    def factor_range(self, name: str) -> tuple[float, float]:
        """The interval a continuous factor is drawn from (positions keep the sprite on the canvas)."""
        if name == "scale":
            return SCALE_RANGE
        if name == "rotation":
            return 0.0, 2 * math.pi
        margin = SPRITE_RADIUS * SCALE_RANGE[1] * MAX_LOCAL_RADIUS + 1.0 / self.image_size  # plus a pixel of slack
        return margin, 1 - margin

    @property
    def varying(self) -> tuple[int, ...]:
        """The columns of ``sample_factors`` that vary: the shape if there are several, and every factor not fixed."""
        return tuple(k for k, name in enumerate(self.factor_names)
                     if name not in self.fixed and (name != "shape" or len(self.shapes) > 1))

    @property
    def info(self) -> DataInfo:
        s = self.image_size
        names = tuple(self.factor_names[k] for k in self.varying)
        return DataInfo("shapes", (1, s, s), len(self.shapes), names, class_names=self.shapes)

    def sample_factors(self) -> Tensor:
        """Draw (n_samples, 5) factors from the seed; positions keep the sprite on the canvas."""
        n, g = self.n_samples, generator(self.options.seed)
        k = torch.randint(len(self.shapes), (n,), generator=g).float()
        lo, hi = SCALE_RANGE
        scale = lo + (hi - lo) * torch.rand(n, generator=g)
        rot = 2 * math.pi * torch.rand(n, generator=g)
        lo, hi = self.factor_range("x")
        xy = lo + (hi - lo) * torch.rand(n, 2, generator=g)
        factors = torch.stack([k, scale, rot, xy[:, 0], xy[:, 1]], dim=1)
        for name, value in self.fixed.items():  # drawn all the same, so that fixing one leaves the others' draws
            factors[:, self.factor_names.index(name)] = value
        return factors

    def load(self) -> Splits:
        factors = self.sample_factors()
        x = render_sprites(factors, self.shapes, self.image_size)
        # Samples are i.i.d., so a contiguous cut is already a random split.
        n_train = int(round(0.85 * self.n_samples))
        data = Split(x, factors[:, 0].long(), factors[:, list(self.varying)])
        idx = torch.arange(self.n_samples)
        return Splits(train=data.subset(idx[:n_train]), test=data.subset(idx[n_train:]))


# ---- 2-D point sets -------------------------------------------------------------------------
TOY_KINDS = ("line", "swiss_roll", "moons", "ring8", "grid25")
LINE_DIRECTION = (0.98, 0.2)  # w in x = h·w: the 1-D manifold of the lecture


def toy_modes(kind: str) -> Tensor | None:
    """Mode centres (K, 2) of the Gaussian mixtures; None for the other kinds."""
    if kind == "ring8":
        a = torch.arange(8) * (2 * math.pi / 8)
        return 2.0 * torch.stack([a.cos(), a.sin()], dim=1)
    if kind == "grid25":
        c = torch.arange(-4.0, 5.0, 2.0)
        return torch.cartesian_prod(c, c)  # (25, 2), row-major over (first, second) coordinate
    return None


class Toy2dDataModule(TensorDataModule):
    """2-D point sets for density models and GANs; float32 points, 80/20 train/test.

    ``modes`` holds the mixture centres (K, 2) for ring8/grid25 (None otherwise); ``info`` passes
    them on, with the components' standard deviation, for counting the modes a generator covers.
    """

    def __init__(
        self, kind: str = "ring8", n_samples: int = 10000, noise: float = 0.05,
        **options: Any,
    ) -> None:
        super().__init__(**options)
        if kind not in TOY_KINDS:
            raise UserError(f"data.kind={kind!r} is not one of {', '.join(TOY_KINDS)}.")
        self.kind = kind
        self.n_samples = n_samples
        self.noise = noise
        self.modes = toy_modes(kind)

    @property
    def info(self) -> DataInfo:
        num_classes = {"moons": 2, "ring8": 8, "grid25": 25}.get(self.kind)
        factor_names = {"line": ("h",), "swiss_roll": ("t",)}.get(self.kind, ())
        class_names = ("upper", "lower") if self.kind == "moons" else ()
        modes = None if self.modes is None else tuple(tuple(m) for m in self.modes.tolist())
        return DataInfo("toy2d", (2,), num_classes, factor_names, bounded=False, class_names=class_names,
                        modes=modes, mode_std=None if modes is None else self.noise)

    def generate(self) -> Split:
        """All n_samples points (N, 2) with their labels or factors, from the seed."""
        n, g = self.n_samples, generator(self.options.seed)
        noise = self.noise * torch.randn(n, 2, generator=g)
        if self.kind == "line":
            h = torch.randn(n, 1, generator=g)
            return Split(h * torch.tensor(LINE_DIRECTION) + noise, factors=h)
        if self.kind == "swiss_roll":
            t = 1.5 * math.pi * (1 + 2 * torch.rand(n, 1, generator=g))  # angle, 1.5π..4.5π
            return Split(t * torch.cat([t.cos(), t.sin()], dim=1) / 5.0 + noise, factors=t)
        if self.kind == "moons":
            from sklearn.datasets import make_moons

            x, y = make_moons(n, noise=self.noise, random_state=(self.options.seed + SALT) % 2**32)
            return Split(torch.from_numpy(x).float(), torch.from_numpy(y).long())
        assert self.modes is not None  # ring8 / grid25: a Gaussian around a uniformly chosen mode
        y = torch.randint(len(self.modes), (n,), generator=g)
        return Split(self.modes[y] + noise, y)

    def load(self) -> Splits:
        data = self.generate()
        n_train = int(round(0.8 * self.n_samples))  # i.i.d. samples: a contiguous cut is a random split
        idx = torch.arange(self.n_samples)
        return Splits(train=data.subset(idx[:n_train]), test=data.subset(idx[n_train:]))
