"""How well codes capture known generating factors: pure functions on tensors, and the ``Factors``
metric object that applies them to a model's codes of data with stored factors.

Shapes: N samples, d = code size, K = number of factors. Factor columns are either discrete
(category indices, e.g. a sprite's shape) or continuous (scale, rotation, position).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated

import numpy as np
from sklearn.linear_model import Ridge
from sklearn.metrics import mutual_info_score, r2_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from torch import Tensor

from genlab.capabilities import CanEncode, capable
from genlab.config.fields import Bounds, checked
from genlab.metrics.base import Context, Metric
from genlab.metrics.codes import linear_probe_accuracy

MAX_DISCRETE_VALUES = 32  # an integer-valued factor with at most this many values is a category


def _np(t: Tensor) -> np.ndarray:
    return t.detach().cpu().reshape(t.shape[0], -1).double().numpy()


def discrete_columns(factors: Tensor, max_values: int = MAX_DISCRETE_VALUES) -> tuple[int, ...]:
    """Indices of the columns of factors (N, K) that hold few integer values (categories)."""
    f = _np(factors)
    return tuple(
        k for k in range(f.shape[1])
        if np.all(f[:, k] == np.round(f[:, k])) and len(np.unique(f[:, k])) <= max_values
    )


def factor_r2(
    train_codes: Tensor, train_factors: Tensor, test_codes: Tensor, test_factors: Tensor,
    names: Sequence[str], discrete: Sequence[str] = (),
) -> dict[str, float]:
    """Per factor name: test R² of a ridge regression from codes (N, d) to that factor (N, K).

    The regressor is linear (ridge, α = 1, on codes standardised with the train statistics):
    the score asks whether a factor can be *read off* the code linearly, which is what a
    disentangled code promises, and is closed-form, deterministic and fast. R² = 1 − SS_res/SS_tot
    on test, so 0 means no better than the mean and it can dip below 0. Factors named in
    ``discrete`` are categories: their value is the test accuracy of a logistic-regression
    probe instead (the same probe as for labels).
    """
    h_train, h_test = _np(train_codes), _np(test_codes)
    out: dict[str, float] = {}
    for k, name in enumerate(names):
        if name in discrete:
            out[name] = linear_probe_accuracy(train_codes, train_factors[:, k].long(),
                                              test_codes, test_factors[:, k].long())
            continue
        reg = make_pipeline(StandardScaler(), Ridge(alpha=1.0))
        reg.fit(h_train, _np(train_factors[:, k])[:, 0])
        out[name] = float(r2_score(_np(test_factors[:, k])[:, 0], reg.predict(h_test)))
    return out


def _bins(v: np.ndarray, n_bins: int) -> np.ndarray:
    """v (N,) -> bin indices 0..n_bins-1 of n_bins equal-width bins spanning [min, max]."""
    edges = np.linspace(v.min(), v.max(), n_bins + 1)[1:-1]  # inner edges only
    return np.digitize(v, edges)


def mig(codes: Tensor, factors: Tensor, n_bins: int = 20, discrete_factors: Sequence[int] = ()) -> float:
    """Mutual information gap (Chen et al. 2018, "Isolating sources of disentanglement in VAEs").

    Each code dimension (N, d) is cut into n_bins equal-width bins, as are the continuous
    factors (N, K); columns listed in ``discrete_factors`` are used as categories. For factor k,
    with I(c_j; v_k) from ``mutual_info_score`` (nats) and H(v_k) its entropy:

        MIG = mean_k (I(c_(1); v_k) − I(c_(2); v_k)) / H(v_k),

    c_(1), c_(2) the two codes most informative about v_k. 1: each factor lives in one code
    alone; 0: the best two codes share it. Constant factors (H = 0) are left out; NaN if all are.
    """
    c, f = _np(codes), _np(factors)
    code_bins = [_bins(c[:, j], n_bins) for j in range(c.shape[1])]
    gaps = []
    for k in range(f.shape[1]):
        v = np.unique(f[:, k], return_inverse=True)[1] if k in discrete_factors else _bins(f[:, k], n_bins)
        entropy = mutual_info_score(v, v)  # I(v; v) = H(v)
        if entropy <= 0:
            continue
        mi = sorted((mutual_info_score(v, b) for b in code_bins), reverse=True) + [0.0]  # [0.0]: d = 1
        gaps.append((mi[0] - mi[1]) / entropy)
    return float(np.mean(gaps)) if gaps else float("nan")


class Factors(Metric):
    """Per true factor, the test R² of a linear read-out from the codes (``test/r2/<name>``; the
    accuracy ``test/acc/<name>`` for categorical factors), fitted on up to ``max_train`` training
    codes; and the MIG of the test codes."""

    columns = ("mig",)

    @checked
    def __init__(self, max_train: Annotated[int, Bounds(ge=2)] = 10000) -> None:
        self.max_train = max_train

    def applies(self, ctx: Context) -> bool:
        return capable(ctx.model, CanEncode) and ctx.info.has_factors

    def compute(self, ctx: Context) -> dict[str, float]:
        train, test = ctx.split("train").pick(self.max_train), ctx.split("test")
        if train.factors is None or test.factors is None:
            return {}
        h_train, h_test = ctx.codes(train, f"train:{self.max_train}"), ctx.codes(test, "test")
        if h_train is None or h_test is None:
            return {}
        names = ctx.info.factor_names
        discrete = discrete_columns(train.factors)  # e.g. the sprite's shape index
        categorical = [names[k] for k in discrete]
        scores = factor_r2(h_train, train.factors, h_test, test.factors, names, categorical)
        out = {f"test/{'acc' if n in categorical else 'r2'}/{n}": v for n, v in scores.items()}
        out["test/mig"] = mig(h_test, test.factors, discrete_factors=discrete)
        return out
