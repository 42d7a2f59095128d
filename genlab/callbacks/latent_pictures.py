"""Latent-space pictures: the learned manifold of a 2-D code, traversals of single code
dimensions, interpolations and attribute arithmetic between codes, class rows of samples
from the same noise, and the codes for TensorBoard's projector.

Pure functions of a model and data (no Lightning): they ask only for capabilities —
``encode(x, y) -> (B, latent_dim)``, ``decode(h, y) -> x̂``, optionally ``kl_per_dim(x, y) ->
(B, latent_dim)`` — and pass labels as ``y`` to conditional models (``model.conditional``).
Images go in and come out as float tensors (n, C, H, W) on the CPU; ``ImageLogger`` makes
the grids and writes them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from genlab.capabilities import CanDecode, HasCodeKL
from genlab.data.base import Split, TensorDataModule, map_batches
from genlab.metrics.base import seeded
from genlab.models.base import GenerativeModel

THUMBNAIL_PIXELS = 64  # projector sprites: larger images are shrunk to this size


# ---- calling a model ----------------------------------------------------------------------
def _device(model: GenerativeModel) -> torch.device:
    return model.device


def _given(model: GenerativeModel, y: Tensor | None) -> Tensor | None:
    """The labels a model's methods get: y for conditional models, None for the others."""
    return y if model.conditional else None


def encode_all(model: GenerativeModel, x: Tensor, y: Tensor | None = None, batch_size: int = 512) -> Tensor:
    """Codes (N, latent_dim) of x (N, *shape), the posterior means for stochastic encoders;
    labels y (N,) go to conditional encoders."""
    enc = lambda xb, y=None: model.encode(xb, y).flatten(1)  # noqa: E731
    return map_batches(enc, x, _device(model), batch_size, _given(model, y))


def decode(model: GenerativeModel, h: Tensor, y: Tensor | None = None) -> Tensor:
    """Images (n, *shape) decoded from codes h (n, d); labels y (n,) go to conditional decoders."""
    return map_batches(lambda hb, y=None: model.decode(hb, y), h, _device(model), len(h), _given(model, y))


# ---- the pictures ---------------------------------------------------------------------------
def manifold_codes(n: int, lo: float = 0.05, hi: float = 0.95) -> Tensor:
    """Codes (n·n, 2) h = (Φ⁻¹(u), Φ⁻¹(v)) for u, v linearly spaced in [lo, hi], row-major.

    Columns go with h₁ increasing, rows from the top with h₂ decreasing, so the grid reads
    like the scatter of codes (h₂ upwards); Φ⁻¹ spreads the grid as the N(0, I) prior does.
    """
    q = torch.distributions.Normal(0.0, 1.0).icdf(torch.linspace(lo, hi, n))  # (n,)
    return torch.stack([q.repeat(n), q.flip(0).repeat_interleave(n)], dim=1)


def manifold(model: GenerativeModel, n: int = 20, lo: float = 0.05, hi: float = 0.95, y: int | None = None) -> Tensor:
    """Images (n·n, *shape) decoded on ``manifold_codes`` (the lectures' learned-manifold figure)."""
    h = manifold_codes(n, lo, hi)
    return decode(model, h, None if y is None else torch.full((len(h),), y))


def dimension_scores(model: GenerativeModel, x: Tensor, y: Tensor | None, codes: Tensor,
                     batch_size: int = 512) -> Tensor:
    """How much each code dimension is used (latent_dim,): the mean KL per dimension over x when
    the model has ``kl_per_dim``, else the variance of the codes (N, latent_dim)."""
    if isinstance(model, HasCodeKL):
        kl = lambda xb, y=None: model.kl_per_dim(xb, y)  # noqa: E731
        return map_batches(kl, x, _device(model), batch_size, _given(model, y)).mean(0)
    return codes.var(0)


def traversals(model: GenerativeModel, base: Tensor, dims: Tensor, offsets: Tensor, y: int | None = None) -> Tensor:
    """Images (len(dims)·len(offsets), *shape): row r decodes the base code (d,) with dimension
    dims[r] moved by each offset, the other dimensions held fixed."""
    h = base.repeat(len(dims) * len(offsets), 1)  # (rows·cols, d)
    rows = torch.arange(len(dims)).repeat_interleave(len(offsets))
    h[torch.arange(len(h)), dims[rows]] += offsets.repeat(len(dims))
    return decode(model, h, None if y is None else torch.full((len(h),), y))


