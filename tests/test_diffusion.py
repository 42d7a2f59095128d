"""The diffusion family (genlab/models/diffusion.py, schedulers.py, guidance.py, genlab/nets/unet.py) against
independent computations on tiny cases: the forward process against the step-by-step chain, the schedules
against their formulas, ε and v against each other, DDIM against the ancestral sampler step by step, samples
against those recorded from the sampler that lived inside DDPM (tests/data/diffusion_samples.json), the
variational bound against a Monte-Carlo estimate over whole forward chains written out from the definitions,
classifier-free guidance at its end points; then short runs through genlab-train's recipe (ddpm on toy2d and
digits, latent_ddpm on a finished ae run)."""

from __future__ import annotations

import functools
import json
import math
import re
from pathlib import Path

import pytest
import torch
from conftest import FAST, TINY, run_cli
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch import Tensor
from torch.distributions import Normal

from genlab.capabilities import Budget
from genlab.checkpoints import build_model
from genlab.config import validate
from genlab.data.base import DataInfo
from genlab.errors import UserError
from genlab.models.diffusion import DDPM, ConditionalDDPM, discretised_gaussian_log_likelihood
from genlab.models.guidance import ClassifierFreeGuidance
from genlab.models.latent_diffusion import LatentDDPM
from genlab.models.schedulers import (
    DDIMScheduler,
    DDPMScheduler,
    DPMSolverScheduler,
    NoiseSchedule,
    alpha_bars,
    beta_schedule,
    make_scheduler,
)
from genlab.nets.unet import denoiser
from genlab.run import load_model, stored_config
from genlab.train import train

PTS = DataInfo("pts", (2,), num_classes=3, bounded=False)
IMG = DataInfo("img", (1, 4, 4), num_classes=3)
RECORDED = Path(__file__).parent / "data" / "diffusion_samples.json"


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny networks on shared cores: threads would only wait on each other."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny(cls: type = DDPM, info: DataInfo = PTS, seed: int = 0, scale: float = 0.5, **kwargs) -> DDPM:
    """A model with random weights everywhere (the denoisers' zero-initialised output layers too, so that
    predictions differ from 0), in evaluation mode, without EMA."""
    torch.manual_seed(seed)
    net = functools.partial(denoiser, hidden=[16, 16], channels=[4, 8], emb_dim=8, groups=2)
    kwargs = {"timesteps": 10, "beta_start": 1e-3, "beta_end": 4e-3,  # T = 10: β = 0.1 .. 0.4, ᾱ_T = 0.05
              "ema": None, "sampler": "ddpm", "sample_steps": None, **kwargs}
    model = cls(data_info=info, net=net, **kwargs)
    with torch.no_grad():
        for p in model.net.parameters():
            p.add_(scale * torch.randn_like(p) / math.sqrt(max(1, p[0].numel() if p.dim() > 1 else 1)))
    return model.eval()


# ---- the forward process and the schedules -----------------------------------------------------------
def test_schedules_give_the_alpha_bars_of_their_formulas() -> None:
    linear = beta_schedule("linear", 1000)
    torch.testing.assert_close(alpha_bars(linear)[1:], torch.cumprod(1 - torch.linspace(1e-4, 0.02, 1000,
                                                                                        dtype=torch.float64), 0))
    assert alpha_bars(linear)[0] == 1 and alpha_bars(linear)[-1] < 1e-4  # ends near pure noise
    short = alpha_bars(beta_schedule("linear", 100))  # β scaled by 1000/T: still ends near pure noise
    assert short[-1] < 1e-3 and torch.all(short[1:] < short[:-1])
    cosine = alpha_bars(beta_schedule("cosine", 50))
    f = lambda t: math.cos((t / 50 + 0.008) / 1.008 * math.pi / 2) ** 2  # noqa: E731
    expected = torch.tensor([f(t) / f(0) for t in range(50)], dtype=torch.float64)  # before the clipped end
    torch.testing.assert_close(cosine[:50], expected)
    assert cosine[-1] < 1e-4 and beta_schedule("cosine", 50).max() <= 0.999


def test_q_sample_matches_the_step_by_step_chain() -> None:
    model = tiny(timesteps=6, beta_start=6e-4, beta_end=1.8e-3)  # scaled by 1000/6: β = 0.1 .. 0.3
    torch.manual_seed(1)
    x0 = torch.tensor([[1.5, -0.5]]).expand(200000, 2)
    x = x0.clone()
    for t in range(1, 7):  # x_t = √(1 − β_t) x_{t−1} + √β_t z
        beta = float(model.noise_schedule.betas[t])
        x = math.sqrt(1 - beta) * x + math.sqrt(beta) * torch.randn_like(x)
        ab = float(model.noise_schedule.alpha_bar[t])
        se = math.sqrt((1 - ab) / len(x))
        assert torch.allclose(x.mean(0), math.sqrt(ab) * x0[0], atol=5 * se), t
        assert torch.allclose(x.var(0), torch.full((2,), 1 - ab), rtol=0.02), t
    direct = model.noise_schedule.add_noise(x0, torch.randn_like(x0), torch.full((len(x0),), 6))
    assert torch.allclose(direct.mean(0), x.mean(0), atol=0.01) and torch.allclose(direct.var(0), x.var(0), rtol=0.02)


