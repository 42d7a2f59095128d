"""Metrics on a model's codes: how well a linear classifier and k-NN read the classes from them,
and how many code dimensions a stochastic encoder uses; plus the 2-D projection the code
pictures use. Pure functions on tensors first, then the metric objects.

Shapes: N samples, d = code size.
"""

from __future__ import annotations

from typing import Annotated

import numpy as np
import torch.nn.functional as F
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from torch import Tensor

from genlab.capabilities import CanEncode, HasCodeKL, capable
from genlab.config.fields import Bounds, checked, too_many_neighbours
from genlab.errors import ArgumentError
from genlab.metrics.base import Context, Metric
from genlab.models.pca import fit_pca, pca_encode


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


def project_2d(codes: Tensor) -> Tensor:
    """codes (N, d) -> (N, 2) points to plot: as is for d = 2, zero-padded for d = 1, else PCA."""
    codes = codes.detach().float().reshape(codes.shape[0], -1)
    if codes.shape[1] > 2:
        fit = fit_pca(codes, 2)
        codes = pca_encode(fit, codes)  # (N, 2), or (N, 1) when N < 2
    return F.pad(codes, (0, 2 - codes.shape[1]))


# ---- the metric objects ----------------------------------------------------------------------
class Probes(Metric):
    """Linear-probe (logistic regression) and k-NN accuracy of the test codes, fitted on the codes of
    up to ``max_train`` training images; with a hold-out class, scored on the classes seen."""

    columns = ("linear_probe_acc", "knn_acc")

    @checked
    def __init__(self, max_train: Annotated[int, Bounds(ge=2)] = 10000,
                 knn_k: Annotated[int, Bounds(ge=1)] = 5) -> None:
        self.max_train, self.knn_k = max_train, knn_k

    def applies(self, ctx: Context) -> bool:
        return capable(ctx.model, CanEncode) and ctx.info.has_labels

    def data_problem(self, ctx: Context) -> ArgumentError | None:
        n = min(self.max_train, len(ctx.split("train")))
        return too_many_neighbours(type(self).__name__, "knn_k", self.knn_k, n,
                                   f"training codes it searches (at most max_train={self.max_train})")

    def compute(self, ctx: Context) -> dict[str, float]:
        train, test = ctx.split("train").pick(self.max_train), ctx.split("test", seen_classes=True)
        if train.y is None or test.y is None or train.y.unique().numel() < 2:
            return {}
        h_train, h_test = ctx.codes(train, f"train:{self.max_train}"), ctx.codes(test, "test:seen")
        if h_train is None or h_test is None:
            return {}
        return {
            "test/linear_probe_acc": linear_probe_accuracy(h_train, train.y, h_test, test.y),
            "test/knn_acc": knn_accuracy(h_train, train.y, h_test, test.y, k=self.knn_k),
        }


class CodeUsage(Metric):
    """Active units of a stochastic encoder: code dimensions whose variance of the posterior mean
    over the test set, Cov_x(E_q[h_d|x]), exceeds ``threshold`` (Burda et al. 2016)."""

    columns = ("active_units",)

    @checked
    def __init__(self, threshold: Annotated[float, Bounds(ge=0)] = 0.01) -> None:
        self.threshold = threshold

    def applies(self, ctx: Context) -> bool:
        return capable(ctx.model, CanEncode) and capable(ctx.model, HasCodeKL)

    def compute(self, ctx: Context) -> dict[str, float]:
        mu = ctx.codes(ctx.split("test"), "test")
        return {} if mu is None else {"test/active_units": float((mu.var(0) > self.threshold).sum())}
