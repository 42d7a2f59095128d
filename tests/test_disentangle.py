"""Latent-factor metrics: MIG and per-factor R², against hand computations and closed forms."""

from __future__ import annotations

import math

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from torch import Tensor

from genlab.callbacks.evaluator import configured_evaluator
from genlab.data.builtin import ShapesDataModule
from genlab.metrics import factors as D
from genlab.models.pca import PCA


def _uniform(n: int, k: int, seed: int = 0) -> Tensor:
    return torch.rand(n, k, generator=torch.Generator().manual_seed(seed))


# ---- MIG ------------------------------------------------------------------------------------------
def _hand_bins(v: Tensor, n_bins: int) -> list[int]:
    lo, hi = v.min().item(), v.max().item()
    return [min(int((x - lo) / (hi - lo) * n_bins), n_bins - 1) for x in v.tolist()]


def _hand_mi(a: list, b: list) -> float:
    """Σ p(a, b) log p(a, b) / (p(a) p(b)) in nats, by counting."""
    n, out = len(a), 0.0
    for va in set(a):
        for vb in set(b):
            joint = sum(1 for x, y in zip(a, b) if x == va and y == vb) / n
            if joint > 0:
                out += joint * math.log(joint / (a.count(va) / n * b.count(vb) / n))
    return out


def test_mig_against_hand_computation() -> None:
    g = torch.Generator().manual_seed(0)
    shape = torch.randint(0, 3, (200,), generator=g).float()  # a categorical factor
    size = torch.rand(200, generator=g)  # a continuous one
    codes = torch.stack([size + 0.3 * torch.rand(200, generator=g), shape + torch.rand(200, generator=g),
                         torch.randn(200, generator=g)], dim=1)  # (200, 3)
    factors = torch.stack([shape, size], dim=1)
    n_bins = 5
    code_bins = [_hand_bins(codes[:, j], n_bins) for j in range(3)]
    gaps = []
    for v in (shape.long().tolist(), _hand_bins(size, n_bins)):
        mi = sorted((_hand_mi(v, c) for c in code_bins), reverse=True)
        gaps.append((mi[0] - mi[1]) / _hand_mi(v, v))
    assert D.mig(codes, factors, n_bins=n_bins, discrete_factors=(0,)) == pytest.approx(np.mean(gaps), abs=1e-9)


def test_mig_aligned_codes_near_one_rotated_lower() -> None:
    f = _uniform(5000, 3)
    noise = _uniform(5000, 2, seed=1)
    aligned = torch.cat([3 * f[:, 2:], -f[:, :1], f[:, 1:2] + 5, noise], dim=1)  # permuted, scaled, shifted
    assert D.mig(aligned, f) > 0.95
    a, b = f[:, 0], f[:, 1]
    rotated = torch.cat([torch.stack([a + b, a - b], dim=1) / math.sqrt(2), f[:, 2:], noise], dim=1)
    # factors 0 and 1 are shared equally by two codes (gap ~ 0), factor 2 stays alone (gap ~ 1)
    assert D.mig(rotated, f) < 0.5
    assert np.isnan(D.mig(noise, torch.ones(5000, 1)))  # a constant factor has no entropy to explain


# ---- R² -------------------------------------------------------------------------------------------
def test_factor_r2_linear_noisy_and_random() -> None:
    g = torch.Generator().manual_seed(0)
    f = torch.randn(6000, 3, generator=g)
    names = ("a", "b", "c")
    mixed = f @ torch.randn(3, 5, generator=g) + 2.0  # a linear map of the factors into 5 codes
    r2 = D.factor_r2(mixed[:4000], f[:4000], mixed[4000:], f[4000:], names)
    assert set(r2) == set(names) and min(r2.values()) > 0.999
    random = torch.randn(6000, 5, generator=g)
    r2 = D.factor_r2(random[:4000], f[:4000], random[4000:], f[4000:], names)
    assert max(abs(v) for v in r2.values()) < 0.02
    # code = factor + unit noise, all standard normal: R² = corr² = 1 / (1 + 1) = 0.5
    noisy = f + torch.randn(6000, 3, generator=g)
    r2 = D.factor_r2(noisy[:4000], f[:4000], noisy[4000:], f[4000:], names)
    assert all(v == pytest.approx(0.5, abs=0.04) for v in r2.values())


def test_factor_r2_categorical_is_accuracy() -> None:
    g = torch.Generator().manual_seed(0)
    shape = torch.randint(0, 3, (600,), generator=g).float()
    size = torch.rand(600, generator=g)
    factors = torch.stack([shape, size], dim=1)
    codes = torch.cat([torch.nn.functional.one_hot(shape.long(), 3).float(), size[:, None]], dim=1)
    scores = D.factor_r2(codes[:400], factors[:400], codes[400:], factors[400:], ("shape", "size"), ["shape"])
    assert scores["shape"] == 1.0 and scores["size"] > 0.999
    assert D.discrete_columns(factors) == (0,)


# ---- the Evaluator on sprites ---------------------------------------------------------------------
def test_evaluator_factor_metrics_on_shapes() -> None:
    dm = ShapesDataModule(n_samples=300, image_size=16, batch_size=64, eval_batch_size=128)  # 256-D: a quick SVD
    model = PCA(data_info=dm.info, latent_dim=5)
    evaluator = configured_evaluator(overrides=["metrics.factors.max_train=200", "metrics.probes.max_train=200"])
    trainer = pl.Trainer(accelerator="cpu", max_epochs=1, logger=False, callbacks=[evaluator],
                         enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False)
    trainer.fit(model, datamodule=dm)
    trainer.test(model, datamodule=dm)
    m = {k: float(v) for k, v in trainer.callback_metrics.items()}
    assert {"test/mig", "test/acc/shape", "test/r2/scale", "test/r2/rotation", "test/r2/x", "test/r2/y"} <= set(m)
    assert 0.0 <= m["test/mig"] <= 1.0 and 0.0 <= m["test/acc/shape"] <= 1.0
    assert m["test/r2/x"] > 0.3 and m["test/r2/y"] > 0.3  # where the sprite sits dominates pixel variance
    assert "test/sample_class_acc" not in m  # PCA does not sample