def test_eps_and_v_predictions_convert_into_each_other() -> None:
    torch.manual_seed(0)
    x0, eps, t = torch.randn(64, 2), torch.randn(64, 2), torch.randint(1, 11, (64,))
    for prediction in ("eps", "v"):
        s = tiny(prediction=prediction).noise_schedule
        x_t = s.add_noise(x0, eps, t)
        target = s.target(x0, eps, t)  # what a perfect network outputs
        got_eps, got_x0 = s.eps_x0(x_t, t, target)
        torch.testing.assert_close(got_eps, eps, atol=2e-5, rtol=1e-4)
        torch.testing.assert_close(got_x0, x0, atol=2e-5, rtol=1e-4)
    v_s, eps_s = tiny(prediction="v").noise_schedule, tiny(prediction="eps").noise_schedule
    v = v_s.target(x0, eps, t)
    ab = v_s.alpha_bar[t].float()[:, None]
    torch.testing.assert_close(v, ab.sqrt() * eps - (1 - ab).sqrt() * x0)  # the definition
    # the same x̂_0 from either parameterisation of the same prediction
    x_t = eps_s.add_noise(x0, eps, t)
    torch.testing.assert_close(v_s.eps_x0(x_t, t, v)[1], eps_s.eps_x0(x_t, t, eps)[1], atol=2e-5, rtol=1e-4)


# ---- samplers ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("info", [PTS, IMG], ids=["points", "images-clipped"])
@pytest.mark.parametrize("steps", [None, 4], ids=["all-T", "strided"])
def test_ddim_step_with_eta_1_is_the_ancestral_step_with_the_posterior_variance(info: DataInfo, steps) -> None:
    """Step by step: the same x_t, network output and generator noise give the same x_{t'} at every visited
    time, over all T steps (the posterior's β̃_t) and strided (the respaced posterior)."""
    model = tiny(info=info, variance="posterior", scale=1.0)
    ancestral, ddim = model.make_scheduler("ddpm"), model.make_scheduler("ddim", eta=1.0)
    assert isinstance(ancestral, DDPMScheduler) and isinstance(ddim, DDIMScheduler)
    assert ancestral.clip == ddim.clip == (info is IMG)
    ancestral.set_timesteps(steps)
    ddim.set_timesteps(steps)
    assert ancestral.timesteps == ddim.timesteps and len(ancestral.timesteps) == (steps or 10)
    torch.manual_seed(0)
    x = torch.randn(32, *info.shape)
    for t in ancestral.timesteps:
        with torch.no_grad():
            out = model.predict(x, torch.full((32,), t), None)
        a = ancestral.step(out, t, x, torch.Generator().manual_seed(t))
        torch.testing.assert_close(ddim.step(out, t, x, torch.Generator().manual_seed(t)), a, atol=1e-5, rtol=1e-5)
        other = ancestral.step(out, t, x, torch.Generator().manual_seed(t + 100))  # other noise: another x_{t'}
        assert torch.allclose(other, a) == (ancestral.previous[t] == 0), t  # but none on the last step
        x = a


@pytest.mark.parametrize("info", [PTS, IMG], ids=["points", "images-clipped"])
@pytest.mark.parametrize("steps", [None, 4])
def test_ddim_with_eta_1_samples_as_the_ancestral_sampler_with_the_posterior_variance(info: DataInfo, steps) -> None:
    model = tiny(info=info, variance="posterior", scale=2.0)
    x_T = torch.randn(32, *info.shape)
    torch.manual_seed(5)
    ancestral, _ = model.reverse(x_T, None, steps, model.make_scheduler("ddpm"))
    torch.manual_seed(5)
    ddim, _ = model.reverse(x_T, None, steps, model.make_scheduler("ddim", eta=1.0))
    torch.testing.assert_close(ddim, ancestral, atol=1e-4, rtol=1e-4)
    torch.manual_seed(6)  # other noise: another result, so the equality above is not trivial
    assert not torch.allclose(model.reverse(x_T, None, steps, model.make_scheduler("ddpm"))[0], ancestral, atol=1e-3)


@pytest.mark.parametrize("steps", [None, 4], ids=["all-T", "strided"])
def test_ancestral_step_is_ho_et_als_update_with_the_respaced_betas(steps) -> None:
    """x_{t'} = (x_t − β/√(1−ᾱ_t) ε̂)/√(1−β) + √β z with β = 1 − ᾱ_t/ᾱ_{t'}: β_t itself over all T steps."""
    model = tiny(scale=1.0)  # points: x̂_0 is not clipped
    scheduler = model.make_scheduler("ddpm")
    scheduler.set_timesteps(steps)
    ab = model.noise_schedule.alpha_bar
    torch.manual_seed(0)
    x = torch.randn(16, 2)
    for t in scheduler.timesteps:
        t_prev = scheduler.previous[t]
        beta = 1 - ab[t] / ab[t_prev]
        if steps is None:
            assert t_prev == t - 1 and float(beta) == pytest.approx(float(model.noise_schedule.betas[t]))
        with torch.no_grad():
            out = model.predict(x, torch.full((16,), t), None)
        z = torch.randn(x.shape, generator=torch.Generator().manual_seed(t))
        expected = (x - beta / (1 - ab[t]).sqrt() * out) / (1 - beta).sqrt() + (beta.sqrt() * z if t_prev else 0)
        got = scheduler.step(out, t, x, torch.Generator().manual_seed(t))
        torch.testing.assert_close(got, expected.float(), atol=1e-5, rtol=1e-5)
        x = got


