"""The noise schedule of a diffusion model and the schedulers that sample through it, apart from the
denoiser (as diffusers' schedulers are): ``NoiseSchedule`` holds β_t and ᾱ_t and the algebra of the forward
process, which training, the variational bound and every scheduler share; a ``Scheduler`` visits
``timesteps`` (chosen by ``set_timesteps(n)``) from T down, and ``step`` takes the denoiser's output at x_t
to x_{t'}, t' the next time visited (0 after the last).

Time steps t are 1..T; the schedule arrays are indexed by t, with index 0 holding ᾱ_0 = 1 (β_0 = 0).
``SCHEDULERS`` names the samplers ``model.sampler`` chooses from: ``ddpm``, the ancestral sampler (over all
T steps, or an evenly strided subsequence with the respaced posterior, whose β's follow from the ᾱ's it
keeps), ``ddim`` (Song et al. 2021) with noise η, and ``dpm_solver``, DPM-Solver++(2M) (Lu et al. 2022).
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn


def beta_schedule(kind: str, timesteps: int, beta_start: float = 1e-4, beta_end: float = 0.02) -> Tensor:
    """β_1..β_T (T,) float64. ``linear``: evenly from β_start to β_end, both scaled by 1000/T (Nichol &
    Dhariwal 2021), so that T = 1000 is Ho et al.'s schedule and a shorter chain still ends near pure
    noise; ``cosine``: ᾱ_t = f(t)/f(0), f(t) = cos²((t/T + s)/(1 + s)·π/2), s = 0.008 (Nichol & Dhariwal).
    Both are clipped at 0.999 (the cosine's last steps, a linear schedule of very few steps)."""
    if kind == "linear":
        scale = 1000.0 / timesteps
        betas = torch.linspace(beta_start * scale, beta_end * scale, timesteps, dtype=torch.float64)
    elif kind == "cosine":
        s = 0.008
        steps = torch.arange(timesteps + 1, dtype=torch.float64) / timesteps
        f = torch.cos((steps + s) / (1 + s) * math.pi / 2) ** 2
        alpha_bar = f / f[0]
        betas = 1 - alpha_bar[1:] / alpha_bar[:-1]
    else:
        raise ValueError(f"schedule {kind!r} is not one of linear, cosine")
    return betas.clamp(max=0.999)


def alpha_bars(betas: Tensor) -> Tensor:
    """ᾱ_0..ᾱ_T (T + 1,) from β_1..β_T, with ᾱ_0 = 1."""
    return torch.cat([torch.ones(1, dtype=betas.dtype), torch.cumprod(1 - betas, 0)])


Scalar = Any  # a float, or a tensor of them


def root(value: Scalar) -> Scalar:
    return value.sqrt() if isinstance(value, Tensor) else math.sqrt(value)


class Posterior(NamedTuple):
    """q(x_{t'}|x_t, x_0) = N(coef_x0 x_0 + coef_xt x_t, variance) for t' < t, with the step's β."""

    beta: Scalar
    coef_x0: Scalar
    coef_xt: Scalar
    variance: Scalar


def posterior(ab: Scalar, ab_prev: Scalar) -> Posterior:
    """The posterior between times t' < t from ᾱ_t and ᾱ_{t'} (floats, or tensors that broadcast): the step's
    β = 1 − ᾱ_t/ᾱ_{t'}, mean √ᾱ_{t'} β/(1−ᾱ_t) x_0 + √(1−β)(1−ᾱ_{t'})/(1−ᾱ_t) x_t, variance
    (1−ᾱ_{t'})/(1−ᾱ_t) β (β̃; 0 for t' = 0). t' = t − 1 is one step of the chain."""
    beta = 1 - ab / ab_prev
    return Posterior(beta, root(ab_prev) * beta / (1 - ab), root(1 - beta) * (1 - ab_prev) / (1 - ab),
                     (1 - ab_prev) / (1 - ab) * beta)


class NoiseSchedule(nn.Module):
    """β_0..β_T and ᾱ_0..ᾱ_T (T + 1,) float64 buffers (they follow from the config: kept out of checkpoints,
    moved with the model), and what the network predicts, ``prediction`` ε (eps) or v = √ᾱ_t ε − √(1−ᾱ_t) x_0."""

    def __init__(self, kind: str = "linear", timesteps: int = 1000, beta_start: float = 1e-4,
                 beta_end: float = 0.02, prediction: str = "eps") -> None:
        super().__init__()
        betas = beta_schedule(kind, timesteps, beta_start, beta_end)
        self.timesteps, self.prediction = timesteps, prediction
        self.register_buffer("betas", torch.cat([torch.zeros(1, dtype=torch.float64), betas]), persistent=False)
        self.register_buffer("alpha_bar", alpha_bars(betas), persistent=False)
        self.alpha_bar_host = self.alpha_bar.tolist()  # ᾱ_t as floats: the schedulers' per-step scalars

    @staticmethod
    def at(values: Tensor, t: Tensor, like: Tensor) -> Tensor:
        """values[t] (B,) shaped to broadcast over ``like`` (B, ...), in its dtype."""
        return values[t].to(like.dtype).view(-1, *[1] * (like.dim() - 1))

    def add_noise(self, x0: Tensor, noise: Tensor, t: Tensor) -> Tensor:
        """x_t = √ᾱ_t x_0 + √(1−ᾱ_t) ε (B, ...), a draw of q(x_t|x_0) for t (B,) in 1..T."""
        ab = self.at(self.alpha_bar, t, x0)
        return ab.sqrt() * x0 + (1 - ab).sqrt() * noise

    def target(self, x0: Tensor, noise: Tensor, t: Tensor) -> Tensor:
        """What the network learns to output at x_t = add_noise(x0, noise, t): ε, or v (B, ...)."""
        if self.prediction == "eps":
            return noise
        ab = self.at(self.alpha_bar, t, x0)
        return ab.sqrt() * noise - (1 - ab).sqrt() * x0

    def eps_x0(self, x_t: Tensor, t: Tensor, out: Tensor, clip: bool = False) -> tuple[Tensor, Tensor]:
        """(ε̂, x̂_0), each (B, ...), from the network's output at x_t for t (B,). ``clip``: x̂_0 clipped to
        [−1, 1] and ε̂ recomputed from it, so the two stay consistent: x_t = √ᾱ x̂_0 + √(1−ᾱ) ε̂."""
        ab = self.at(self.alpha_bar, t, x_t)
        if self.prediction == "eps":
            eps, x0 = out, (x_t - (1 - ab).sqrt() * out) / ab.sqrt()
        else:  # v: x_0 = √ᾱ x_t − √(1−ᾱ) v, ε = √(1−ᾱ) x_t + √ᾱ v
            eps, x0 = (1 - ab).sqrt() * x_t + ab.sqrt() * out, ab.sqrt() * x_t - (1 - ab).sqrt() * out
        if clip:
            x0 = x0.clamp(-1, 1)
            eps = (x_t - ab.sqrt() * x0) / (1 - ab).sqrt()
        return eps, x0

    def posterior(self, x0: Tensor, x_t: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """Mean (B, ...) and variance (B, 1, ...) of q(x_{t−1}|x_t, x_0) for t (B,) >= 1 (variance 0 at t = 1)."""
        q = posterior(self.at(self.alpha_bar, t, x0), self.at(self.alpha_bar, t - 1, x0))
        return q.coef_x0 * x0 + q.coef_xt * x_t, q.variance


class Scheduler:
    """A sampler over a ``NoiseSchedule``: ``set_timesteps(n)`` picks the n times (None: all T) it visits,
    ``timesteps`` (decreasing, from T); ``step(out, t, x_t)`` goes from x_t to x_{t'}, t' the next of them
    (0 after the last), from the network's output ``out`` at x_t. ``clip``: the predicted x_0 clipped to
    [−1, 1] (images). Noise is drawn from ``generator`` (None: torch's global generator)."""

    def __init__(self, schedule: NoiseSchedule, clip: bool = False) -> None:
        self.schedule, self.clip = schedule, clip
        self.set_timesteps(None)

    def set_timesteps(self, n: int | None) -> None:
        """Visit n times (clamped to 1..T; None: all T) evenly spaced in 1..T, always T, decreasing."""
        total = self.schedule.timesteps
        n = total if n is None else max(1, min(int(n), total))
        self.visit(torch.linspace(total, 1, n, dtype=torch.float64).round().long())

    def visit(self, times: Tensor) -> None:
        """Visit ``times`` (k,), decreasing (repeats dropped)."""
        self.timesteps: list[int] = torch.unique_consecutive(times).tolist()
        self.previous = dict(zip(self.timesteps, [*self.timesteps[1:], 0]))  # t -> the time the step from t goes to

    def add_noise(self, x0: Tensor, noise: Tensor, t: Tensor) -> Tensor:
        """x_t (B, ...) for t (B,): the forward process."""
        return self.schedule.add_noise(x0, noise, t)

    def step(self, model_output: Tensor, t: int, x_t: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """x_{t'} (B, ...) from x_t (B, ...) and the network's output at it, for t one of ``timesteps``."""
        t_prev = self.previous[t]
        tt = torch.full((x_t.shape[0],), t, device=x_t.device, dtype=torch.long)
        eps, x0 = self.schedule.eps_x0(x_t, tt, model_output, self.clip)
        return self.update(x_t, eps, x0, t, t_prev, generator)

    def update(self, x_t: Tensor, eps: Tensor, x0: Tensor, t: int, t_prev: int,
               generator: torch.Generator | None) -> Tensor:
        """x_{t'} from x_t and the predicted ε̂ and x̂_0."""
        raise NotImplementedError

    def alpha_bars(self, t: int, t_prev: int) -> tuple[float, float]:
        """ᾱ_t and ᾱ_{t'} as floats."""
        return self.schedule.alpha_bar_host[t], self.schedule.alpha_bar_host[t_prev]

    @staticmethod
    def noise(like: Tensor, generator: torch.Generator | None) -> Tensor:
        """z ~ N(0, I) shaped as ``like``."""
        return torch.randn(like.shape, generator=generator, device=like.device, dtype=like.dtype)


class DDPMScheduler(Scheduler):
    """The ancestral sampler (Ho et al. 2020): x_{t'} ~ N(posterior mean at x̂_0, σ²) between the visited
    times t' < t, with the step's β = 1 − ᾱ_t/ᾱ_{t'} (β_t itself over all T steps); σ² = β (``variance``
    beta) or the posterior's β̃ (posterior). No noise on the last step."""

    def __init__(self, schedule: NoiseSchedule, variance: str = "beta", clip: bool = False) -> None:
        super().__init__(schedule, clip)
        self.variance = variance

    def update(self, x_t: Tensor, eps: Tensor, x0: Tensor, t: int, t_prev: int,
               generator: torch.Generator | None) -> Tensor:
        q = posterior(*self.alpha_bars(t, t_prev))
        x = q.coef_x0 * x0 + q.coef_xt * x_t
        if t_prev > 0:
            x = x + math.sqrt(q.beta if self.variance == "beta" else q.variance) * self.noise(x, generator)
        return x


class DDIMScheduler(Scheduler):
    """DDIM (Song et al. 2021): x_{t'} = √ᾱ_{t'} x̂_0 + √(1 − ᾱ_{t'} − σ²) ε̂ + σz with σ = η·β̃^{1/2}, β̃ the
    posterior variance between t' and t. η = 0: deterministic given x_T; η = 1: the ancestral step with
    the posterior variance. No noise on the last step."""

    def __init__(self, schedule: NoiseSchedule, eta: float = 0.0, clip: bool = False) -> None:
        super().__init__(schedule, clip)
        self.eta = eta

    def update(self, x_t: Tensor, eps: Tensor, x0: Tensor, t: int, t_prev: int,
               generator: torch.Generator | None) -> Tensor:
        ab, ab_prev = self.alpha_bars(t, t_prev)
        sigma = self.eta * math.sqrt(posterior(ab, ab_prev).variance)
        x = math.sqrt(ab_prev) * x0 + math.sqrt(max(1 - ab_prev - sigma**2, 0.0)) * eps
        if t_prev > 0 and sigma > 0:
            x = x + sigma * self.noise(x, generator)
        return x


class DPMSolverScheduler(Scheduler):
    """DPM-Solver++(2M) (Lu et al. 2022), a deterministic multistep solver of the probability-flow ODE in the
    predicted x̂_0 and the half log-SNR λ_t = log(√ᾱ_t/√(1−ᾱ_t)): with h = λ_{t'} − λ_t,
    x_{t'} = √((1−ᾱ_{t'})/(1−ᾱ_t)) x_t − √ᾱ_{t'} (e^{−h} − 1) D, where D = x̂_0 on the first step (DDIM with
    η = 0) and on the last (to t' = 0, which lands on x̂_0), else D = (1 + 1/(2r)) x̂_0 − 1/(2r) x̂_0⁻ from
    the previous step's x̂_0⁻ and r = h⁻/h, its λ increment over this one's. Steps follow ``timesteps``,
    which are even in λ (Lu et al.'s logSNR spacing): even in t, the steps near t = 1 take λ jumps much
    longer than the step before, and the second-order term extrapolates over them."""

    def set_timesteps(self, n: int | None) -> None:
        """Up to n times (None: all T; fewer where two λ's round to one t) from T to 1, evenly spaced in λ."""
        total = self.schedule.timesteps
        self.last: tuple[int, Tensor] | None = None  # the previous step's time and x̂_0
        if n is None or n >= total:
            return super().set_timesteps(None)
        lam = torch.tensor([half_log_snr(ab) for ab in self.schedule.alpha_bar_host[1:]], dtype=torch.float64)
        wanted = torch.linspace(float(lam[-1]), float(lam[0]), max(1, int(n)), dtype=torch.float64)
        self.visit(torch.searchsorted(-lam, -wanted).clamp(max=total - 1) + 1)  # the first t with λ_t <= wanted

    def update(self, x_t: Tensor, eps: Tensor, x0: Tensor, t: int, t_prev: int,
               generator: torch.Generator | None) -> Tensor:
        last, self.last = self.last, (t, x0)
        if t_prev == 0:
            return x0
        ab, ab_prev = self.alpha_bars(t, t_prev)
        h = half_log_snr(ab_prev) - half_log_snr(ab)
        d = x0
        if last is not None and self.previous[last[0]] == t:
            r = (half_log_snr(ab) - half_log_snr(self.schedule.alpha_bar_host[last[0]])) / h
            d = (1 + 0.5 / r) * x0 - (0.5 / r) * last[1]
        return math.sqrt((1 - ab_prev) / (1 - ab)) * x_t - math.sqrt(ab_prev) * math.expm1(-h) * d


def half_log_snr(ab: float) -> float:
    """λ = log(√ᾱ/√(1−ᾱ)) for 0 < ᾱ < 1."""
    return 0.5 * math.log(ab / (1 - ab))


SCHEDULERS: dict[str, type[Scheduler]] = {  # model.sampler
    "ddpm": DDPMScheduler, "ddim": DDIMScheduler, "dpm_solver": DPMSolverScheduler}


def make_scheduler(kind: str, schedule: NoiseSchedule, *, clip: bool = False, variance: str = "beta",
                   eta: float = 0.0) -> Scheduler:
    """The scheduler ``model.sampler`` names, given the options of every kind (each takes its own)."""
    options = {DDPMScheduler: {"variance": variance}, DDIMScheduler: {"eta": eta}}
    cls = SCHEDULERS[kind]
    return cls(schedule, clip=clip, **options.get(cls, {}))