def interpolations(model: GenerativeModel, xa: Tensor, xb: Tensor, steps: int, y: Tensor | None = None) -> Tensor:
    """Images (P·(steps + 2), *shape): per pair a row x_a, decode((1 − t)·h_a + t·h_b) for t in
    linspace(0, 1, steps), x_b; xa, xb (P, *shape) scaled images, y (P,) the pairs' shared labels."""
    n = len(xa)
    ha, hb = encode_all(model, xa, y), encode_all(model, xb, y)  # (P, d)
    t = torch.linspace(0, 1, steps).view(1, steps, 1)
    path = ((1 - t) * ha[:, None] + t * hb[:, None]).flatten(0, 1)  # (P·steps, d)
    x_hat = decode(model, path, None if y is None else y.repeat_interleave(steps))
    x_hat = x_hat.view(n, steps, *x_hat.shape[1:])
    return torch.cat([xa.float().cpu()[:, None], x_hat, xb.float().cpu()[:, None]], dim=1).flatten(0, 1)


def attribute_vector(codes: Tensor, labels: Tensor, a: int, b: int) -> Tensor:
    """Mean code of class a minus mean code of class b (latent_dim,)."""
    return codes[labels == a].mean(0) - codes[labels == b].mean(0)


def arithmetic(model: GenerativeModel, x: Tensor, vector: Tensor, y: Tensor | None = None) -> Tensor:
    """Images (3k, *shape): the k scaled images x, their reconstructions decode(h), and
    decode(h + vector) — the images moved along an attribute direction in code space."""
    h = encode_all(model, x, y)  # (k, d)
    return torch.cat([x.float().cpu(), decode(model, h, y), decode(model, h + vector, y)])


def class_rows(model: GenerativeModel, n_classes: int, n_cols: int, seed: int) -> Tensor:
    """Samples (n_classes·n_cols, *shape): row c holds n_cols samples of class c, one call per row,
    each drawn under the same seed, so column j starts from the same noise in every row and only
    the class differs along a column."""
    dev, out = _device(model), []
    for c in range(n_classes):
        with seeded(dev, seed):
            out.append(model.sample(n_cols, torch.full((n_cols,), c, device=dev)).float().cpu())
    return torch.cat(out)


def thumbnails(x: Tensor, bounded: bool) -> Tensor:
    """Projector sprite images (n, C, h, w) in [0, 1]: unbounded images min-max scaled each,
    large images shrunk to THUMBNAIL_PIXELS on the longer side."""
    x = TensorDataModule.scale(x).float()
    if bounded:
        x = x.clamp(0, 1)
    else:
        lo, hi = x.flatten(1).min(1).values, x.flatten(1).max(1).values
        x = (x - lo.view(-1, 1, 1, 1)) / (hi - lo).clamp_min(1e-8).view(-1, 1, 1, 1)
    if max(x.shape[-2:]) > THUMBNAIL_PIXELS:
        s = THUMBNAIL_PIXELS / max(x.shape[-2:])
        x = F.interpolate(x, size=(max(1, round(x.shape[-2] * s)), max(1, round(x.shape[-1] * s))), mode="area")
    return x


def _at(y: Tensor | None, idx: Tensor) -> Tensor | None:
    return None if y is None else y[idx]


# ---- the set of pictures for a run ------------------------------------------------------------
class Picture(NamedTuple):
    name: str  # the PNG is <name>.png, the TensorBoard tag test/<name>
    columns: int  # images per grid row
    make: Callable[[], Tensor]  # -> images (rows·columns, *shape), built only when written