@pytest.mark.parametrize("name", list(json.loads(RECORDED.read_text())))
def test_samples_equal_those_recorded_from_the_sampler_inside_ddpm(name: str) -> None:
    """Existing configs and checkpoints sample as they did: fixed-seed samples of the tiny models against
    those the sampler that lived inside DDPM drew (ancestral over all T and strided, DDIM with η 0 and 0.5,
    clipped images, guided cddpm)."""
    case = json.loads(RECORDED.read_text())[name]
    model = tiny(ConditionalDDPM if case.get("cls") == "cddpm" else DDPM, info={"PTS": PTS, "IMG": IMG}[case["info"]],
                 **case["kwargs"])
    torch.manual_seed(case["seed"])
    x = model.sample(case["n"], None if case["y"] is None else torch.tensor(case["y"]), case["steps"])
    torch.testing.assert_close(x, torch.tensor(case["sample"]).view_as(x), atol=1e-5, rtol=0)


def gaussian_data_eps(schedule: NoiseSchedule, mean: Tensor, std: Tensor):
    """The exact ε̂ = E[ε | x_t] for data N(mean, diag std²): x_t ~ N(√ᾱ mean, ᾱ std² + 1 − ᾱ) per dimension."""
    def net(x: Tensor, t: Tensor, y: None = None) -> Tensor:  # x (B, D), t (B,)
        ab = schedule.at(schedule.alpha_bar, t, x)
        return (1 - ab).sqrt() * (x - ab.sqrt() * mean) / (ab * std**2 + 1 - ab)
    return net


def test_deterministic_samplers_solve_the_probability_flow_ode_of_gaussian_data() -> None:
    """For Gaussian data the ODE's map from x_T to x_0 is the affine map that keeps each dimension's
    standardised value; DDIM (η = 0) converges to it, DPM-Solver++(2M) many times faster."""
    schedule = NoiseSchedule("linear", 1000)
    mean, std = torch.tensor([0.5, -1.0], dtype=torch.float64), torch.tensor([0.3, 1.0], dtype=torch.float64)
    net = gaussian_data_eps(schedule, mean, std)
    x_T = torch.linspace(-3, 3, 13, dtype=torch.float64)[:, None].expand(13, 2)  # (13, 2)
    ab_T = schedule.alpha_bar[-1]
    exact = mean + std * (x_T - ab_T.sqrt() * mean) / (ab_T * std**2 + 1 - ab_T).sqrt()

    def error(kind: str, steps: int) -> float:
        scheduler = make_scheduler(kind, schedule)
        scheduler.set_timesteps(steps)
        x = x_T
        for t in scheduler.timesteps:
            x = scheduler.step(net(x, torch.full((13,), t)), t, x)
        return float((x - exact).abs().max())

    ddim = {n: error("ddim", n) for n in (10, 25, 200)}
    dpm = {n: error("dpm_solver", n) for n in (10, 25, 200)}
    assert ddim[200] < ddim[25] / 4 < ddim[10] / 4 and dpm[200] < dpm[25] / 10 < dpm[10] / 10, (ddim, dpm)
    assert dpm[10] < 0.3 * ddim[10] and dpm[25] < 0.3 * ddim[25], (ddim, dpm)
    solver = make_scheduler("dpm_solver", schedule)
    solver.set_timesteps(10)
    assert solver.timesteps[0] == 1000 and solver.timesteps[-1] == 1 and len(solver.timesteps) == 10
    assert solver.timesteps == sorted(set(solver.timesteps), reverse=True)
    ddim_step = make_scheduler("ddim", schedule)
    ddim_step.previous = solver.previous  # the first step has no earlier x̂_0: it is DDIM's
    out = net(x_T, torch.full((13,), 1000))
    torch.testing.assert_close(solver.step(out, 1000, x_T), ddim_step.step(out, 1000, x_T))


def test_the_sampler_is_chosen_in_config(make_cfg) -> None:
    import dataclasses

    from genlab.config.diffusion import DDPMConfig
    from genlab.models.schedulers import SCHEDULERS

    [field] = [f for f in dataclasses.fields(DDPMConfig) if f.name == "sampler"]
    assert set(field.metadata["choices"]) == set(SCHEDULERS)  # the schema offers every scheduler, and only those
    info = DataInfo("pts", (2,), bounded=False)
    for overrides, kind in ((["model.sampler=ddpm", "model.variance=posterior"], DDPMScheduler),
                            (["model.sampler=ddim", "model.ddim_eta=0.3"], DDIMScheduler),
                            (["model.sampler=dpm_solver"], DPMSolverScheduler)):
        cfg = make_cfg("model=ddpm", "data=toy2d", "model.net.hidden=[8]", *overrides)
        model = build_model(cfg.model, info)
        assert type(model.sampler) is kind and model.sampler.schedule is model.noise_schedule
        assert getattr(model.sampler, "eta", 0.3) == 0.3
        assert getattr(model.sampler, "variance", "posterior") == "posterior"


def test_ddim_with_eta_0_is_deterministic_given_x_T() -> None:
    model = tiny(scale=2.0)
    x_T = torch.randn(16, 2)
    ddim = model.make_scheduler("ddim", eta=0.0)
    torch.manual_seed(1)
    a, _ = model.reverse(x_T, None, 5, ddim)
    torch.manual_seed(2)
    b, _ = model.reverse(x_T, None, 5, ddim)
    torch.testing.assert_close(a, b)
    every = list(range(10, 0, -1))
    for steps, times in ((5, [10, 8, 6, 3, 1]), (None, every), (1, [10]), (50, every)):
        ddim.set_timesteps(steps)
        assert ddim.timesteps == times, steps


