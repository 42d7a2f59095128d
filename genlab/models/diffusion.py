"""Denoising diffusion models (Ho et al. 2020): ddpm and its class-conditional variant with classifier-free
guidance (cddpm, Ho & Salimans 2021). Latent diffusion (latent_ddpm) is in ``genlab.models.latent_diffusion``,
diffusion from a caption (caption_ddpm) in ``genlab.models.caption_diffusion``.

The forward process adds Gaussian noise in T steps, q(x_t|x_{t−1}) = N(√(1−β_t) x_{t−1}, β_t I), so that
q(x_t|x_0) = N(√ᾱ_t x_0, (1−ᾱ_t) I) with ᾱ_t = Π_{s≤t} (1−β_s) (ᾱ_0 = 1). A network learns to predict the
noise ε of x_t = √ᾱ_t x_0 + √(1−ᾱ_t) ε (or v = √ᾱ_t ε − √(1−ᾱ_t) x_0) with the simple loss ‖ε − ε̂‖²; the
reverse process p(x_{t−1}|x_t) = N(μ̃(x_t, x̂_0), σ_t²) takes the posterior mean of q(x_{t−1}|x_t, x_0)
at the predicted x̂_0. The schedule and its algebra, and the samplers (``model.sampler``: ancestral or
DDIM), are in ``genlab.models.schedulers``; guidance in ``genlab.models.guidance``. The model holds the
denoiser, trains it, runs a scheduler's loop and computes the variational bound.

Images in [0, 1] are diffused as 2x − 1 in [−1, 1]; points (DataInfo.bounded False) as they are.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from genlab import figures
from genlab.capabilities import Budget, CanBoundLikelihood, CanSample, LikelihoodBound, PictureRequest, PictureSpec
from genlab.data.base import Batch, DataInfo
from genlab.errors import UserError
from genlab.models.base import GenerativeModel, OptimizerFactory
from genlab.models.ema import ema_of
from genlab.models.guidance import ClassifierFreeGuidance, Denoiser
from genlab.models.schedulers import NoiseSchedule, Scheduler, make_scheduler, posterior

LOG_2PI = math.log(2 * math.pi)
MAX_ROWS = 2048  # network inputs per call of the bound: larger batches cost more per input on a CPU
VAL_SEED = 0  # validation and test losses draw the same t and ε every epoch: val/loss ranks checkpoints
TRAJECTORY_FRAMES = 8  # frames of a 2-D sampler's particles (TensorBoard steps, trajectory.png panels)
GUIDANCE_SCALES = (0.0, 1.0, 2.0, 4.0)  # the rows of guidance_sweep.png
NetFactory = Callable[..., nn.Module]  # genlab.nets.unet.denoiser: (in_shape, num_classes) -> net(x_t, t, y)


# ---- Gaussian algebra of the bound (plain functions: the tests check them on their own) -----------------
def gaussian_kl(mean_q: Tensor, var_q: Tensor, mean_p: Tensor, var_p: Tensor) -> Tensor:
    """KL(N(mean_q, var_q) ‖ N(mean_p, var_p)) per dimension, elementwise (nats)."""
    return 0.5 * (torch.log(var_p / var_q) + (var_q + (mean_q - mean_p) ** 2) / var_p - 1)


def log_ndtr_diff(a: Tensor, b: Tensor) -> Tensor:
    """log(Φ(a) − Φ(b)) for a > b, computed in whichever tail keeps the difference from cancelling."""
    upper = a + b > 0  # both in the upper tail: Φ(a) − Φ(b) = Φ(−b) − Φ(−a)
    hi = torch.where(upper, torch.special.log_ndtr(-b), torch.special.log_ndtr(a))
    lo = torch.where(upper, torch.special.log_ndtr(-a), torch.special.log_ndtr(b))
    return hi + torch.log1p(-torch.exp((lo - hi).clamp(max=0)).clamp(max=1 - 1e-15))


def discretised_gaussian_log_likelihood(x: Tensor, mean: Tensor, std: Tensor, bins: int = 256) -> Tensor:
    """log P(x) elementwise for x on a grid of ``bins`` values in [−1, 1] (8-bit pixels as 2k/255 − 1), under
    N(mean, std²) integrated over x's bin of width 2/(bins − 1); the end bins reach out to ∓∞ (Ho et al.
    2020, eq. 13). Values off the grid get the probability of the bin centred on them."""
    half = 1.0 / (bins - 1)
    upper = torch.where(x > 1 - half, torch.full_like(x, math.inf), (x + half - mean) / std)
    lower = torch.where(x < -1 + half, torch.full_like(x, -math.inf), (x - half - mean) / std)
    return log_ndtr_diff(upper, lower)


class DDPM(GenerativeModel):
    """Denoising diffusion probabilistic model over images (a U-Net) or vectors (an MLP); see the module
    docstring. ``net``: a ``genlab.nets.unet.denoiser`` builder. ``timesteps`` T; ``schedule`` linear or
    cosine; ``prediction`` eps or v; ``variance`` of the reverse steps, β_t (``beta``) or the posterior's
    β̃_t (``posterior``); ``sampler`` ddpm (ancestral), ddim with ``ddim_eta``, or dpm_solver, over ``sample_steps``
    steps (None: all T) unless the evaluator sets a budget; ``ema``: the decay of the weights' moving
    average, which samples and is validated and tested (None: the weights themselves); ``clip_denoised``:
    images' predicted x_0 clipped to [−1, 1]. The ranges and choices are the schema's
    (genlab/config/diffusion.py)."""

    capabilities = frozenset({CanSample, CanBoundLikelihood})

    def __init__(
        self, *, data_info: DataInfo, net: NetFactory, timesteps: int = 1000, schedule: str = "linear",
        beta_start: float = 1e-4, beta_end: float = 0.02, prediction: str = "eps", variance: str = "beta",
        sampler: str = "ddim", sample_steps: int | None = 50, ddim_eta: float = 0.0, ema: float | None = 0.999,
        clip_denoised: bool = True, optimizer: OptimizerFactory | None = None,
        scheduler: Callable[..., Any] | None = None, compile: bool = False, updates_per_batch: int = 1,
    ) -> None:
        super().__init__(data_info=data_info, optimizer=optimizer, scheduler=scheduler, builders=[net], compile=compile,
                         updates_per_batch=updates_per_batch)
        if schedule == "linear" and beta_start >= beta_end:  # two options together: no one field can say it
            raise UserError(f"model.beta_start={beta_start} must be below model.beta_end={beta_end}")
        self.variance, self.sample_steps, self.clip_denoised = variance, sample_steps, clip_denoised
        self.num_classes = (data_info.num_classes or 0) if self.conditional else 0
        self.noise_schedule = NoiseSchedule(schedule, timesteps, beta_start, beta_end, prediction)
        self.net = net(in_shape=self.space_shape(), **self.net_conditioning())
        self.ema = None if ema is None else ema_of(self.net, ema)
        self.sampler = self.make_scheduler(sampler, ddim_eta)

    def net_conditioning(self) -> dict[str, int]:
        """What the denoiser is conditioned on: a class embedding of num_classes (0: none) here; a
        projection of condition vectors (``cond_dim``) in the vector-conditioned ConditionalDDPMs."""
        return {"num_classes": self.num_classes}

    @property
    def timesteps(self) -> int:
        """T."""
        return self.noise_schedule.timesteps

    def make_scheduler(self, kind: str, eta: float = 0.0) -> Scheduler:
        """A scheduler of ``kind`` (``genlab.models.schedulers.SCHEDULERS``: ddpm, ddim, dpm_solver) over this model's
        noise schedule, with its variance, DDIM's noise ``eta`` and its clipping of x̂_0."""
        return make_scheduler(kind, self.noise_schedule, clip=self.clips, variance=self.variance, eta=eta)

    # ---- the space diffused: data (images at 2x − 1), or an autoencoder's codes (LatentDDPM) -----------
    @property
    def image_space(self) -> bool:
        """Whether x_0 is a bounded image in [−1, 1] (clipped predictions, the discretised decoder)."""
        return self.data_info.is_image and self.data_info.bounded

    @property
    def clips(self) -> bool:
        """Whether the predicted x_0 is clipped to [−1, 1]: images with ``clip_denoised``."""
        return self.clip_denoised and self.image_space

    def space_shape(self) -> tuple[int, ...]:
        return tuple(self.data_info.shape)

    def to_space(self, x: Tensor) -> Tensor:
        """Data x (B, *shape) -> x_0 (B, *space_shape)."""
        return 2 * x - 1 if self.image_space else x

    def from_space(self, z: Tensor) -> Tensor:
        """x_0 (B, *space_shape) -> data (B, *shape)."""
        return ((z + 1) / 2).clamp(0, 1) if self.image_space else z

    # ---- the network's predictions --------------------------------------------------------------------------
    @property
    def denoiser(self) -> nn.Module:
        """The network that samples, is validated and tested: the moving average when kept."""
        return self.net if self.ema is None else self.ema

    def predict(self, x_t: Tensor, t: Tensor, y: Tensor | None, net: nn.Module | None = None) -> Tensor:
        """The network's output (B, *space_shape) at x_t for t (B,); y: classes of a conditional model."""
        return (net or self.denoiser)(x_t, t, y)

    def guided(self) -> Denoiser:
        """The denoiser the sampler steps with: the network's predictions (ConditionalDDPM guides them)."""
        return self.predict

    # ---- conditioning (none here; ConditionalDDPM overrides) ---------------------------------------------
    def condition(self, n: int, y: Tensor | None) -> Tensor | None:
        """The classes (n,) that sampling asks the network for; None for unconditional models."""
        return None

    def train_labels(self, y: Tensor | None) -> Tensor | None:
        """The classes a training batch's network call gets (with classifier-free dropout)."""
        return None

    def bound_labels(self, y: Tensor | None) -> Tensor | None:
        """The classes the likelihood bound of −log p(x | y) is computed for."""
        return None

    # ---- training ----------------------------------------------------------------------------------------
    def diffusion_loss(self, x0: Tensor, y: Tensor | None, net: nn.Module) -> Tensor:
        """The simple loss: ‖target − output‖² averaged over dimensions and the batch, at t ~ U{1..T}."""
        t = torch.randint(1, self.timesteps + 1, (x0.shape[0],), device=x0.device)
        eps = torch.randn_like(x0)
        out = net(self.noise_schedule.add_noise(x0, eps, t), t, y)
        return (out - self.noise_schedule.target(x0, eps, t)).pow(2).mean()

    def batch_pair(self, batch: Batch, stage: str) -> tuple[Tensor, Tensor | None]:
        """x_0 (B, *space_shape) of a batch and the condition of its network call: training's (``train_labels``,
        with classifier-free dropout) or, in validation and test, the bound's (``bound_labels``)."""
        y = batch.get("y")
        return self.to_space(batch["x"]), (self.train_labels(y) if stage == "train" else self.bound_labels(y))

    def loss_terms(self, batch: Batch, stage: str) -> dict[str, Tensor]:
        """The simple loss; validation and test draw t, ε and the batch's pair from a fixed seed, with the
        sampling network."""
        if stage == "train":
            return {"loss": self.diffusion_loss(*self.batch_pair(batch, stage), self.net)}
        device = batch["x"].device
        devices = [device.index or 0] if device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(VAL_SEED)
            return {"loss": self.diffusion_loss(*self.batch_pair(batch, stage), self.denoiser)}

    def after_update(self) -> None:
        if self.ema is not None:  # after every optimiser step
            self.ema.update_parameters(self.net)

    # ---- sampling ---------------------------------------------------------------------------------------
    def step_count(self, steps: int | None) -> int | None:
        """The reverse steps a sample takes: ``steps`` (the evaluator's budget), else ``sample_steps``
        (None: all T). UserError for a budget longer than the chain."""
        if steps is not None and steps > self.timesteps:
            raise UserError(f"{steps} sampling steps: this model's chain has T = {self.timesteps} steps "
                            "(model.timesteps), so a sample takes at most that many")
        return self.sample_steps if steps is None else steps

    @torch.no_grad()
    def reverse(self, x: Tensor, y: Tensor | None, steps: int | None = None, scheduler: Scheduler | None = None,
                denoiser: Denoiser | None = None, keep: set[int] | None = None,
                generator: torch.Generator | None = None) -> tuple[Tensor, list[Tensor]]:
        """Run the reverse process from x = x_T (n, *space_shape) to x_0 with ``scheduler`` (None: the
        configured ``sampler``) over ``step_count(steps)`` steps, each from ``denoiser``'s output (None:
        ``guided()``) for the condition y. ``keep``: the loop indices (0 is x_T, the number of steps is
        x_0) whose x are returned as frames, each (n, *space_shape)."""
        scheduler = scheduler or self.sampler
        denoiser = denoiser or self.guided()
        scheduler.set_timesteps(self.step_count(steps))
        frames = [x] if keep is not None and 0 in keep else []
        for k, t in enumerate(scheduler.timesteps, start=1):
            tt = torch.full((x.shape[0],), t, device=x.device, dtype=torch.long)
            x = scheduler.step(denoiser(x, tt, y), t, x, generator)
            if keep is not None and k in keep:
                frames.append(x)
        return x, frames

    def prior_noise(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """x_T ~ N(0, I) (n, *space_shape)."""
        return torch.randn(n, *self.space_shape(), generator=generator, device=self.device)

    @torch.no_grad()
    def sample(self, n: int, y: Tensor | None = None, steps: int | None = None) -> Tensor:
        """n samples (n, *shape) in data space by the configured sampler from x_T ~ N(0, I), over
        ``steps`` reverse steps (the evaluator's budget; None: ``sample_steps``, else all T)."""
        return self.from_space(self.reverse(self.prior_noise(n), self.condition(n, y), steps)[0])

    @torch.no_grad()
    def trajectory(self, n: int, frames: int) -> Tensor:
        """The denoising trajectory of n samples: x_T, intermediate x_t and x_0 in data space at ``frames``
        evenly spaced points of the sampler's loop, (frames, n, *shape)."""
        _, kept = self.reverse(self.prior_noise(n), self.condition(n, None), None, keep=self.frame_indices(frames))
        return torch.stack([self.from_space(f) for f in kept])

    def frame_indices(self, frames: int) -> set[int]:
        """The loop indices ``trajectory`` keeps: ``frames`` evenly spaced ones, fewer when the sampler takes
        fewer steps than frames − 1."""
        self.sampler.set_timesteps(self.step_count(None))
        total = len(self.sampler.timesteps)
        return {round(k * total / max(1, frames - 1)) for k in range(frames)}

    def pictures(self, request: PictureRequest) -> list[PictureSpec]:
        """At the test's end, the sampler's way from noise. On images ``trajectory.png`` (``test/trajectory``): each
        row one of ``request.columns`` samples, from pure noise (left) to the sample (right) over as many frames
        of the sampler's loop. On 2-D points the particles (``request.points``) at TRAJECTORY_FRAMES frames over
        the test data: TensorBoard gets them as an image sequence (``test/trajectory`` at steps 0..frames−1: its
        slider plays the motion), ``trajectory.png`` as a row of panels (``test/trajectory_panels``)."""
        info = request.info
        if request.moment != "test" or not (info.is_image or info.dim == 2):
            return []

        if info.is_image:
            cols = request.columns

            def rows() -> list[figures.Grid]:
                frames = self.trajectory(cols, cols)  # (frames, n, *shape)
                images = frames.transpose(0, 1).flatten(0, 1).float().cpu()  # row i: sample i's frames
                columns = ["noise", *[""] * (frames.shape[0] - 2), "sample"]
                title = "sampling trajectories: each row one sample's way from pure noise (left) to the sample (right)"
                return [figures.Grid(images, frames.shape[0], (), title, columns)]

            return [PictureSpec("test/trajectory", "trajectory.png", rows)]
        moved = functools.cache(lambda: self.trajectory(request.points, TRAJECTORY_FRAMES).float().cpu())  # (F, n, 2)
        data = functools.cache(lambda: request.pick("test", request.points).float().flatten(1))
        frame = lambda k: lambda: figures.particles_figure(moved(), data(), [k])  # noqa: E731
        count = len(self.frame_indices(TRAJECTORY_FRAMES))
        panels = [PictureSpec("test/trajectory", None, frame(k), step=k) for k in range(count)]
        title = "particles from pure noise (left) to samples (right); test data in grey"
        row = lambda: figures.particles_figure(moved(), data(), title=title)  # noqa: E731
        return [*panels, PictureSpec("test/trajectory_panels", "trajectory.png", row)]

    # ---- the variational bound -----------------------------------------------------------------------------
    def reverse_variance(self, t: Tensor, like: Tensor) -> Tensor:
        """σ_t² (B, 1, ...) of p(x_{t−1}|x_t) for t (B,): β_t, or β̃_t = (1−ᾱ_{t−1})/(1−ᾱ_t)·β_t with β̃_1
        (which is 0) replaced by β̃_2, as Ho et al. do, so that the decoder at t = 1 has a width."""
        s = self.noise_schedule
        beta = s.at(s.betas, t, like)
        if self.variance == "beta":
            return beta
        t2 = torch.where(t == 1, torch.full_like(t, min(2, self.timesteps)), t)
        tilde = posterior(s.at(s.alpha_bar, t2, like), s.at(s.alpha_bar, t2 - 1, like)).variance
        return torch.where(tilde > 0, tilde, beta)  # T = 1: no β̃_2 to borrow

    def bound_terms(self, x0: Tensor, t: Tensor, y: Tensor | None) -> Tensor:
        """L_{t−1} per sample (B,) in nats at one draw x_t ~ q(x_t|x_0), for t (B,) in 1..T: the KL of
        q(x_{t−1}|x_t, x_0) from p(x_{t−1}|x_t) for t >= 2, and −log p(x_0|x_1) at t = 1 (the discretised
        decoder for images, the Gaussian density for vectors). Computed in float64."""
        s = self.noise_schedule
        x_t = s.add_noise(x0, torch.randn_like(x0), t)
        out = self.predict(x_t, t, y)
        x0, x_t = x0.double(), x_t.double()
        _, x0_hat = s.eps_x0(x_t, t, out.double(), self.clips)
        mean_p, _ = s.posterior(x0_hat, x_t, t)
        var_p = self.reverse_variance(t, x0).expand_as(x0)
        first = (t == 1).view(-1, *[1] * (x0.dim() - 1))
        mean_q, var_q = s.posterior(x0, x_t, t)
        kl = gaussian_kl(mean_q, torch.where(first, 1.0, var_q), mean_p, var_p)  # (var_q at t = 1 unused)
        if self.image_space:
            decoder = -discretised_gaussian_log_likelihood(x0, mean_p, var_p.sqrt())
        else:
            decoder = 0.5 * ((x0 - mean_p) ** 2 / var_p + var_p.log() + LOG_2PI)
        return torch.where(first, decoder, kl).flatten(1).sum(1)

    def prior_term(self, x0: Tensor) -> Tensor:
        """L_T = KL(q(x_T|x_0) ‖ N(0, I)) per sample (B,) in nats."""
        ab = self.noise_schedule.alpha_bar_host[-1]
        x0 = x0.double()
        return gaussian_kl(math.sqrt(ab) * x0, torch.full_like(x0, 1 - ab), torch.zeros_like(x0),
                           torch.ones_like(x0)).flatten(1).sum(1)

    @torch.no_grad()
    def nll_bound(self, x: Tensor, y: Tensor | None = None, samples: int = 100, chunk: int = 50) -> Tensor:
        """The variational bound on −log p(x) per sample (B,) in nats: L_T + Σ_{t=2}^T L_{t−1} + L_0.
        L_0 and L_T exactly (L_0 at one x_1 draw); the sum over t exactly when T − 1 <= ``samples``, else
        estimated without bias by stratified sampling: {2..T} cut into K = ``samples`` runs of n_k steps,
        one t_k uniform in each run per sample, Σ_k n_k L_{t_k − 1}. Evaluated ``chunk`` steps at a time,
        and at most MAX_ROWS network inputs per call (larger batches run slower on a CPU)."""
        x0 = self.to_space(x)
        labels = self.bound_labels(y)
        b, dev = x0.shape[0], x0.device
        total = self.prior_term(x0) + self.bound_terms(x0, torch.ones(b, dtype=torch.long, device=dev), labels)
        middle = self.timesteps - 1
        if middle == 0:
            return total
        k = min(middle, samples)
        edges = torch.linspace(2, self.timesteps + 1, k + 1, dtype=torch.float64).floor().long().to(dev)
        sizes = edges[1:] - edges[:-1]  # (K,) steps per run, >= 1; all 1 when exact
        ts = edges[:-1, None] + (torch.rand(k, b, device=dev) * sizes[:, None]).long()  # (K, B)
        step = max(1, min(chunk, MAX_ROWS // max(1, b)))
        for start in range(0, k, step):
            part = ts[start:start + step]  # (m, B)
            m = part.shape[0]
            xs = x0.repeat(m, *[1] * (x0.dim() - 1))  # row j·B + i is sample i
            ys = None if labels is None else labels.repeat(m, *[1] * (labels.dim() - 1))  # classes or vectors
            terms = self.bound_terms(xs, part.reshape(-1), ys).view(m, b)
            total = total + (terms * sizes[start:start + m, None]).sum(0)
        return total

    def likelihood_bounds(self, budget: Budget) -> list[LikelihoodBound]:
        """The variational bound: in bits per dimension for images (the discretised decoder, 256 levels),
        in nats per sample for vectors (a Gaussian decoder at t = 1)."""
        middle = self.timesteps - 1
        how = (f"the sum over all {self.timesteps} steps" if middle <= budget.samples else
               f"the sum over t = 2..{self.timesteps} estimated without bias from {budget.samples} steps per "
               "sample, one in each of as many runs of steps (stratified sampling)")
        if self.image_space:
            scale = 1.0 / (self.data_info.dim * math.log(2))
            return [LikelihoodBound("bpd", "bits/dim",
                                    lambda x, y: scale * self.nll_bound(x, y, budget.samples, budget.chunk),
                                    f"variational bound L_T + Σ L_t-1 + L_0 (discretised decoder), {how}")]
        return [LikelihoodBound("neg_elbo", "nats", lambda x, y: self.nll_bound(x, y, budget.samples, budget.chunk),
                                f"variational bound L_T + Σ L_t-1 + L_0 (Gaussian decoder), {how}")]



class ConditionalDDPM(DDPM):
    """Class-conditional DDPM with classifier-free guidance (Ho & Salimans 2021): the network gets the
    class as an embedding added to the time embedding; in training each label is replaced by the "no
    class" token with probability ``label_dropout``, so the same network also predicts unconditionally;
    sampling guides it (``genlab.models.guidance``) at s = ``guidance_scale`` (0: unconditional,
    1: conditional, > 1: guided). ``sample(n, y)``; without y, uniformly random classes. The likelihood
    bound is −log p(x | y) (unguided), or −log p(x) of the unconditional network without y."""

    conditional = True
    #: the width D of condition vectors (a CLIP embedding) in the subclasses conditioned on them, set before the
    #: network is built; 0: conditioned on a class
    cond_dim: int = 0

    def __init__(self, *, label_dropout: float = 0.1, guidance_scale: float = 2.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.label_dropout, self.guidance_scale = label_dropout, guidance_scale

    def net_conditioning(self) -> dict[str, int]:
        return {"cond_dim": self.cond_dim} if self.cond_dim else super().net_conditioning()

    def null(self, n: int) -> Tensor:
        """"No condition": the "no class" token (n,), or for condition vectors the zero vector (n, D) (CLIP's
        embeddings are unit vectors, far from it)."""
        if self.cond_dim:
            return torch.zeros(n, self.cond_dim, device=self.device)
        return torch.full((n,), self.num_classes, device=self.device, dtype=torch.long)

    def dropped(self, c: Tensor) -> Tensor:
        """Classes (B,) or condition vectors (B, D), each replaced by ``null`` with probability ``label_dropout``:
        the training conditions of classifier-free guidance."""
        drop = torch.rand(len(c), device=c.device) < self.label_dropout
        return torch.where(drop.view(-1, *[1] * (c.dim() - 1)), self.null(len(c)).to(c), c)

    def condition(self, n: int, y: Tensor | None) -> Tensor:
        if y is None:
            y = torch.randint(self.num_classes, (n,), device=self.device)
        if len(y) != n:
            raise ValueError(f"{n} samples but {len(y)} labels")
        return y.long().to(self.device)

    def train_labels(self, y: Tensor | None) -> Tensor:
        if y is None:
            raise UserError("the ConditionalDDPM needs labelled batches (batch['y'])")
        return self.dropped(y.long())

    def bound_labels(self, y: Tensor | None) -> Tensor | None:
        return None if y is None else y.long()

    def guided(self, scale: float | None = None) -> ClassifierFreeGuidance:
        """The network's predictions guided at ``scale`` (None: ``guidance_scale``)."""
        return ClassifierFreeGuidance(self.predict, self.null, self.guidance_scale if scale is None else scale)

    def pictures(self, request: PictureRequest) -> list[PictureSpec]:
        """The trajectory (``DDPM.pictures``) and, at the test's end on labelled images, ``guidance_sweep.png``
        (``test/guidance_sweep``): one sample of each class (columns, at most 10) at each of GUIDANCE_SCALES
        (rows), every row from the same noise."""
        out = super().pictures(request)
        info = request.info
        if request.moment != "test" or not info.is_image or not info.num_classes:
            return out

        def sweep() -> list[figures.Grid]:
            y = torch.arange(min(10, info.num_classes or 0), device=self.device)
            images = self.guidance_sweep(y, GUIDANCE_SCALES).flatten(0, 1).float().cpu()  # (scales·classes, *shape)
            rows = [f"scale {s:g}" for s in GUIDANCE_SCALES]
            columns = [figures.class_name(int(c), info.class_names) for c in y]
            title = ("guidance scale (rows: 0 unconditional, 1 conditional, more: guided), one class per column, "
                     "same noise")
            return [figures.Grid(images, len(y), rows, title, columns)]

        return [*out, PictureSpec("test/guidance_sweep", "guidance_sweep.png", sweep)]

    @torch.no_grad()
    def guidance_sweep(self, y: Tensor, scales: Sequence[float], steps: int | None = None) -> Tensor:
        """Samples for the classes y (n,) at each guidance scale, (len(scales), n, *shape): every scale from
        the same x_T and the same noise along the way (a seed drawn once), so only the guidance differs."""
        y = self.condition(len(y), y)
        seed = int(torch.randint(2**62, (1,)))
        devices = [self.device.index or 0] if self.device.type == "cuda" else []
        out = []
        for s in scales:
            with torch.random.fork_rng(devices=devices):
                torch.manual_seed(seed)
                x, _ = self.reverse(self.prior_noise(len(y)), y, steps, denoiser=self.guided(float(s)))
                out.append(self.from_space(x))
        return torch.stack(out)
