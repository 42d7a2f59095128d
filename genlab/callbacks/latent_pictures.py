"""Latent-space pictures: the learned manifold of a 2-D code, traversals of the code (single
dimensions by KL for models with ``kl_per_dim``, the principal directions of the test codes for
the others), interpolations and attribute arithmetic between codes, class rows of samples from
the same noise, and the codes for TensorBoard's projector.

Pure functions of a model and data (no Lightning): they ask only for capabilities —
``encode(x, y) -> (B, latent_dim)``, ``decode(h, y) -> x̂``, optionally ``kl_per_dim(x, y) ->
(B, latent_dim)`` — and pass labels as ``y`` to conditional models (``model.conditional``).
Images go in and come out as float tensors (n, C, H, W) on the CPU; ``LatentPictures.pictures``
wraps them in labelled ``Grid``s (what each row and column shows) that ``ImageLogger`` renders
with ``figures.grids_figure`` and writes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from genlab.capabilities import HasCodeKL, capable
from genlab.config.fields import Bounds, argument_rules, check_arguments
from genlab.data.base import Split, TensorDataModule, map_batches
from genlab.errors import ArgumentError
from genlab.figures import Grid, class_name, number, thinned
from genlab.metrics.base import seeded
from genlab.models.base import GenerativeModel

THUMBNAIL_PIXELS = 64  # projector sprites: larger images are shrunk to this size
MOST_TICKS = 10  # tick labels along a manifold axis
MOST_OFFSETS = 5  # offset labels under a traversal


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


def mean_kl_per_dim(model: HasCodeKL, x: Tensor, y: Tensor | None, batch_size: int = 512) -> Tensor:
    """The mean KL(q(h_d|x) ‖ p(h_d)) per code dimension over images x (N, *shape), in nats (latent_dim,)."""
    kl = lambda xb, y=None: model.kl_per_dim(xb, y)  # noqa: E731
    return map_batches(kl, x, _device(model), batch_size, _given(model, y)).mean(0)


def principal_directions(codes: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """The k leading principal directions of codes (N, d) as unit rows (k', d), k' = min(k, N, d),
    and the codes' standard deviation along each (k',), largest first.

    Deterministic autoencoders have no prior to measure offsets in and may spread their codes
    along a few oblique directions; moving along these directions by multiples of their spread
    changes the image where moving one raw dimension by ±3 may not. The sign of each direction
    is fixed (its largest entry positive) so the picture does not flip between runs of the SVD.
    """
    c = codes.double() - codes.double().mean(0)
    _, s, vh = torch.linalg.svd(c, full_matrices=False)  # rows of vh: the directions, by singular value
    v = vh[: min(k, len(s))]
    sign = v.gather(1, v.abs().argmax(1, keepdim=True)).sign()
    std = s[: len(v)] / max(len(codes) - 1, 1) ** 0.5
    return (v * torch.where(sign == 0, 1.0, sign)).float(), std.float()


def traversals(model: GenerativeModel, base: Tensor, directions: Tensor, offsets: Tensor,
               y: int | None = None) -> Tensor:
    """Images (R·S, *shape): row r decodes base + offsets[r, s]·directions[r] for the base code (d,),
    directions (R, d) (unit vectors: code dimensions or principal directions) and offsets (R, S),
    or (S,) for the same offsets in every row."""
    steps = offsets.shape[-1]
    h = base + offsets.expand(len(directions), steps)[:, :, None] * directions[:, None, :]  # (R, S, d)
    h = h.flatten(0, 1)
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
    make: Callable[[], Grid]  # -> the labelled images (rows·columns, *shape), built only when written


@dataclass
class LatentPictures:
    """Options of the latent-space pictures; ``pictures`` lists those a model and data allow."""

    manifold_size: Annotated[int, Bounds(ge=1)] = 20  # n×n decoded images, 2-D codes only
    manifold_range: tuple[float, float] = (0.05, 0.95)  # u, v before Φ⁻¹
    traversal_dims: Annotated[int, Bounds(ge=1)] = 10  # rows: the dimensions with most KL, or the leading PCs
    traversal_range: Annotated[float, Bounds(gt=0)] = 3.0  # offsets −r..r around the base code (code units or σ)
    traversal_steps: Annotated[int, Bounds(ge=2)] = 9
    interpolation_pairs: Annotated[int, Bounds(ge=1)] = 8
    interpolation_steps: Annotated[int, Bounds(ge=2)] = 10  # decoded points per row, both endpoints included
    arithmetic_classes: tuple[int, int] | None = None  # (a, b); None: the first two classes present
    arithmetic_images: Annotated[int, Bounds(ge=1)] = 8
    embedding_points: Annotated[int, Bounds(ge=0)] = 1000  # test codes in TensorBoard's projector

    def __post_init__(self) -> None:
        """The options against their declared ranges, and the two pairs against theirs."""
        name = type(self).__name__
        check_arguments(name, argument_rules(type(self)), vars(self))
        lo_hi = list(self.manifold_range) if isinstance(self.manifold_range, Sequence) else None
        if not (lo_hi and len(lo_hi) == 2 and all(isinstance(v, (int, float)) for v in lo_hi)
                and 0 < lo_hi[0] < lo_hi[1] < 1):
            raise ArgumentError(name, "manifold_range", lambda key: (
                f"{key}={self.manifold_range}: give [lo, hi] with 0 < lo < hi < 1 (quantiles of the prior)"))
        pair = self.arithmetic_classes
        if pair is not None and not (isinstance(pair, Sequence) and len(pair) == 2 and len(set(pair)) == 2
                                     and all(isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in pair)):
            raise ArgumentError(name, "arithmetic_classes", lambda key: (
                f"{key}={pair}: give two different class indices [a, b] (or null)"))

    def pictures(self, model: GenerativeModel, test: Split, codes: Tensor, batch_size: int = 512,
                 class_names: Sequence[str] = ()) -> list[Picture]:
        """The pictures of a decoder (``CanDecode``) from fixed test images (test.x unscaled, test.y optional)
        and their codes (N, d); class_names (``DataInfo.class_names``) label classes, which are shown by index
        without them."""
        if len(test) == 0:
            return []
        conditional = model.conditional and test.y is not None
        labels = test.y if conditional else None  # given to the model only when it is conditional
        y0 = None if labels is None else int(labels[0])  # conditional decoders: the base image's class
        given = "" if y0 is None else f" (decoded as class {class_name(y0, class_names)})"
        out = []
        if codes.shape[1] == 2:
            out.append(Picture("manifold", self.manifold_size, lambda: self.manifold_grid(model, y0, given)))
        traverse = lambda: self.traversal_grid(model, test.x, labels, codes, y0, batch_size, given)
        out.append(Picture("traversals", self.traversal_steps, traverse))
        pairs = self.interpolation_pairs_of(test, conditional)
        if pairs is not None:
            between = lambda: self.interpolation_grid(model, test, labels, pairs, class_names)
            out.append(Picture("interpolations", self.interpolation_steps + 2, between))
        classes = self.arithmetic_pair(test.y)
        if classes is not None and test.y is not None:
            idx = torch.nonzero(test.y == classes[1]).squeeze(1)[: self.arithmetic_images]
            moved = lambda: self.arithmetic_grid(model, test, labels, codes, idx, classes, class_names)
            out.append(Picture("arithmetic", len(idx), moved))
        return out

    def manifold_grid(self, model: GenerativeModel, y: int | None, given: str = "") -> Grid:
        """The decoded manifold with h₁ along x and h₂ up y, ticks at the codes of the columns and rows."""
        (lo, hi), n = self.manifold_range, self.manifold_size
        h = manifold_codes(n, lo, hi)  # (n·n, 2): h₁ runs along a row, h₂ down the rows
        ticks = lambda v: thinned([number(c, ".2f") for c in v], MOST_TICKS)  # noqa: E731
        title = f"decoder output on a grid of codes h = (Φ⁻¹(u), Φ⁻¹(v)), u, v evenly spaced in [{lo}, {hi}]"
        return Grid(manifold(model, n, lo, hi, y), n, ticks(h[::n, 1]), title + given, ticks(h[:n, 0]),
                    xlabel="h₁", ylabel="h₂")

    def traversal_grid(self, model: GenerativeModel, x: Tensor, labels: Tensor | None, codes: Tensor,
                       y: int | None, batch_size: int = 512, given: str = "") -> Grid:
        """Traversals of test image 0's code (codes (N, d) of the test images x), a row per direction:
        the code dimensions with the most KL for models with ``kl_per_dim`` (offsets in prior units),
        else the principal directions of the codes (offsets in units of the codes' spread along each)."""
        offsets = torch.linspace(-self.traversal_range, self.traversal_range, self.traversal_steps)  # (S,)
        if capable(model, HasCodeKL):
            kl = mean_kl_per_dim(model, x, labels, batch_size)  # (d,)
            dims = kl.argsort(descending=True)[: self.traversal_dims]
            rows = [f"dim {d} · KL {kl[d]:.2f} nats" for d in dims.tolist()]
            images = traversals(model, codes[0], torch.eye(codes.shape[1])[dims], offsets, y)
            cols = [number(o) for o in offsets]
            title = ("traversals of a test image's code: one code dimension per row, most KL first; "
                     "columns: the value added to it")
        else:
            directions, std = principal_directions(codes, self.traversal_dims)  # (R, d), (R,)
            spread = std > 1e-6 * std[0]  # directions the codes do not vary along would show R identical columns
            spread[0] = True
            directions, std = directions[spread], std[spread]
            rows = [f"PC{r + 1} · σ {number(v, '.2g')}" for r, v in enumerate(std.tolist())]
            images = traversals(model, codes[0], directions, offsets * std[:, None], y)
            cols = [number(o) + "σ" for o in offsets]
            title = ("traversals of a test image's code along the principal directions of the test codes, most spread "
                     "first; columns: the offset in units of each direction's standard deviation σ")
        return Grid(images, len(offsets), rows, title + given, thinned(cols, MOST_OFFSETS))

    def interpolation_grid(self, model: GenerativeModel, test: Split, labels: Tensor | None,
                           pairs: tuple[Tensor, Tensor], class_names: Sequence[str] = ()) -> Grid:
        """A row per pair (indices a, b (P,) into test): the real image a, the decoded path, the real image b."""
        a, b = pairs
        steps = self.interpolation_steps
        xa, xb = TensorDataModule.scale(test.x[a]), TensorDataModule.scale(test.x[b])
        images = interpolations(model, xa, xb, steps, _at(labels, a))
        name = lambda k: class_name(int(k), class_names)  # noqa: E731
        if test.y is None:
            rows = [f"pair {k + 1}" for k in range(len(a))]
        elif labels is not None:  # conditional: both images of one class, decoded as that class
            rows = [f"class {name(c)}" for c in test.y[a]]
        else:
            rows = [f"{name(ca)} → {name(cb)}" for ca, cb in zip(test.y[a], test.y[b])]
        ends = {0: "t=0", steps - 1: "t=1"}
        cols = ["real"] + [ends.get(k, "") for k in range(steps)] + ["real"]
        title = (f"interpolations decode((1 − t)·h_a + t·h_b), t from 0 to 1 in {steps} steps, between the codes "
                 "of two test images; outer columns: the real images")
        return Grid(images, steps + 2, rows, title, cols, separators=(1, steps + 1))

    def arithmetic_grid(self, model: GenerativeModel, test: Split, labels: Tensor | None, codes: Tensor,
                        idx: Tensor, classes: tuple[int, int], class_names: Sequence[str] = ()) -> Grid:
        """Test images idx of class b, their reconstructions, and their codes plus the mean code of class a
        minus that of class b (codes (N, d) of the labelled test images), decoded."""
        assert test.y is not None
        a, b = (class_name(c, class_names) for c in classes)
        vec = attribute_vector(codes, test.y, *classes)
        images = arithmetic(model, TensorDataModule.scale(test.x[idx]), vec, _at(labels, idx))
        rows = [f"images of class {b}", "reconstructions", f"+ (mean code of {a}\n− mean code of {b})"]
        title = ("attribute arithmetic: "
                 f"images of class {b} moved in code space by the mean code of {a} minus that of {b}")
        return Grid(images, len(idx), rows, title)

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