def test_the_schedule_moves_with_the_model_and_stays_out_of_checkpoints() -> None:
    model = tiny(info=IMG)
    assert isinstance(model.noise_schedule, NoiseSchedule)
    assert not any(k.startswith("noise_schedule") for k in model.state_dict())
    model.to("meta")  # every buffer moves: the schedulers step on the model's device
    assert model.noise_schedule.alpha_bar.device.type == "meta" and model.sampler.schedule.betas.device.type == "meta"


def test_samples_and_trajectory_are_in_data_space() -> None:
    model = tiny(info=IMG, scale=2.0)
    torch.manual_seed(3)
    x = model.sample(6, steps=3)
    assert x.shape == (6, 1, 4, 4) and x.min() >= 0 and x.max() <= 1
    frames = model.trajectory(5, 4)  # x_T, two intermediate steps, x_0
    assert frames.shape == (4, 5, 1, 4, 4) and frames.min() >= 0 and frames.max() <= 1
    torch.manual_seed(4)
    first = model.trajectory(5, 4)
    torch.manual_seed(4)
    again = model.sample(5)  # the same noise: the trajectory ends in the sample
    torch.testing.assert_close(first[-1], again)


@pytest.mark.parametrize("size", [8, 28, 32, 7])
@pytest.mark.parametrize("channels", [[8, 16], [8, 16, 16]])
def test_unet_keeps_sizes_that_do_not_halve_evenly(size: int, channels: list[int]) -> None:
    net = denoiser(in_shape=(3, size, size), num_classes=4, channels=channels, emb_dim=16, groups=4)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.1 * torch.randn_like(p))
    x, t = torch.randn(2, 3, size, size), torch.tensor([1, 500])
    out = net(x, t, torch.tensor([0, 1]))
    assert out.shape == x.shape
    assert not torch.allclose(out, net(x, t, torch.tensor([2, 3])))  # the class reaches the output
    assert not torch.allclose(out, net(x, torch.tensor([900, 2]), torch.tensor([0, 1])))  # so does the time


# ---- the variational bound --------------------------------------------------------------------------------
def chain_bound(model: DDPM, x0: Tensor, n: int) -> tuple[float, float]:
    """−ELBO = E_q[log q(x_{1:T}|x_0) − log p(x_{0:T})] by Monte Carlo over n whole forward chains, each
    density written out: q's Markov steps, p's prior and reverse steps with Ho et al.'s mean
    μ = (x_t − β_t/√(1−ᾱ_t) ε̂)/√α_t and σ_t² = β_t. Returns the mean and its standard error (nats)."""
    T, betas, ab = model.timesteps, model.noise_schedule.betas, model.noise_schedule.alpha_bar
    xs = [x0.double().expand(n, -1)]
    for t in range(1, T + 1):
        xs.append((1 - betas[t]).sqrt() * xs[-1] + betas[t].sqrt() * torch.randn(n, x0.shape[1], dtype=torch.float64))
    log_q = sum(Normal((1 - betas[t]).sqrt() * xs[t - 1], betas[t].sqrt()).log_prob(xs[t]).sum(1)
                for t in range(1, T + 1))
    log_p = Normal(0.0, 1.0).log_prob(xs[T]).sum(1)
    for t in range(1, T + 1):
        eps = model.net(xs[t].float(), torch.full((n,), t), None).double()
        mean = (xs[t] - betas[t] / (1 - ab[t]).sqrt() * eps) / (1 - betas[t]).sqrt()
        log_p = log_p + Normal(mean, betas[t].sqrt()).log_prob(xs[t - 1]).sum(1)
    values = log_q - log_p
    return values.mean().item(), values.std().item() / math.sqrt(n)


@torch.no_grad()
def test_bound_matches_a_monte_carlo_estimate_over_whole_forward_chains() -> None:
    model = tiny(timesteps=4, beta_start=1e-3, beta_end=2e-3, scale=1.0)  # β = 0.25 .. 0.5, no clipping
    x0 = torch.tensor([[0.7, -1.2]])
    torch.manual_seed(0)
    n = 40000
    expected, se_chain = chain_bound(model, x0, n)
    values = model.nll_bound(x0.expand(n, 2), None, samples=100)  # the sum over all T steps, analytic KLs
    got, se = values.mean().item(), values.std().item() / math.sqrt(n)
    assert abs(got - expected) < 5 * math.hypot(se, se_chain), (got, expected, se, se_chain)
    assert se < se_chain  # analytic KLs: less noise than the chain's log-ratio
    [bound] = model.likelihood_bounds(Budget(samples=100))
    assert (bound.name, bound.unit) == ("neg_elbo", "nats") and "all 4 steps" in bound.description


@torch.no_grad()
def test_monte_carlo_sum_over_steps_is_unbiased() -> None:
    model = tiny(timesteps=12, beta_start=1e-3, beta_end=5e-3, scale=1.0)
    x0 = torch.tensor([[0.3, 0.9]]).expand(20000, 2)
    torch.manual_seed(0)
    exact = model.nll_bound(x0, samples=100)  # all 11 middle steps
    estimate = model.nll_bound(x0, samples=2, chunk=1)  # 2 random steps each, from 2..6 and 7..12
    se = math.hypot(exact.std().item(), estimate.std().item()) / math.sqrt(len(x0))
    assert abs(exact.mean().item() - estimate.mean().item()) < 5 * se
    assert estimate.std() > exact.std()  # the price of fewer steps
    [bound] = model.likelihood_bounds(Budget(samples=2))
    assert "2 steps per sample" in bound.description