@dataclass
class LatentPictures:
    """Options of the latent-space pictures; ``pictures`` lists those a model and data allow."""

    manifold_size: int = 20  # n×n decoded images, 2-D codes only
    manifold_range: tuple[float, float] = (0.05, 0.95)  # u, v before Φ⁻¹
    traversal_dims: int = 10  # rows: the most used code dimensions
    traversal_range: float = 3.0  # each row moves one dimension by −r..r around the base code
    traversal_steps: int = 9
    interpolation_pairs: int = 8
    interpolation_steps: int = 10  # decoded points per row, both endpoints included
    arithmetic_classes: tuple[int, int] | None = None  # (a, b); None: the first two classes present
    arithmetic_images: int = 8
    embedding_points: int = 1000  # test codes in TensorBoard's projector

    def pictures(self, model: GenerativeModel, test: Split, codes: Tensor, batch_size: int = 512) -> list[Picture]:
        """The pictures of fixed test images (test.x unscaled, test.y optional) with their codes (N, d)."""
        if not isinstance(model, CanDecode) or len(test) == 0:
            return []
        conditional = model.conditional and test.y is not None
        labels = test.y if conditional else None  # given to the model only when it is conditional
        y0 = None if labels is None else int(labels[0])  # conditional decoders: the base image's class
        out = []
        if codes.shape[1] == 2:
            (lo, hi), n = self.manifold_range, self.manifold_size
            out.append(Picture("manifold", n, lambda: manifold(model, n, lo, hi, y0)))

        def traversal_grid() -> Tensor:  # rows: the most used dimensions first
            dims = dimension_scores(model, test.x, labels, codes, batch_size).argsort(descending=True)
            offsets = torch.linspace(-self.traversal_range, self.traversal_range, self.traversal_steps)
            return traversals(model, codes[0], dims[: self.traversal_dims], offsets, y0)

        out.append(Picture("traversals", self.traversal_steps, traversal_grid))
        pairs = self.interpolation_pairs_of(test, conditional)
        if pairs is not None:
            a, b = pairs
            xa, xb, ya = TensorDataModule.scale(test.x[a]), TensorDataModule.scale(test.x[b]), _at(labels, a)
            steps = self.interpolation_steps
            out.append(Picture("interpolations", steps + 2, lambda: interpolations(model, xa, xb, steps, ya)))
        classes = self.arithmetic_pair(test.y)
        if classes is not None and test.y is not None:
            vec = attribute_vector(codes, test.y, *classes)  # class a − class b, added to images of b
            idx = torch.nonzero(test.y == classes[1]).squeeze(1)[: self.arithmetic_images]
            xs, ys = TensorDataModule.scale(test.x[idx]), _at(labels, idx)
            out.append(Picture("arithmetic", len(idx), lambda: arithmetic(model, xs, vec, ys)))
        return out

    def interpolation_pairs_of(self, test: Split, conditional: bool) -> tuple[Tensor, Tensor] | None:
        """Indices (a, b) of the interpolated pairs: consecutive test images, or for conditional
        models (which decode with one class) the first two images of each class, one row per class."""
        if not conditional or test.y is None:
            k = min(self.interpolation_pairs, len(test) // 2)
            return (torch.arange(0, 2 * k, 2), torch.arange(1, 2 * k, 2)) if k > 0 else None
        firsts = [torch.nonzero(test.y == c).squeeze(1)[:2] for c in test.y.unique().tolist()]
        pairs = [f for f in firsts if len(f) == 2][: self.interpolation_pairs]
        return (torch.stack([p[0] for p in pairs]), torch.stack([p[1] for p in pairs])) if pairs else None

    def arithmetic_pair(self, y: Tensor | None) -> tuple[int, int] | None:
        """Classes (a, b) of the attribute vector when both have test images, else None."""
        if y is None:
            return None
        present = y.unique().tolist()
        if self.arithmetic_classes is not None:
            a, b = (int(c) for c in self.arithmetic_classes)
        elif len(present) >= 2:
            a, b = present[:2]
        else:
            return None
        return (a, b) if a != b and a in present and b in present else None

    def embedding(self, codes: Tensor, test: Split, is_image: bool, bounded: bool, seed: int = 0) -> dict[str, Any]:
        """``add_embedding`` keywords for a fixed subset of up to embedding_points codes: the codes,
        class labels as metadata and thumbnails as sprite images, where the data have them."""
        idx = torch.randperm(len(codes), generator=torch.Generator().manual_seed(seed))[: self.embedding_points]
        idx = idx.sort().values
        return {
            "mat": codes[idx],
            "metadata": None if test.y is None else test.y[idx].tolist(),
            "label_img": thumbnails(test.x[idx], bounded) if is_image else None,
        }
