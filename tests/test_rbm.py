"""The restricted Boltzmann machine (genlab/models/rbm.py) against brute force on tiny machines: the free
energy, the exact log Z by enumeration, the CD gradient of its surrogate loss, and AIS's log Z."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import pytest
import torch
from conftest import FAST, TINY

from genlab.capabilities import (
    Budget,
    CanBoundLikelihood,
    CanEncode,
    CanReconstruct,
    CanRunChains,
    CanSample,
    CanShowFilters,
)
from genlab.data.base import DataInfo
from genlab.models.rbm import RBM


def tiny_rbm(d: int, h: int, visible: str = "bernoulli", scale: float = 1.0, seed: int = 0, **kwargs) -> RBM:
    """A (1, 1, d) 'image' RBM with random parameters of size ``scale``."""
    torch.manual_seed(seed)
    model = RBM(data_info=DataInfo(name="tiny", shape=(1, 1, d)), n_hidden=h, visible=visible, **kwargs)
    with torch.no_grad():
        model.W.copy_(scale * torch.randn(d, h))
        model.visible_bias.copy_(0.5 * scale * torch.randn(d))
        model.hidden_bias.copy_(0.5 * scale * torch.randn(h))
    return model.double()


def states(n: int) -> torch.Tensor:
    return torch.tensor(list(itertools.product([0.0, 1.0], repeat=n)), dtype=torch.float64)  # (2^n, n)


def energy(model: RBM, v: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """E(v, h) for every pair of rows: (Nv, D), (Nh, H) -> (Nv, Nh), written out from the definition."""
    a, b, W = model.visible_bias.detach(), model.hidden_bias.detach(), model.W.detach()
    return -(v @ a)[:, None] - (h @ b)[None, :] - v @ W @ h.T


def test_free_energy_marginalises_the_hidden_units() -> None:
    model = tiny_rbm(6, 4)
    v = states(6)
    brute = -torch.logsumexp(-energy(model, v, states(4)), dim=1)  # −log Σ_h e^{−E(v, h)}
    torch.testing.assert_close(model.free_energy(v).detach(), brute)


def test_exact_log_z_matches_brute_force_over_visible_and_hidden() -> None:
    model = tiny_rbm(6, 4)
    brute = torch.logsumexp(-energy(model, states(6), states(4)).flatten(), 0).item()
    assert model.exact_log_z() == pytest.approx(brute, abs=1e-9)
    assert model.exact_log_z(chunk=3) == pytest.approx(brute, abs=1e-9)  # chunks combine


def test_gaussian_exact_log_z_matches_numerical_integration() -> None:
    # one Gaussian visible unit, 3 hidden: Z = Σ_h ∫ exp(½‖v − a‖²·(−1) + bᵀh + vᵀWh) dv by quadrature
    model = tiny_rbm(1, 3, visible="gaussian")
    v = torch.linspace(-30, 30, 200001, dtype=torch.float64)[:, None]
    log_p_star = -model.free_energy(v).detach()
    log_z = (torch.logsumexp(log_p_star, 0) + math.log(v[1, 0] - v[0, 0])).item()
    assert model.exact_log_z() == pytest.approx(log_z, abs=1e-6)


def test_cd_surrogate_gradient_is_the_positive_minus_the_negative_phase() -> None:
    model = tiny_rbm(5, 3, weight_decay=0.0)
    torch.manual_seed(1)
    v_data = torch.rand(7, 5, dtype=torch.float64)
    v_model = torch.bernoulli(torch.full((9, 5), 0.5, dtype=torch.float64))  # fixed negative samples
    model.negative_samples = lambda v, stage: v_model  # the chain's output, held fixed
    terms = model.loss_terms({"x": v_data.view(7, 1, 1, 5)}, "train")
    model.zero_grad()
    terms["loss"].backward()
    W, b = model.W.detach(), model.hidden_bias.detach()
    q_data, q_model = torch.sigmoid(v_data @ W + b), torch.sigmoid(v_model @ W + b)
    # the log-likelihood gradient is <v hᵀ>_data − <v hᵀ>_model; the loss's gradient is its negative
    dW = v_data.T @ q_data / 7 - v_model.T @ q_model / 9
    da = v_data.mean(0) - v_model.mean(0)
    db = q_data.mean(0) - q_model.mean(0)
    torch.testing.assert_close(model.W.grad, -dW)
    torch.testing.assert_close(model.visible_bias.grad, -da)
    torch.testing.assert_close(model.hidden_bias.grad, -db)


def test_weight_decay_and_sparsity_add_their_gradients() -> None:
    model = tiny_rbm(5, 3, weight_decay=0.1, sparsity_target=0.1, sparsity_cost=0.5)
    v_data = torch.rand(4, 5, dtype=torch.float64)
    model.negative_samples = lambda v, stage: v  # negative phase = positive phase: only the penalties remain
    terms = model.loss_terms({"x": v_data.view(4, 1, 1, 5)}, "train")
    model.zero_grad()
    terms["loss"].backward()
    W, b = model.W.detach(), model.hidden_bias.detach()
    q = torch.sigmoid(v_data @ W + b)
    torch.testing.assert_close(model.hidden_bias.grad, 0.5 * (q - 0.1).mean(0))
    torch.testing.assert_close(model.W.grad, 0.1 * W + 0.5 * v_data.T @ (q - 0.1) / 4)
    assert terms["sparsity"].item() >= 0


def test_pcd_chains_persist_across_batches_and_checkpoints() -> None:
    model = tiny_rbm(5, 3, persistent=True, n_chains=6, cd_k=2)
    x = torch.rand(4, 1, 1, 5, dtype=torch.float64)
    model.loss_terms({"x": x}, "train")  # the chains start from this batch, repeated to 6
    assert model.chains.shape == (6, 5) and bool(model.chains_started)
    first = model.chains.clone()
    model.loss_terms({"x": x[:2]}, "train")  # a smaller batch: the chains keep their count and move on
    assert model.chains.shape == (6, 5) and not torch.equal(first, model.chains)
    kept = model.chains.clone()
    model.loss_terms({"x": x}, "val")  # evaluation does not move them
    torch.testing.assert_close(model.chains, kept)
    fresh = tiny_rbm(5, 3, persistent=True, n_chains=6)
    fresh.load_state_dict(model.state_dict())
    torch.testing.assert_close(fresh.chains, kept)
    assert bool(fresh.chains_started)


@pytest.mark.parametrize("visible", ["bernoulli", "gaussian"])
def test_ais_log_z_is_close_to_the_exact_value(visible: str) -> None:
    model = tiny_rbm(20, 10, visible=visible, scale=0.3).float()
    exact = model.exact_log_z()
    torch.manual_seed(0)
    log_z, se = model.ais_log_z(runs=200, betas=500)
    assert abs(log_z - exact) < 0.3, (log_z, exact, se)
    assert 0 <= se < 0.3


def test_capabilities_and_likelihood_bounds() -> None:
    model = tiny_rbm(8, 4, ais_runs=20, ais_betas=50, sample_steps=3).float()
    for cap in (CanSample, CanEncode, CanReconstruct, CanBoundLikelihood, CanShowFilters, CanRunChains):
        assert isinstance(model, cap)
    x = torch.rand(3, 1, 1, 8)
    assert model.sample(5).shape == (5, 1, 1, 8) and model.sample(2, steps=0).shape == (2, 1, 1, 8)
    assert model.reconstruct(x).shape == x.shape and model.encode(x).shape == (3, 4)
    filters = model.filters(64)
    assert filters.shape == (4, 1, 1, 8) and filters.min() >= 0 and filters.max() <= 1
    bounds = {b.name: b for b in model.likelihood_bounds(Budget())}
    assert set(bounds) == {"ais_nll", "exact_nll"} and bounds["ais_nll"].unit == "nats"
    nll = bounds["exact_nll"].per_sample(x, None)
    assert nll.shape == (3,) and bool(torch.isfinite(nll).all())


def test_pcd_run_reports_its_likelihood_and_draws_its_filters(make_cfg) -> None:
    cfg = make_cfg("model=rbm", "data=digits", *TINY["digits"], *FAST, "model.n_hidden=12", "model.persistent=true",
                   "model.n_chains=20", "model.cd_k=2", "model.ais_runs=20", "model.ais_betas=100",
                   "callbacks.evaluator.sample_steps=5", "callbacks.evaluator.classifier_cache=null")
    from genlab.train import train

    metrics = train(cfg)
    out = Path(cfg.paths.output_dir)
    units = json.loads((out / "metrics.json").read_text())["units"]
    assert units["test/ais_nll"] == "nats" and units["test/exact_nll"] == "nats"
    # log Z beside the estimates: their difference is the two log Zs' difference, on the same test images
    assert metrics["test/ais_nll"] - metrics["test/exact_nll"] == pytest.approx(
        metrics["test/ais_log_z"] - metrics["test/exact_log_z"], abs=1e-3)
    assert 0 < metrics["test/ais_log_z_se"] < 1
    # 12 hidden units: AIS against the exact log Z, on the same test images
    assert metrics["test/ais_nll"] == pytest.approx(metrics["test/exact_nll"], abs=0.5)
    assert (out / "images" / "filters.png").is_file() and (out / "images" / "samples.png").is_file()
    assert (out / "images" / "gibbs_chains.png").is_file()


def test_chains_from_data_start_at_the_data_and_follow_the_gibbs_sweeps() -> None:
    model = tiny_rbm(8, 4).float()
    x = torch.rand(3, 1, 1, 8).round()
    torch.manual_seed(4)
    frames = model.chain_frames(x, [0, 2, 5])
    assert frames.shape == (3, 3, 1, 1, 8) and torch.equal(frames[0], x)
    torch.manual_seed(4)  # the same draws by hand: 2 sweeps from x, then 3 more from that state
    v, mean2 = model.gibbs(x.flatten(1), 2)
    _, mean5 = model.gibbs(v, 3)
    assert torch.equal(frames[1].flatten(1), mean2) and torch.equal(frames[2].flatten(1), mean5)
