"""The GAN family: a generator G(z) against a discriminator D(x), trained in turns on the
two-player base: the shared ``AdversarialModel``, gan (dcgan with convolutional nets) and cgan;
infogan and wgan_gp have their own modules.

Both players work on centred data: images in [0, 1] are shown to D as 2x − 1 and G ends in
tanh; points are unbounded and G's output is linear. ``sample`` maps back to data space.

There is no likelihood to validate on. ``val/loss`` (and ``test/loss``) is the divergence
between the split and G(fixed_noise) as the current D estimates it — log 2 − ½·d_loss, a lower
bound on the Jensen–Shannon divergence, or the critic's Wasserstein estimate: low when D cannot
tell them apart, also when D is weak, which is why the latest epoch is tested, not the "best".
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from genlab.capabilities import CanSample
from genlab.data.base import Batch, DataInfo
from genlab.models.base import OptimizerFactory
from genlab.models.ema import ema_of
from genlab.models.two_player import TwoPlayerModel
from genlab.nets.gan import GANNets

NetFactory = Callable[..., GANNets]  # a genlab.nets.gan builder: (in_shape, latent_dim, cond_dim) -> GANNets
LOG2 = math.log(2.0)
FIXED_SEED = 0  # the fixed noise is the same for every model built with the same sizes
Extra = tuple[Tensor | float, dict[str, Tensor]]  # (weighted term added to a player's loss, terms to log)


class AdversarialModel(TwoPlayerModel):
    """A generator and a discriminator; per batch one D step on G's detached samples and, every
    ``d_steps`` batches, one G step through D.

    ``ema``: a decay d keeps an exponential moving average of G's weights (``genlab.models.ema``),
    updated after each G step, and ``sample`` uses it. ``fixed_noise`` (n_fixed, input_dim), a
    buffer drawn once from a fixed seed, is what the validation terms are measured on. Subclasses
    say how each player scores (``d_loss``, ``g_loss``) and what each adds (``discriminator_extra``,
    ``generator_extra``).
    """

    capabilities = frozenset({CanSample})

    code_dim: ClassVar[int] = 0  # generator inputs besides the noise (InfoGAN's codes)

    def __init__(
        self, *, data_info: DataInfo, net: NetFactory, latent_dim: int = 100, prior: str = "normal",
        d_steps: int = 1, ema: float | None = None, n_fixed: int = 64, grad_clip: float | None = None,
        optimizer_g: OptimizerFactory | None = None, optimizer_d: OptimizerFactory | None = None,
        scheduler: Callable[..., Any] | None = None, compile: bool = False,
    ) -> None:
        super().__init__(data_info=data_info, optimizer_g=optimizer_g, optimizer_d=optimizer_d, grad_clip=grad_clip,
                         scheduler=scheduler, builders=[net], compile=compile)
        self.latent_dim, self.prior, self.d_steps = latent_dim, prior, d_steps
        self.num_classes = (data_info.num_classes or 0) if self.conditional else 0
        nets = net(in_shape=data_info.shape, latent_dim=latent_dim + self.code_dim, cond_dim=self.num_classes)
        self.generator, self.body = nets.generator, nets.body
        self.d_head = nn.Linear(nets.features, 1)  # the real/fake logit (or critic score)
        self.generator_ema = None if ema is None else ema_of(self.generator, ema)
        with torch.random.fork_rng(devices=[]):  # the training random stream stays untouched
            torch.manual_seed(FIXED_SEED)
            self.register_buffer("fixed_noise", self.generator_input(n_fixed))
        # the classes that go with the fixed inputs in conditional models: all of them in turn
        self.register_buffer("fixed_labels", torch.arange(n_fixed) % max(1, self.num_classes))

    # ---- the players ---------------------------------------------------------------------
    def draw_noise(self, n: int) -> Tensor:
        """z (n, latent_dim) from the prior: N(0, I) or U[−1, 1]^d."""
        if self.prior == "normal":
            return torch.randn(n, self.latent_dim, device=self.device)
        return 2 * torch.rand(n, self.latent_dim, device=self.device) - 1

    def generator_input(self, n: int) -> Tensor:
        """What G gets besides the condition (n, latent_dim + code_dim): here the noise alone."""
        return self.draw_noise(n)

    def condition(self, y: Tensor | None, n: int) -> Tensor | None:
        """What both players get for classes y (n,): nothing for unconditional models."""
        return None

    def generate(self, inputs: Tensor, c: Tensor | None, net: nn.Module | None = None) -> Tensor:
        """G's output in the players' space (n, *shape): tanh for data in [0, 1], linear for points."""
        g = self.generator if net is None else net
        return self.squash(g(inputs) if c is None else g(inputs, c))

    def features(self, x: Tensor, c: Tensor | None) -> Tensor:
        """D's body (B, features) of x in the players' space."""
        return self.body(x) if c is None else self.body(x, c)

    def critic(self, x: Tensor, c: Tensor | None) -> Tensor:
        """D's raw output (B,): a logit, or a Wasserstein critic's score."""
        return self.d_head(self.features(x, c)).squeeze(1)

    @property
    def sampler(self) -> nn.Module:
        """The generator that samples: the EMA copy when kept."""
        return self.generator if self.generator_ema is None else self.generator_ema

    def sample(self, n: int, y: Tensor | None = None, steps: int | None = None) -> Tensor:
        """n samples (n, *shape) in data space, from fresh noise (fixed under a seeded random state);
        one generator pass, whatever the step budget."""
        return self.to_data(self.generate(self.generator_input(n), self.condition(y, n), self.sampler))

    # ---- what subclasses define ------------------------------------------------------------
    def d_loss(self, real_out: Tensor, fake_out: Tensor) -> Tensor:
        """D's adversarial loss from its raw outputs on real (B,) and fake (B',) samples."""
        raise NotImplementedError

    def g_loss(self, fake_out: Tensor) -> Tensor:
        """G's adversarial loss from D's raw outputs on its samples (B,)."""
        raise NotImplementedError

    def d_score(self, out: Tensor) -> Tensor:
        """The logged mean of D's outputs (d_real, d_fake)."""
        raise NotImplementedError

    def divergence(self, d_loss: Tensor) -> Tensor:
        """The divergence estimate that D's loss implies (val/loss)."""
        raise NotImplementedError

    def discriminator_extra(self, x: Tensor, fake: Tensor, c: Tensor | None, inputs: Tensor, feats: Tensor) -> Extra:
        """Anything D's step adds to d_loss (a penalty, an auxiliary loss); feats: D's body on fake."""
        return 0.0, {}

    def generator_extra(self, inputs: Tensor, feats: Tensor) -> Extra:
        """Anything G's step adds to g_loss, from G's inputs and D's body on its samples."""
        return 0.0, {}

    # ---- one step of each player -------------------------------------------------------------
    def discriminator_objective(self, x: Tensor, c: Tensor | None) -> tuple[Tensor, dict[str, Tensor]]:
        """D's loss on real x (B, *shape) in the players' space and as many fakes (G gets no gradient)."""
        inputs = self.generator_input(len(x))
        with torch.no_grad():
            fake = self.generate(inputs, c)
        real_out, feats = self.critic(x, c), self.features(fake, c)  # real and fake in separate batches
        fake_out = self.d_head(feats).squeeze(1)
        d_loss = self.d_loss(real_out, fake_out)
        extra, extra_terms = self.discriminator_extra(x, fake, c, inputs, feats)
        terms = {"d_loss": d_loss, "d_real": self.d_score(real_out), "d_fake": self.d_score(fake_out), **extra_terms}
        return d_loss + extra, terms

    def generator_objective(self, n: int, c: Tensor | None) -> tuple[Tensor, dict[str, Tensor]]:
        """G's loss on n fresh samples, through D."""
        inputs = self.generator_input(n)
        feats = self.features(self.generate(inputs, c), c)
        g_loss = self.g_loss(self.d_head(feats).squeeze(1))
        extra, extra_terms = self.generator_extra(inputs, feats)
        return g_loss + extra, {"g_loss": g_loss, **extra_terms}

    def real(self, batch: Batch) -> tuple[Tensor, Tensor | None]:
        """The batch's samples in the players' space and their condition."""
        x = batch["x"]
        return self.to_players(x), self.condition(batch.get("y"), len(x))

    def training_step(self, batch: Batch, batch_idx: int) -> None:
        x, c = self.real(batch)
        terms = self.play("discriminator", lambda: self.discriminator_objective(x, c))
        if (self.trained_batches + 1) % self.d_steps == 0:  # k D steps per G step
            terms |= self.play("generator", lambda: self.generator_objective(len(x), c))
            if self.generator_ema is not None:
                self.generator_ema.update_parameters(self.generator)
        self.track_train_terms(terms, len(x))

    def loss_terms(self, batch: Batch, stage: str) -> dict[str, Tensor]:
        """Both players' losses on a batch of the split against G(fixed_noise) from the sampling
        generator; "loss" is the divergence estimate (see the module docstring)."""
        x, c = self.real(batch)
        c_fixed = self.condition(self.fixed_labels, len(self.fixed_labels))
        feats = self.features(self.generate(self.fixed_noise, c_fixed, self.sampler), c_fixed)
        real_out, fake_out = self.critic(x, c), self.d_head(feats).squeeze(1)
        d_loss = self.d_loss(real_out, fake_out)
        terms = {"d_loss": d_loss, "g_loss": self.g_loss(fake_out), "d_real": self.d_score(real_out),
                 "d_fake": self.d_score(fake_out), **self.generator_extra(self.fixed_noise, feats)[1]}
        terms["loss"] = self.divergence(d_loss)
        return terms

    def player_parameters(self, player: str) -> Iterable[nn.Parameter]:
        if player == "generator":
            return self.generator.parameters()
        return [p for n, p in self.named_parameters() if not n.startswith(("generator.", "generator_ema."))]


