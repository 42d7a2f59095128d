"""The robustness metrics (genlab/metrics/robustness.py) against independent computations: a linear
encoder h = Wx + b, whose Jacobian is W everywhere and whose code shift under noise of standard
deviation σ has the closed form σ²‖W‖²_F / tr(W Σ Wᵀ); then the metric objects on a tiny model and
datamodule, and once inside a real run (Lightning's test stage runs in inference mode)."""

from __future__ import annotations

import math
from functools import partial

import pytest
import torch
from torch import Tensor, nn

from genlab.callbacks.evaluator import configured_evaluator
from genlab.capabilities import CanEncode, CanReconstruct, CanSample
from genlab.data.base import Batch, DataInfo, Split, Splits, TensorDataModule
from genlab.errors import UserError
from genlab.metrics import robustness as R
from genlab.metrics.base import Context
from genlab.models.base import GenerativeModel

D, K = 6, 3  # data dimension, code size


def _w(seed: int = 0) -> Tensor:
    return torch.randn(K, D, generator=torch.Generator().manual_seed(seed))


def _points(n: int, seed: int = 1) -> Tensor:
    """(n, D) points with unequal variances per dimension and a non-zero mean."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, D, generator=g) * torch.linspace(2.0, 0.3, D) + 1.0


# ---- pure functions --------------------------------------------------------------------------
def test_jacobian_of_a_linear_encoder_is_its_matrix_and_its_singular_values_are_svdvals() -> None:
    w, b = _w(), torch.randn(K)
    x = _points(5)
    jac = R.encoder_jacobian(lambda xb: xb @ w.T + b, x)
    assert jac.shape == (5, K, D)
    assert torch.allclose(jac, w.expand(5, K, D), atol=1e-6)
    sv = R.jacobian_singular_values(jac)
    expected = torch.linalg.svdvals(w.double()).float()
    assert sv.shape == (5, K) and torch.allclose(sv, expected.expand(5, K), rtol=1e-5)
    s = R.spectrum_summary(sv, top=1)
    assert s["fro"] == pytest.approx(torch.linalg.matrix_norm(w).item(), rel=1e-5)  # ‖W‖_F
    assert s["top"] == pytest.approx(expected[0].item(), rel=1e-5)
    assert s["tail_share"] == pytest.approx((expected[1:].pow(2).sum() / expected.pow(2).sum()).item(), rel=1e-5)
    assert torch.allclose(R.mean_spectrum(sv), expected, rtol=1e-5)


def test_jacobian_of_a_nonlinear_and_of_a_conditional_encoder() -> None:
    """tanh(Wx): J = diag(1 − h²) W at each point; an encoder taking labels y, h = Wx + E[y], has J = W,
    and the labels reach it point by point; images (N, C, H, W) are flattened to D inputs."""
    w = _w()
    x = _points(4)
    h = torch.tanh(x @ w.T)
    jac = R.encoder_jacobian(lambda xb: torch.tanh(xb @ w.T), x)
    assert torch.allclose(jac, (1 - h.pow(2)).unsqueeze(2) * w, atol=1e-6)
    emb = torch.randn(2, K)
    seen: list[Tensor] = []

    def conditional(xb: Tensor, yb: Tensor) -> Tensor:
        seen.append(yb)
        return xb.flatten(1) @ w.T + emb[yb]

    jac_c = R.encoder_jacobian(conditional, x.view(4, 1, 2, 3), torch.tensor([0, 1, 1, 0]))
    assert jac_c.shape == (4, K, D) and torch.allclose(jac_c, w.expand(4, K, D), atol=1e-6)
    assert seen  # the labels went in


def test_jacobian_inside_no_grad_and_inference_mode() -> None:
    w = _w()
    with torch.inference_mode():
        x = _points(3)  # an inference tensor, as in Lightning's test stage
        jac = R.encoder_jacobian(lambda xb: xb @ w.T, x)
    with torch.no_grad():
        jac2 = R.encoder_jacobian(lambda xb: xb @ w.T, _points(3))
    assert torch.allclose(jac, w.expand(3, K, D)) and torch.allclose(jac2, jac)


def test_code_shift_of_a_linear_map_matches_the_closed_form() -> None:
    """h = Wx: E‖W ε‖² = σ²‖W‖²_F and E‖h − mean h‖² = tr(W Σ Wᵀ), Σ the covariance of x (divisor N)."""
    n, sigma = 20000, 0.4
    w, x = _w(), _points(n)
    eps = torch.randn(n, D, generator=torch.Generator().manual_seed(2))
    noisy = R.add_noise(x, sigma, noise=eps)
    shift = R.code_shift(x @ w.T, noisy @ w.T)
    xc = x.double() - x.double().mean(0)
    cov = xc.T @ xc / n
    closed = sigma**2 * w.double().pow(2).sum() / torch.trace(w.double() @ cov @ w.double().T)
    assert shift == pytest.approx(closed.item(), rel=0.03)  # Monte-Carlo error of 20000 draws
    h = x @ w.T
    assert R.code_shift(h, h) == 0.0
    assert R.code_shift(h, h + 1.0) == pytest.approx(K / xc.double().matmul(w.double().T).pow(2).sum(1).mean().item())
    assert math.isnan(R.code_shift(torch.ones(4, K), torch.zeros(4, K)))  # codes that do not vary: undefined


def test_add_noise_draws_adds_and_clamps() -> None:
    x = torch.full((2, 3), 0.5)
    eps = torch.tensor([[1.0, -1.0, 0.1], [0.0, 2.0, -0.2]])
    assert torch.allclose(R.add_noise(x, 0.5, noise=eps), x + 0.5 * eps)
    assert torch.allclose(R.add_noise(x, 0.5, bounded=True, noise=eps), (x + 0.5 * eps).clamp(0, 1))
    torch.manual_seed(0)
    a = R.add_noise(x, 1.0)
    torch.manual_seed(0)
    assert torch.equal(a, R.add_noise(x, 1.0)) and not torch.equal(a, x)
    assert R.add_noise(torch.zeros(2, 3, dtype=torch.uint8), 0.1).dtype == torch.float32


# ---- the metric objects ----------------------------------------------------------------------
class Points(TensorDataModule):
    @property
    def info(self) -> DataInfo:
        return DataInfo("points", (D,), bounded=False)

    def load(self) -> Splits:
        return Splits(train=Split(_points(200, seed=3)), test=Split(_points(4000, seed=4)))


class LinearCode(GenerativeModel):
    """h = Wx (fixed W); reconstructs as the identity, so the noisy reconstruction error is ‖ε‖²."""

    capabilities = frozenset({CanEncode, CanReconstruct})

    def __init__(self, info: DataInfo, w: Tensor) -> None:
        super().__init__(data_info=info, optimizer=partial(torch.optim.SGD, lr=0.0))
        self.w = nn.Parameter(w.clone())
        self.latent_dim = w.shape[0]

    def encode(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        return x.flatten(1) @ self.w.T

    def reconstruct(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        return x.clone()

    def loss_terms(self, batch: Batch, stage: str) -> dict[str, Tensor]:
        return {"loss": 0 * self.w.sum()}


class Sampler(GenerativeModel):
    capabilities = frozenset({CanSample})

    def sample(self, n: int, y: Tensor | None = None, steps: int | None = None) -> Tensor:
        return torch.zeros(n, D)

    def loss_terms(self, batch: Batch, stage: str) -> dict[str, Tensor]:
        return {"loss": torch.zeros(())}


def _context(seed: int = 0) -> tuple[Context, Tensor, Tensor]:
    dm = Points(eval_batch_size=1000)
    dm.setup("test")
    w = _w()
    return Context(LinearCode(dm.info, w), dm, seed=seed), w, dm.tensors("test").x


def test_noise_robustness_against_the_closed_forms() -> None:
    sigma = 0.5
    ctx, w, x = _context()
    values = R.NoiseRobustness(noise_level=sigma, clamp=True, n_points=None).compute(ctx)  # unbounded: no clamp
    # identity reconstruction: the noisy reconstruction's error is the noise itself, E‖σε‖² = σ²D
    assert values["test/noisy_sq_err_per_image"] == pytest.approx(sigma**2 * D, rel=0.03)
    assert values["test/noisy_input_sq_err_per_image"] == pytest.approx(values["test/noisy_sq_err_per_image"])
    xc = x.double() - x.double().mean(0)
    closed = sigma**2 * w.double().pow(2).sum() / torch.trace(w.double() @ (xc.T @ xc / len(x)) @ w.double().T)
    assert values["test/code_shift"] == pytest.approx(closed.item(), rel=0.05)
    # the noise is fixed by the evaluator's seed, and the training random stream is left alone
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    again = R.NoiseRobustness(noise_level=sigma, n_points=None).compute(_context()[0])
    assert again == values and torch.equal(torch.rand(1), before)
    other = R.NoiseRobustness(noise_level=sigma, n_points=None).compute(_context(seed=1)[0])
    assert other["test/code_shift"] != values["test/code_shift"]
    subset = R.NoiseRobustness(noise_level=sigma, n_points=500).compute(_context()[0])
    assert subset["test/code_shift"] == pytest.approx(closed.item(), rel=0.2)
    with pytest.raises(UserError, match="noise_level"):
        R.NoiseRobustness(noise_level=-1)


def test_encoder_jacobian_metric_reports_the_spectrum() -> None:
    ctx, w, _ = _context()
    metric = R.EncoderJacobian(n_points=20, top=2, spectrum=5, chunk=7)
    assert metric.applies(ctx)
    values = metric.compute(ctx)
    sv = torch.linalg.svdvals(w.double())
    assert values["test/jacobian_fro"] == pytest.approx(sv.pow(2).sum().sqrt().item(), rel=1e-5)
    assert values["test/jacobian_sv_top"] == pytest.approx(sv[:2].mean().item(), rel=1e-5)
    assert values["test/jacobian_sv_tail_share"] == pytest.approx((sv[2:].pow(2).sum() / sv.pow(2).sum()).item(),
                                                                  rel=1e-5)
    assert [values[f"test/jacobian_sv/{i}"] for i in (1, 2, 3)] == pytest.approx(sv.tolist(), rel=1e-5)
    assert "test/jacobian_sv/4" not in values  # k = min(d, D) = 3 singular values
    assert metric.table(values) == ["jacobian_fro", "jacobian_sv_tail_share"]
    with pytest.raises(UserError, match="EncoderJacobian"):
        R.EncoderJacobian(top=0)


def test_the_metrics_apply_by_capability_and_are_not_in_the_default_list() -> None:
    dm = Points()
    dm.setup("test")
    ctx = Context(Sampler(data_info=dm.info), dm)
    assert not R.NoiseRobustness().applies(ctx) and not R.EncoderJacobian().applies(ctx)
    default = configured_evaluator().metrics.values()
    assert not any(isinstance(m, (R.NoiseRobustness, R.EncoderJacobian)) for m in default)


def test_both_metrics_in_a_real_run(make_cfg) -> None:
    """Added from the command line to a tiny autoencoder run: computed in Lightning's test stage."""
    from conftest import FAST, TINY

    from genlab.train import train

    cfg = make_cfg("model=ae", "data=digits", *TINY["digits"], *FAST, "model.latent_dim=4", "model.net.hidden=[16]",
                   "+callbacks.evaluator.metrics.noise={_target_: genlab.metrics.robustness.NoiseRobustness}",
                   "+callbacks.evaluator.metrics.jac={_target_: genlab.metrics.robustness.EncoderJacobian, "
                   "n_points: 10, spectrum: 4}")
    metrics = train(cfg)
    assert metrics["test/noisy_sq_err_per_image"] > 0 and 0 < metrics["test/code_shift"]
    assert metrics["test/jacobian_fro"] > 0 and 0 <= metrics["test/jacobian_sv_tail_share"] <= 1
    spectrum = [metrics[f"test/jacobian_sv/{i}"] for i in range(1, 5)]
    assert spectrum == sorted(spectrum, reverse=True)