def test_discretised_decoder_is_a_distribution_over_the_pixel_grid() -> None:
    grid = torch.arange(256, dtype=torch.float64) * 2 / 255 - 1  # every 8-bit value, in [−1, 1]
    for mean, std in ((0.3, 0.01), (-1.2, 0.2), (0.999, 1e-3), (0.0, 3.0)):
        log_p = discretised_gaussian_log_likelihood(grid, torch.tensor(mean, dtype=torch.float64),
                                                    torch.tensor(std, dtype=torch.float64))
        assert log_p.exp().sum().item() == pytest.approx(1.0, abs=1e-9)
    inner = discretised_gaussian_log_likelihood(grid[100:101], torch.tensor(0.0, dtype=torch.float64),
                                                torch.tensor(0.1, dtype=torch.float64))
    normal = Normal(0.0, 0.1)
    lo, hi = grid[100] - 1 / 255, grid[100] + 1 / 255
    assert inner.exp().item() == pytest.approx((normal.cdf(hi) - normal.cdf(lo)).item(), rel=1e-9)


@torch.no_grad()
def test_image_bound_is_in_bits_per_dim() -> None:
    model = tiny(info=IMG, timesteps=6)
    x = torch.randint(0, 256, (5, 1, 4, 4)).float() / 255
    [bound] = model.likelihood_bounds(Budget(samples=100))
    assert (bound.name, bound.unit) == ("bpd", "bits/dim")
    torch.manual_seed(0)
    bits = bound.per_sample(x, None)
    torch.manual_seed(0)
    nats = model.nll_bound(x)
    torch.testing.assert_close(bits, (nats / (16 * math.log(2))).double())
    assert torch.all(bits > 0)  # a discrete distribution: −log P >= 0


# ---- classifier-free guidance -----------------------------------------------------------------------------
def test_guidance_scale_0_and_1_give_the_unconditional_and_conditional_predictions() -> None:
    model = tiny(ConditionalDDPM, info=IMG, label_dropout=0.5, guidance_scale=3.0, scale=2.0)
    assert model.conditional and model.num_classes == 3
    x, t, y = torch.randn(4, 1, 4, 4), torch.tensor([1, 3, 5, 9]), torch.tensor([0, 1, 2, 1])
    with torch.no_grad():
        cond, uncond = model.predict(x, t, y), model.predict(x, t, torch.full((4,), 3))
        torch.testing.assert_close(model.guided(0.0)(x, t, y), uncond)
        torch.testing.assert_close(model.guided(1.0)(x, t, y), cond)
        torch.testing.assert_close(model.guided()(x, t, y), uncond + 3.0 * (cond - uncond), atol=1e-5, rtol=1e-5)
    assert not torch.allclose(cond, uncond)
    torch.manual_seed(0)
    labels = torch.randint(0, 3, (20000,))
    given = model.train_labels(labels)
    dropped = given == 3  # the "no class" token
    assert dropped.float().mean().item() == pytest.approx(0.5, abs=0.02)
    assert torch.equal(given[~dropped], labels[~dropped])


def test_guidance_wraps_any_conditional_denoiser() -> None:
    calls = []

    def net(x: Tensor, t: Tensor, c: Tensor) -> Tensor:  # x (B, 2), c (B,): the condition shifts the output
        calls.append(len(x))
        return x * t[:, None] + c[:, None].float()

    x, t, c = torch.randn(3, 2), torch.tensor([1, 2, 3]), torch.tensor([4, 5, 6])
    guided = ClassifierFreeGuidance(net, lambda n: torch.zeros(n, dtype=torch.long), 2.5)
    expected = x * t[:, None] + 2.5 * c[:, None].float()  # out_u + s(out_c − out_u)
    torch.testing.assert_close(guided(x, t, c), expected)
    torch.testing.assert_close(guided(x, t, None), x * t[:, None])  # no condition: the unconditional output
    torch.testing.assert_close(guided.at_scale(1.0)(x, t, c), net(x, t, c))
    assert calls == [6, 3, 3, 3]  # one call over the batch twice; one call at s = 1 or without a condition


def test_guidance_sweep_changes_only_the_guidance() -> None:
    model = tiny(ConditionalDDPM, info=IMG, guidance_scale=2.0, scale=2.0)
    torch.manual_seed(0)
    a = model.guidance_sweep(torch.tensor([0, 1, 2]), [0.0, 1.0, 1.0, 3.0])
    torch.manual_seed(0)
    b = model.guidance_sweep(torch.tensor([2, 2, 0]), [0.0, 1.0])
    assert a.shape == (4, 3, 1, 4, 4) and model.guidance_scale == 2.0  # the model's own scale is kept
    torch.testing.assert_close(a[1], a[2])  # the same noise for every scale
    torch.testing.assert_close(a[0], b[0])  # scale 0 is unconditional: the classes do not matter
    assert not torch.allclose(a[1], b[1]) and not torch.allclose(a[1], a[3])


