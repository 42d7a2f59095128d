"""Reconstruction: squared errors, PCA as the baseline of every code (``genlab.models.pca`` fits it),
and the novelty AUROC of reconstruction errors — as pure functions on tensors, and as the metric
objects that use them.

Shapes: N samples, D = flattened data dimension, d = code size, k = PCA components.
"""

from __future__ import annotations

import math
from typing import Annotated

import torch
from sklearn.metrics import roc_auc_score
from torch import Tensor

from genlab.capabilities import CanEncode, CanReconstruct, capable
from genlab.config.fields import Bounds, checked, too_many_neighbours
from genlab.errors import ArgumentError
from genlab.metrics.base import Context, Metric
from genlab.models.pca import fit_pca, pca_reconstruct


# ---- reconstruction errors ---------------------------------------------------------------
def squared_error_per_image(x: Tensor, x_hat: Tensor) -> Tensor:
    """x, x̂ (N, *shape) -> (N,): Σ over all non-batch dims of (x − x̂)²."""
    diff = (x.float() - x_hat.float()).reshape(x.shape[0], -1)
    return diff.pow(2).sum(dim=1)


def mse_per_pixel(x: Tensor, x_hat: Tensor) -> Tensor:
    """x, x̂ (N, *shape) -> (N,): mean over all non-batch dims of (x − x̂)²."""
    return squared_error_per_image(x, x_hat) / x[0].numel()


# ---- detection --------------------------------------------------------------------------
def auroc(scores: Tensor, is_positive: Tensor) -> float:
    """Area under the ROC curve of scores (N,) for the binary target is_positive (N,).

    The chance that a random positive scores above a random negative (ties count one half);
    NaN when one of the two classes is absent.
    """
    pos = is_positive.detach().cpu().bool().numpy()
    if pos.all() or not pos.any():
        return float("nan")
    return float(roc_auc_score(pos, scores.detach().cpu().double().numpy()))




# ---- the metric objects ----------------------------------------------------------------------
def reconstruction_errors(ctx: Context) -> Tensor:
    """Squared error per test image (N_test,) of the model's reconstructions, computed once."""
    assert capable(ctx.model, CanReconstruct)
    test = ctx.split("test")

    def make() -> Tensor:
        rec = lambda x, y=None: squared_error_per_image(x, ctx.model.reconstruct(x, y))  # noqa: E731
        return ctx.map(rec, test.x, ctx.labels(test))

    return ctx.once("reconstruction_errors", make)


class Reconstruction(Metric):
    """Squared error per image and per pixel on the test set; for models with a code, PCA with the
    same code size fitted on the training split and scored on the same images, and the ratio."""

    columns = ("sq_err_per_image",)

    @checked
    def __init__(self, pca_baseline: bool = True) -> None:
        self.pca_baseline = pca_baseline

    def applies(self, ctx: Context) -> bool:
        return capable(ctx.model, CanReconstruct)

    def compute(self, ctx: Context) -> dict[str, float]:
        err = reconstruction_errors(ctx).mean().item()
        out = {"test/sq_err_per_image": err, "test/mse_per_pixel": err / ctx.info.dim}
        k = ctx.model.latent_dim
        if self.pca_baseline and capable(ctx.model, CanEncode) and k:
            fit = fit_pca(ctx.tensors("train").x, min(k, ctx.info.dim))
            x = ctx.tensors("test").x  # the images the model's error is of
            pca_err = squared_error_per_image(x, pca_reconstruct(fit, x)).mean().item()
            out["test/pca_sq_err_per_image"] = pca_err
            out["test/sq_err_vs_pca"] = err / pca_err if k < ctx.info.dim else math.nan  # k >= D: PCA is exact
        return out


class Novelty(Metric):
    """With ``data.holdout_class=K``: how well a score tells test images of class K, which training never
    saw, from those of the other classes (AUROC). test/novelty_auroc scores by reconstruction error (models
    that reconstruct); test/novelty_auroc_codes by the mean distance of an image's code to its ``knn_k``
    nearest training codes (models that encode: a code far from every training code is new)."""

    columns = ("novelty_auroc", "novelty_auroc_codes")

    @checked
    def __init__(self, knn_k: Annotated[int, Bounds(ge=1)] = 5,
                 max_train: Annotated[int, Bounds(ge=1)] = 10000) -> None:
        self.knn_k, self.max_train = knn_k, max_train

    def applies(self, ctx: Context) -> bool:
        return ((capable(ctx.model, CanReconstruct) or capable(ctx.model, CanEncode)) and ctx.holdout_class is not None
                and ctx.split("test").y is not None)

    def data_problem(self, ctx: Context) -> ArgumentError | None:
        if not capable(ctx.model, CanEncode):
            return None
        n = min(self.max_train, len(ctx.split("train")))
        return too_many_neighbours(type(self).__name__, "knn_k", self.knn_k, n,
                                   f"training codes it searches (at most max_train={self.max_train})")

    def compute(self, ctx: Context) -> dict[str, float]:
        test = ctx.split("test")
        assert test.y is not None
        novel = test.y == ctx.holdout_class
        out = {}
        if capable(ctx.model, CanReconstruct):
            out["test/novelty_auroc"] = auroc(reconstruction_errors(ctx), novel)
        if capable(ctx.model, CanEncode):
            h_train = ctx.codes(ctx.split("train").pick(self.max_train), f"train:{self.max_train}")
            h_test = ctx.codes(test, "test")
            if h_train is not None and h_test is not None:
                out["test/novelty_auroc_codes"] = auroc(knn_distance(h_test, h_train, self.knn_k), novel)
        return out


def knn_distance(queries: Tensor, reference: Tensor, k: int, chunk: int = 1024) -> Tensor:
    """The mean Euclidean distance (N,) of each query code (N, d) to its k nearest reference codes (M, d)."""
    k = min(k, reference.shape[0])
    return torch.cat([torch.cdist(q.double(), reference.double()).topk(k, dim=1, largest=False).values.mean(1)
                      for q in queries.split(chunk)]).float()