class GAN(AdversarialModel):
    """GAN (Goodfellow et al. 2014): D(x) = σ(logit) learns to tell data (1) from G(z) (0) by
    cross-entropy; G minimises log(1 − D(G(z))) (``minimax``, the game's value) or −log D(G(z))
    (``non_saturating``: the same fixed point, strong gradients while D still wins easily).
    With ``genlab.nets.gan.dcgan`` as its net this is the DCGAN."""

    def __init__(self, *, loss: str = "non_saturating", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.generator_loss = loss

    def d_loss(self, real_out: Tensor, fake_out: Tensor) -> Tensor:
        # −log σ(a) = softplus(−a) and −log(1 − σ(a)) = softplus(a), stable for any logit a
        return F.softplus(-real_out).mean() + F.softplus(fake_out).mean()

    def g_loss(self, fake_out: Tensor) -> Tensor:
        if self.generator_loss == "minimax":
            return -F.softplus(fake_out).mean()  # E log(1 − D(G(z)))
        return F.softplus(-fake_out).mean()  # −E log D(G(z))

    def d_score(self, out: Tensor) -> Tensor:
        return torch.sigmoid(out).mean()  # D's mean probability of "real"

    def divergence(self, d_loss: Tensor) -> Tensor:
        # max_D −d_loss = 2·JSD − 2 log 2 (Goodfellow et al. 2014, Thm. 1): any D gives a lower bound
        return LOG2 - 0.5 * d_loss


class CGAN(GAN):
    """Conditional GAN (Mirza & Osindero 2014): the class y, one-hot, goes to G with z and to D
    with x (concatenated, or as constant input planes of a convolutional D); ``sample(n, y)``."""

    conditional = True

    def condition(self, y: Tensor | None, n: int) -> Tensor:
        if y is None:  # no classes asked for: uniformly random ones
            y = torch.randint(self.num_classes, (n,), device=self.device)
        if len(y) != n:
            raise ValueError(f"{n} samples but {len(y)} labels")
        return F.one_hot(y.long().to(self.device), self.num_classes).float()  # (n, num_classes)