def test_a_short_training_puts_the_samples_on_the_ring() -> None:
    """400 Adam steps of the simple loss on ring8 (radius 2): an untrained denoiser's DDIM samples are nowhere
    near the ring; the trained one's mostly lie within 0.3 of it, spread over all 8 sectors (DDIM over 20
    steps, DPM-Solver++ over 10)."""
    from genlab.data.builtin import toy_modes

    modes = toy_modes("ring8")
    torch.manual_seed(0)
    net = functools.partial(denoiser, hidden=[64, 64], emb_dim=32)
    model = DDPM(data_info=DataInfo("ring", (2,), bounded=False), net=net, timesteps=100, ema=None,
                 sampler="ddim", sample_steps=20)

    def on_ring(x: Tensor) -> tuple[float, float]:
        near = ((x.norm(dim=1) - 2).abs() < 0.3).float().mean().item()
        sector = (torch.atan2(x[:, 1], x[:, 0]) / (math.pi / 4)).round().long() % 8  # the nearest mode's
        return near, (torch.bincount(sector, minlength=8).float() / len(x)).min().item()

    assert on_ring(model.eval().sample(800))[0] < 0.1
    opt = torch.optim.Adam(model.train().parameters(), lr=3e-3)
    for _ in range(400):
        x = modes[torch.randint(8, (256,))] + 0.05 * torch.randn(256, 2)
        loss = model.loss_terms({"x": x}, "train")["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    near, least = on_ring(model.eval().sample(800))
    assert near > 0.5 and least > 0.03, (near, least)
    model.sampler = model.make_scheduler("dpm_solver")  # another scheduler, half the steps: as near
    near, least = on_ring(model.sample(800, steps=10))
    assert near > 0.5 and least > 0.03, (near, least)


# ---- runs through genlab-train -----------------------------------------------------------------------------
SHORT = ["model.timesteps=50", "callbacks.evaluator.sample_steps=10",
         "callbacks.evaluator.metrics.likelihood.samples=8", "trainer.limit_test_batches=1.0"]


def test_ddpm_trains_on_points_and_reports_its_bound_and_mode_coverage(make_cfg) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = make_cfg("model=ddpm", "data=toy2d", *TINY["toy2d"], *FAST, *SHORT, "model.net.hidden=[32,32]",
                   "logger=tensorboard")
    metrics = train(cfg)
    out = Path(cfg.paths.output_dir)
    # the particles' way from noise: a TensorBoard image sequence (one step per frame) and a row of panels
    (folder,) = {p.parent for p in out.rglob("events.out.tfevents.*")}
    events = EventAccumulator(str(folder), size_guidance={"images": 0}).Reload()
    assert [e.step for e in events.Images("test/trajectory")] == list(range(8))
    assert (out / "images" / "trajectory.png").is_file()
    written = json.loads((out / "metrics.json").read_text())
    assert written["units"]["test/neg_elbo"] == "nats" and "test/bpd" not in metrics
    assert math.isfinite(metrics["test/neg_elbo"]) and math.isfinite(metrics["test/mmd2"])
    assert 0 <= metrics["test/modes_covered"] <= 8 and metrics["test/sample_steps"] == 10
    assert (out / "images" / "samples.png").is_file()


def test_ddpm_and_cddpm_train_on_digits_and_report_bits_per_dim(make_cfg) -> None:
    for model in ("ddpm", "cddpm"):
        cfg = make_cfg(f"model={model}", "data=digits", *TINY["digits"], *FAST, *SHORT, "model.net.channels=[8,16]",
                       "callbacks.evaluator.metrics.sample_classes.per_class=4")
        metrics = train(cfg)
        out = Path(cfg.paths.output_dir)
        written = json.loads((out / "metrics.json").read_text())
        assert written["units"]["test/bpd"] == "bits/dim"
        assert 0 < metrics["test/bpd"] < 64  # a bound on 8-bit data: far below 8 bits/dim unless broken
        for name in ("fid", "kid", "precision", "recall"):
            assert math.isfinite(metrics[f"test/{name}"]), name
        assert (out / "images" / "samples.png").is_file() and (out / "images" / "trajectory.png").is_file()
        assert (out / "images" / "guidance_sweep.png").is_file() == (model == "cddpm")
        if model == "cddpm":
            assert 0 <= metrics["test/sample_class_acc"] <= 1


def test_latent_ddpm_diffuses_the_codes_of_a_finished_autoencoder_run(make_cfg, tmp_path: Path) -> None:
    ae_cfg = make_cfg("model=ae", "data=digits", *TINY["digits"], *FAST, "model.latent_dim=4",
                      "model.net.hidden=[32]")
    OmegaConf.update(ae_cfg, "paths.output_dir", str(tmp_path / "ae"))
    train(ae_cfg)
    ae_dir = tmp_path / "ae"
    cfg = make_cfg("model=latent_ddpm", f"model.autoencoder={ae_dir}", "data=digits", *TINY["digits"], *FAST, *SHORT,
                   "model.net.hidden=[32,32]")
    metrics = train(cfg)
    assert math.isfinite(metrics["test/fid"]) and "test/bpd" not in metrics  # codes: no bound on images
    out = Path(cfg.paths.output_dir)
    assert (out / "images" / "samples.png").is_file()
    # the codes were standardised with the training codes' statistics, and the autoencoder stayed frozen
    model = load_model(None, out / json.loads((out / "metrics.json").read_text())["best_checkpoint"])
    assert isinstance(model, LatentDDPM) and bool(model.code_stats_ready)
    ae = component("autoencoder", ae_dir)
    dm = instantiate(cfg.data)
    dm.setup("fit")
    codes = ae.encode(dm.tensors("train").x).detach()
    torch.testing.assert_close(model.code_mean, codes.mean(0), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(model.code_std, codes.std(0), atol=1e-5, rtol=1e-4)
    for name, weight in ae.state_dict().items():
        torch.testing.assert_close(model.autoencoder.state_dict()[name], weight)
    x = model.eval().sample(3, steps=4)
    assert x.shape == (3, 1, 8, 8) and x.min() >= 0 and x.max() <= 1
    # a run made while LatentDDPM lived in genlab.models.diffusion carries that target: it still loads
    best = out / json.loads((out / "metrics.json").read_text())["best_checkpoint"]
    state = torch.load(best, weights_only=True)
    assert state["genlab"]["model_config"]["_target_"] == "genlab.models.latent_diffusion.LatentDDPM"
    state["genlab"]["model_config"]["_target_"] = "genlab.models.diffusion.LatentDDPM"
    torch.save(state, tmp_path / "old.ckpt")
    assert isinstance(load_model(None, tmp_path / "old.ckpt"), LatentDDPM)
    old_run = tmp_path / "old_run" / ".hydra"  # and its run folder's config (genlab-eval, resume=)
    old_run.mkdir(parents=True)
    (old_run / "config.yaml").write_text("model: {_target_: genlab.models.diffusion.LatentDDPM}\ndata: {}\n")
    assert stored_config(old_run.parent).model._target_ == "genlab.models.latent_diffusion.LatentDDPM"


def component(name: str, folder: Path | str, info: DataInfo | None = None) -> object:
    """The frozen component ``name`` of LatentDDPM / CaptionDDPM loaded from ``folder`` as the recipe does."""
    from genlab.checkpoints import frozen_component
    from genlab.models.caption_diffusion import CaptionDDPM

    spec = {**LatentDDPM.frozen_runs, **CaptionDDPM.frozen_runs}[name]
    return frozen_component(OmegaConf.create({name: str(folder)}), name, f"model.{name}", spec, info)


def test_latent_ddpm_refuses_a_folder_that_is_not_a_finished_autoencoder_run(make_cfg, tmp_path: Path) -> None:
    with pytest.raises(UserError, match="model.autoencoder=.*nope is not a folder"):
        component("autoencoder", tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no finished run's checkpoint.*folder of an autoencoder or VAE run"):
        component("autoencoder", tmp_path / "empty")
    with pytest.raises(UserError, match="model.autoencoder is empty: give the folder of a finished"):
        component("autoencoder", "")  # `model.autoencoder=` on the command line: not the current folder
    with pytest.raises(UserError, match="model.autoencoder must be given: the folder of a finished autoencoder"):
        build_model(make_cfg("model=latent_ddpm", "data=digits").model, IMG)
    # the recipe builds the component: a config naming a missing folder fails there, naming the key
    cfg = make_cfg("model=latent_ddpm", f"model.autoencoder={tmp_path / 'nope'}", "data=digits")
    with pytest.raises(UserError, match="model.autoencoder=.*nope is not a folder"):
        build_model(cfg.model, instantiate(cfg.data).info)


# ---- configs -------------------------------------------------------------------------------------------------
def test_conditional_and_latent_configs_keep_the_ddpm_settings(make_cfg) -> None:
    base = OmegaConf.to_container(make_cfg("model=ddpm").model)
    for name, extra in (("cddpm", []), ("latent_ddpm", ["model.autoencoder=x"]), ("caption_ddpm", ["model.clip=x"])):
        cfg = OmegaConf.to_container(make_cfg(f"model={name}", *extra).model)
        differ = {k for k in base if k not in ("_target_", "net") and cfg[k] != base[k]}
        assert not differ, (name, differ)
        assert cfg["net"]["emb_dim"] == base["net"]["emb_dim"]


def test_a_step_budget_beyond_the_chain_is_refused_on_the_command_line(tmp_path) -> None:
    r = run_cli("model=ddpm", "data=digits", "model.sample_steps=5000", f"paths.log_dir={tmp_path}")
    assert r.returncode == 2 and "model.sample_steps=5000 exceeds model.timesteps=1000" in r.stderr, r.stderr[-1500:]
    assert "Traceback" not in r.stderr and not list(tmp_path.glob("train/runs/*"))


@pytest.mark.parametrize("model,override,key", [
    ("ddpm", "model.timesteps=0", "model.timesteps"), ("ddpm", "model.schedule=nope", "model.schedule"),
    ("ddpm", "model.sampler=nope", "model.sampler"), ("ddpm", "model.sample_steps=0", "model.sample_steps"),
    ("ddpm", "model.net.kind=nope", "model.net.kind"), ("ddpm", "model.ddim_eta=-1", "model.ddim_eta"),
    ("ddpm", "model.beta_start=0.5", "model.beta_start"), ("ddpm", "model.net.blocks=0", "model.net.blocks"),
    ("ddpm", "model.net.channels=[]", "model.net.channels"), ("ddpm", "model.net.hidden=[0]", "model.net.hidden"),
    ("ddpm", "model.net.dropout=1", "model.net.dropout"), ("cddpm", "model.label_dropout=1", "model.label_dropout"),
    ("cddpm", "model.guidance_scale=-1", "model.guidance_scale"),
    ("ddpm", "model.net.groups=7", "model.net.groups=7 does not divide"),
    ("ddpm", "callbacks.evaluator.sample_steps=2000", "callbacks.evaluator.sample_steps=2000 exceeds"),
])
def test_bad_settings_are_clear_errors(make_cfg, model: str, override: str, key: str) -> None:
    cfg = make_cfg(f"model={model}", "data=digits", override)
    with pytest.raises(UserError, match=re.escape(key)):
        validate(cfg)
        build_model(cfg.model, instantiate(cfg.data).info)


# ---- caption to image (the small DALLE-2) ---------------------------------------------------------------------
def test_vector_conditioning_reads_the_zero_vector_as_no_condition() -> None:
    torch.manual_seed(0)
    net = denoiser(in_shape=(1, 8, 8), cond_dim=5, channels=[4, 8], emb_dim=8, groups=2)
    with torch.no_grad():  # the zero-initialised output layers would hide the condition
        for p in net.parameters():
            p.add_(0.3 * torch.randn_like(p))
    x, t = torch.randn(3, 1, 8, 8), torch.tensor([1, 5, 9])
    torch.testing.assert_close(net(x, t, None), net(x, t, torch.zeros(3, 5)))
    assert not torch.allclose(net(x, t, torch.randn(3, 5)), net(x, t, None))
    with pytest.raises(ValueError, match=r"expected \(B, 5\)"):
        net(x, t, torch.randn(3, 4))
    with pytest.raises(ValueError, match="not both"):
        denoiser(in_shape=(2,), num_classes=3, cond_dim=5)


@pytest.fixture(scope="module")
def clip_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A short CLIP run on the digits, trained once for the caption tests."""
    from conftest import CACHE, CONF
    from hydra import compose, initialize_config_dir
    from omegaconf import open_dict

    folder = tmp_path_factory.mktemp("clip")
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=["model=clip", "data=digits", *TINY["digits"], *FAST,
                                          "model.net.hidden=[32]", "model.proj_dim=16"])
    with open_dict(cfg):
        cfg.paths.output_dir, cfg.paths.log_dir, cfg.paths.cache_dir = str(folder), str(folder / "logs"), str(CACHE)
    train(cfg)
    return folder


def test_caption_ddpm_learns_from_clip_captions_and_samples_from_free_text(make_cfg, clip_run: Path,
                                                                         tmp_path: Path, capsys) -> None:
    from genlab.models.caption_diffusion import CaptionDDPM
    from genlab.sample import main as sample_main

    cfg = make_cfg("model=caption_ddpm", f"model.clip={clip_run}", "data=digits", *TINY["digits"], *FAST, *SHORT,
                   "model.net.channels=[8,16]", "callbacks.evaluator.metrics.sample_classes.per_class=4")
    metrics = train(cfg)
    assert 0 <= metrics["test/sample_class_acc"] <= 1 and math.isfinite(metrics["test/fid"])
    assert 0 < metrics["test/bpd"] < 64
    out = Path(cfg.paths.output_dir)
    assert (out / "images" / "guidance_sweep.png").is_file()
    model = load_model(None, out / json.loads((out / "metrics.json").read_text())["best_checkpoint"]).eval()
    assert isinstance(model, CaptionDDPM)
    # the conditions are the frozen CLIP run's embeddings of captions of the label's own class
    clip = load_model(None, clip_run / json.loads((clip_run / "metrics.json").read_text())["best_checkpoint"]).eval()
    vectors, classes = clip.training_captions()
    y = torch.arange(10).repeat(5)
    picked = model.captions(y, "train")  # (50, D), each must be a row of its class
    match = (picked[:, None, :] - vectors[None]).abs().amax(2) < 1e-5  # (50, N)
    assert bool(match.any(1).all()) and bool((match & (classes[None] == y[:, None])).any(1).all())
    held = model.condition(50, y)
    test_vectors, test_classes = clip.held_out_captions()
    hit = (held[:, None, :] - test_vectors[None]).abs().amax(2) < 1e-5
    assert bool((hit & (test_classes[None] == y[:, None])).any(1).all())
    dropped = model.train_labels(torch.zeros(400, dtype=torch.long))
    share = float((dropped.abs().sum(1) == 0).float().mean())
    assert abs(share - model.label_dropout) < 0.06, share
    # free text: genlab-sample --prompt, one row per caption; an all-unknown prompt is refused
    x = model.sample_texts(["a picture of a 7", "a 3"], 2, steps=3)  # the digits' class names are 0..9
    assert x.shape == (4, 1, 8, 8) and 0 <= float(x.min()) and float(x.max()) <= 1
    grid = tmp_path / "prompt.png"
    (out / ".hydra").mkdir()
    OmegaConf.save(cfg, out / ".hydra" / "config.yaml")  # what genlab-train's Hydra app writes
    sample_main([str(out), "--prompt", "a picture of a 7", "--prompt", "a zebra 3", "-n", "2",
                 "--steps", "3", "--out", str(grid)])
    assert grid.is_file() and "unknown words ['zebra']" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        sample_main([str(out), "--prompt", "zebra giraffe", "--out", str(tmp_path / "x.png")])
    assert exit_info.value.code != 0 and "none of its words" in capsys.readouterr().err


def test_caption_ddpm_refuses_a_run_without_a_text_encoder_or_of_other_data(make_cfg, clip_run: Path,
                                                                          tmp_path: Path) -> None:
    with pytest.raises(UserError, match="model.clip=.* is not a folder"):
        component("clip", tmp_path / "nope", IMG)
    with pytest.raises(UserError, match=r"model.clip=.* was trained on .*\(shape \(1, 8, 8\); num_classes 10\).*"
                                        r"this run's data is img \(shape \(1, 4, 4\); num_classes 3\)"):
        component("clip", clip_run, IMG)  # 4x4 images of 3 classes
    ae_cfg = make_cfg("model=ae", "data=digits", *TINY["digits"], *FAST, "model.latent_dim=4", "model.net.hidden=[16]")
    OmegaConf.update(ae_cfg, "paths.output_dir", str(tmp_path / "ae"))
    train(ae_cfg)
    digits = DataInfo("digits", (1, 8, 8), num_classes=10)
    with pytest.raises(UserError, match="holds an Autoencoder, which cannot embed text: give the folder of a CLIP run"):
        component("clip", tmp_path / "ae", digits)
