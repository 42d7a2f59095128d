"""Evaluation metrics as pure functions on tensors: no Lightning, no model classes.

Shapes: N samples, D = flattened data dimension, d = code size, k = PCA components.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from torch import Tensor


# ---- PCA ------------------------------------------------------------------------------
@dataclass
class PCAFit:
    """A fitted PCA: h = Vᵀ(x − mean), x̂ = V h + mean."""

    mean: Tensor  # (D,)
    components: Tensor  # V (D, k), orthonormal columns, by decreasing variance
    explained_variance: Tensor  # (k,) eigenvalues of the sample covariance (divisor N − 1)

    @property
    def k(self) -> int:
        return self.components.shape[1]


def fit_pca(x: Tensor, k: int) -> PCAFit:
    """Fit PCA with k components to x (N, D) (extra dims are flattened).

    SVD of the centred data in float64: float32 loses digits in the small singular
    values, which are exactly what the reconstruction error is made of.
    """
    x64 = x.reshape(x.shape[0], -1).to(torch.float64)
    n, dim = x64.shape
    k = max(0, min(k, dim, n))
    mean = x64.mean(dim=0)
    _, s, vh = torch.linalg.svd(x64 - mean, full_matrices=False)  # s (min(N, D),), vh (min(N, D), D)
    var = s[:k] ** 2 / max(n - 1, 1)
    return PCAFit(mean.float(), vh[:k].T.contiguous().float(), var.float())


def pca_encode(fit: PCAFit, x: Tensor) -> Tensor:
    """x (N, *shape) -> codes h (N, k)."""
    flat = x.reshape(x.shape[0], -1).to(fit.mean)
    return (flat - fit.mean) @ fit.components


def pca_decode(fit: PCAFit, h: Tensor, shape: tuple[int, ...] | None = None) -> Tensor:
    """codes h (N, k) -> x̂ (N, D), or (N, *shape) when shape is given."""
    x_hat = h.to(fit.mean) @ fit.components.T + fit.mean
    return x_hat if shape is None else x_hat.reshape(h.shape[0], *shape)


def pca_reconstruct(fit: PCAFit, x: Tensor) -> Tensor:
    """x (N, *shape) -> its projection onto the PCA subspace, same shape."""
    return pca_decode(fit, pca_encode(fit, x), tuple(x.shape[1:]))


# ---- reconstruction errors ---------------------------------------------------------------
def squared_error_per_image(x: Tensor, x_hat: Tensor) -> Tensor:
    """x, x̂ (N, *shape) -> (N,): Σ over all non-batch dims of (x − x̂)²."""
    diff = (x.float() - x_hat.float()).reshape(x.shape[0], -1)
    return diff.pow(2).sum(dim=1)


def mse_per_pixel(x: Tensor, x_hat: Tensor) -> Tensor:
    """x, x̂ (N, *shape) -> (N,): mean over all non-batch dims of (x − x̂)²."""
    return squared_error_per_image(x, x_hat) / x[0].numel()


# ---- probes on codes --------------------------------------------------------------------
def _np(t: Tensor) -> np.ndarray:
    return t.detach().cpu().reshape(t.shape[0], -1).double().numpy()


def linear_probe_accuracy(train_codes: Tensor, train_y: Tensor, test_codes: Tensor, test_y: Tensor) -> float:
    """Test accuracy of logistic regression on standardised codes (N, d) with labels (N,)."""
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    clf.fit(_np(train_codes), train_y.cpu().numpy())
    return float(clf.score(_np(test_codes), test_y.cpu().numpy()))


def knn_accuracy(train_codes: Tensor, train_y: Tensor, test_codes: Tensor, test_y: Tensor, k: int = 5) -> float:
    """Test accuracy of a k-nearest-neighbour classifier (Euclidean) on codes (N, d)."""
    clf = KNeighborsClassifier(n_neighbors=min(k, train_codes.shape[0]))
    clf.fit(_np(train_codes), train_y.cpu().numpy())
    return float(clf.score(_np(test_codes), test_y.cpu().numpy()))


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


# ---- visualisation ---------------------------------------------------------------------
def project_2d(codes: Tensor) -> Tensor:
    """codes (N, d) -> (N, 2) points to plot: as is for d = 2, zero-padded for d = 1, else PCA."""
    codes = codes.detach().float().reshape(codes.shape[0], -1)
    if codes.shape[1] > 2:
        fit = fit_pca(codes, 2)
        codes = pca_encode(fit, codes)  # (N, 2), or (N, 1) when N < 2
    return F.pad(codes, (0, 2 - codes.shape[1]))
