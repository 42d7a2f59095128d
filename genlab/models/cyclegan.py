"""CycleGAN (Zhu et al. 2017): unpaired image-to-image translation between domains A and B.

Two generators g_A2B, g_B2A and two PatchGAN discriminators D_A, D_B; the generators are trained
on the adversarial losses plus λ_cyc·(‖a − g_B2A(g_A2B(a))‖₁ + ‖b − g_A2B(g_B2A(b))‖₁) and an
optional identity loss λ_id·(‖g_A2B(b) − b‖₁ + ‖g_B2A(a) − a‖₁); the discriminators see fakes
drawn from a history pool of 50 earlier fakes. Manual optimisation: one optimiser for both
generators, one for both discriminators, generators first, as in the paper's implementation;
options and divergence checks as in the GAN family (``optimizer_g``, ``optimizer_d``, ``grad_clip``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from genlab.data.base import Batch, DataInfo
from genlab.errors import IncompatibleError, UserError
from genlab.models.base import GenerativeModel, OptimizerFactory
from genlab.models.gan import check_finite

NetBuilder = Callable[..., nn.Module]
ADVERSARIAL = ("lsgan", "non_saturating")
DIRECTIONS = ("a2b", "b2a")


# ---- networks ------------------------------------------------------------------------------
def _norm(kind: str, channels: int) -> nn.Module:
    return nn.InstanceNorm2d(channels) if kind == "instance" else nn.BatchNorm2d(channels)


class ResidualBlock(nn.Module):
    """x + (reflect-pad, 3x3 conv, norm, ReLU, reflect-pad, 3x3 conv, norm)(x)."""

    def __init__(self, channels: int, norm: str) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, 3), _norm(norm, channels), nn.ReLU(),
            nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, 3), _norm(norm, channels),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


def resnet_generator(in_shape: tuple[int, ...], channels: int = 32, n_down: int = 1, n_blocks: int = 3,
                     norm: str = "instance") -> nn.Module:
    """The paper's ResNet generator, scaled down: 7x7 conv to ``channels``, ``n_down`` stride-2
    3x3 convs (doubling the channels), ``n_blocks`` residual blocks, as many transposed convs back,
    7x7 conv to C and tanh. (B, C, H, W) in [-1, 1] -> (B, C, H, W) in [-1, 1]; H, W divisible by 2^n_down.
    """
    c, h, w = _image_shape(in_shape)
    if h % 2**n_down or w % 2**n_down:
        raise IncompatibleError(f"the CycleGAN generator halves {h}x{w} images {n_down} times: the sides must be "
                                f"divisible by {2**n_down} (set data.image_size or model.generator.n_down)")
    layers: list[nn.Module] = [nn.ReflectionPad2d(3), nn.Conv2d(c, channels, 7), _norm(norm, channels), nn.ReLU()]
    k = channels
    for _ in range(n_down):  # (B, k, H, W) -> (B, 2k, H/2, W/2)
        layers += [nn.Conv2d(k, 2 * k, 3, stride=2, padding=1), _norm(norm, 2 * k), nn.ReLU()]
        k *= 2
    layers += [ResidualBlock(k, norm) for _ in range(n_blocks)]
    for _ in range(n_down):  # (B, k, H', W') -> (B, k/2, 2H', 2W')
        layers += [nn.ConvTranspose2d(k, k // 2, 3, stride=2, padding=1, output_padding=1), _norm(norm, k // 2),
                   nn.ReLU()]
        k //= 2
    layers += [nn.ReflectionPad2d(3), nn.Conv2d(k, c, 7), nn.Tanh()]
    return nn.Sequential(*layers)


def patch_discriminator(in_shape: tuple[int, ...], channels: int = 32, n_layers: int = 2,
                        norm: str = "instance") -> nn.Module:
    """PatchGAN: ``n_layers`` stride-2 4x4 convs (channels doubling, no norm on the first), a stride-1
    4x4 conv, then a 4x4 conv to one logit per patch: (B, C, H, W) -> (B, 1, H', W')."""
    c, h, w = _image_shape(in_shape)
    side = min(h, w)
    for _ in range(n_layers):
        side //= 2
    if side - 2 < 1:
        raise IncompatibleError(f"{h}x{w} images are too small for a PatchGAN with {n_layers} stride-2 layers "
                                "(lower model.discriminator.n_layers)")
    layers: list[nn.Module] = [nn.Conv2d(c, channels, 4, 2, 1), nn.LeakyReLU(0.2)]
    k = channels
    for _ in range(n_layers - 1):
        layers += [nn.Conv2d(k, 2 * k, 4, 2, 1), _norm(norm, 2 * k), nn.LeakyReLU(0.2)]
        k *= 2
    layers += [nn.Conv2d(k, 2 * k, 4, 1, 1), _norm(norm, 2 * k), nn.LeakyReLU(0.2), nn.Conv2d(2 * k, 1, 4, 1, 1)]
    return nn.Sequential(*layers)


def _image_shape(in_shape: tuple[int, ...]) -> tuple[int, int, int]:
    if len(in_shape) != 3:
        raise IncompatibleError(f"CycleGAN's networks need images (C, H, W), not samples of shape {tuple(in_shape)}")
    return in_shape[0], in_shape[1], in_shape[2]


# ---- losses and the history pool -------------------------------------------------------------
def adversarial_loss(logits: Tensor, real: bool, kind: str) -> Tensor:
    """Mean loss of patch logits against the target real (1) or fake (0): LSGAN (D(x) − t)², or
    the cross-entropy of sig(D(x)) (non-saturating for the generator, who targets real)."""
    if kind == "lsgan":
        return (logits - float(real)).pow(2).mean()
    return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, float(real)))


def cycle_loss(x: Tensor, x_cycled: Tensor) -> Tensor:
    """‖x − g(f(x))‖₁ as the mean absolute error per pixel."""
    return (x - x_cycled).abs().mean()


class HistoryPool:
    """The image buffer of Shrivastava et al. (2017) as CycleGAN's code uses it: until ``size`` images
    are stored each query image is stored and returned; then each is returned as it is with
    probability ½, or swapped for a random stored image, which is returned (the new one is kept)."""

    def __init__(self, size: int = 50) -> None:
        self.size = size
        self.images: list[Tensor] = []  # (C, H, W) each

    def query(self, images: Tensor) -> Tensor:
        """images (B, C, H, W) -> (B, C, H, W), detached, some replaced by older fakes."""
        if self.size == 0:
            return images.detach()
        out = []
        for img in images.detach():
            if len(self.images) < self.size:
                self.images.append(img.clone())
                out.append(img)
            elif torch.rand(()) < 0.5:
                i = int(torch.randint(self.size, ()))
                out.append(self.images[i])
                self.images[i] = img.clone()
            else:
                out.append(img)
        return torch.stack(out)


# ---- the model ---------------------------------------------------------------------------
class CycleGAN(GenerativeModel):
    """Unpaired translation A <-> B; needs a two-domain dataset (batches with ``x`` and ``x_b``).

    Images in [0, 1] enter the networks as 2x − 1 and leave as (tanh + 1)/2. Terms are logged per
    player: ``gen/adv_a2b`` (g_A2B fooling D_B), ``gen/adv_b2a``, ``gen/cycle_a``, ``gen/cycle_b``,
    ``gen/identity_*``, ``gen/total``; ``disc/a``, ``disc/b``, ``disc/total``. ``loss`` is the
    generators' total.
    """

    needs_image = True
    needs_domains = 2  # batches carry x (domain A) and x_b (domain B)
    ranks_checkpoints = False  # an adversarial val/loss: the latest epoch is tested

    def __init__(
        self,
        data_info: DataInfo,
        generator: NetBuilder,
        discriminator: NetBuilder,
        adversarial: str = "lsgan",
        cycle_weight: float = 10.0,
        identity_weight: float = 0.0,
        pool_size: int = 50,
        grad_clip: float | None = None,
        optimizer_g: OptimizerFactory | None = None,
        optimizer_d: OptimizerFactory | None = None,
        scheduler: Callable[..., Any] | None = None,
    ) -> None:
        super().__init__(data_info, None, scheduler)
        self.save_hyperparameters(logger=False)
        if adversarial not in ADVERSARIAL:
            raise UserError(f"model.adversarial={adversarial!r} is not one of {', '.join(ADVERSARIAL)}")
        self.automatic_optimization = False
        self.adversarial, self.cycle_weight, self.identity_weight = adversarial, cycle_weight, identity_weight
        self.grad_clip, self.optimizer_g, self.optimizer_d = grad_clip, optimizer_g, optimizer_d
        shape = data_info.shape
        self.g_a2b, self.g_b2a = generator(in_shape=shape), generator(in_shape=shape)
        self.d_a, self.d_b = discriminator(in_shape=shape), discriminator(in_shape=shape)  # judge A / B images
        self.pool_a, self.pool_b = HistoryPool(pool_size), HistoryPool(pool_size)

    @classmethod
    def check_data(cls, info: DataInfo) -> None:
        super().check_data(info)
        if len(info.domains) != cls.needs_domains:
            raise IncompatibleError(
                f"{cls.__name__} translates between two unpaired domains, but '{info.name}' provides one; "
                "pick a two-domain dataset (e.g. data=digits_inverted, shapes_colour, unpaired_folder)."
            )

    # ---- capabilities ------------------------------------------------------------------
    def translate(self, x: Tensor, direction: str) -> Tensor:
        """x (B, C, H, W) in [0, 1] from the source domain -> its translation, same shape, in [0, 1];
        direction "a2b" (g_A2B) or "b2a" (g_B2A)."""
        if direction not in DIRECTIONS:
            raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
        net = self.g_a2b if direction == "a2b" else self.g_b2a
        return (net(2 * x - 1) + 1) / 2

    def reconstruct(self, x: Tensor) -> Tensor:
        """The cycle A -> B -> A of domain-A images x (B, C, H, W)."""
        return self.translate(self.translate(x, "a2b"), "b2a")

    # ---- the two players' losses ---------------------------------------------------------
    def generator_terms(self, a: Tensor, b: Tensor) -> tuple[dict[str, Tensor], Tensor, Tensor]:
        """The generators' terms for images a (B, C, H, W) of A and b of B, with the fakes
        g_B2A(b) (domain A) and g_A2B(a) (domain B) for the discriminators."""
        fake_b, fake_a = self.translate(a, "a2b"), self.translate(b, "b2a")
        terms = {
            "adv_a2b": adversarial_loss(self.d_b(2 * fake_b - 1), True, self.adversarial),
            "adv_b2a": adversarial_loss(self.d_a(2 * fake_a - 1), True, self.adversarial),
            "cycle_a": cycle_loss(a, self.translate(fake_b, "b2a")),
            "cycle_b": cycle_loss(b, self.translate(fake_a, "a2b")),
        }
        total = terms["adv_a2b"] + terms["adv_b2a"] + self.cycle_weight * (terms["cycle_a"] + terms["cycle_b"])
        if self.identity_weight > 0:  # a generator fed its target domain should change nothing
            terms["identity_a"] = cycle_loss(a, self.translate(a, "b2a"))
            terms["identity_b"] = cycle_loss(b, self.translate(b, "a2b"))
            total = total + self.identity_weight * (terms["identity_a"] + terms["identity_b"])
        terms["total"] = total
        return terms, fake_a, fake_b

    def discriminator_terms(self, a: Tensor, b: Tensor, fake_a: Tensor, fake_b: Tensor) -> dict[str, Tensor]:
        """½ (loss on real + loss on fake) for D_A (a vs fake_a) and D_B (b vs fake_b); fakes detached."""
        k = self.adversarial
        d_a = 0.5 * (adversarial_loss(self.d_a(2 * a - 1), True, k)
                     + adversarial_loss(self.d_a(2 * fake_a.detach() - 1), False, k))
        d_b = 0.5 * (adversarial_loss(self.d_b(2 * b - 1), True, k)
                     + adversarial_loss(self.d_b(2 * fake_b.detach() - 1), False, k))
        return {"a": d_a, "b": d_b, "total": d_a + d_b}

    @staticmethod
    def _named(gen: dict[str, Tensor], disc: dict[str, Tensor]) -> dict[str, Tensor]:
        terms = {f"gen/{k}": v for k, v in gen.items()} | {f"disc/{k}": v for k, v in disc.items()}
        terms["loss"] = gen["total"]
        return terms

    def loss_terms(self, batch: Batch, stage: str) -> dict[str, Tensor]:
        """Evaluation terms (no pool: the discriminators judge the current fakes)."""
        a, b = batch["x"], batch["x_b"]
        gen, fake_a, fake_b = self.generator_terms(a, b)
        return self._named(gen, self.discriminator_terms(a, b, fake_a, fake_b))

    def training_step(self, batch: Batch, batch_idx: int) -> None:
        opt_g, opt_d = self.optimizers()
        a, b = batch["x"], batch["x_b"]
        # generators: the discriminators are frozen, so the adversarial terms reach g only
        with self.toggled_optimizer(opt_g):
            gen, fake_a, fake_b = self.generator_terms(a, b)
            self._player_step(opt_g, gen, "generator")
        # discriminators: real images against detached fakes, half of them from the history pools
        with self.toggled_optimizer(opt_d):
            disc = self.discriminator_terms(a, b, self.pool_a.query(fake_a), self.pool_b.query(fake_b))
            self._player_step(opt_d, disc, "discriminator")
        self.track_train_terms(self._named(gen, disc), a.shape[0])

    def _player_step(self, opt: Any, terms: dict[str, Tensor], player: str) -> None:
        """One step of a player on its total; its gradients are cleared after the step, so the
        other player's step never sees them."""
        check_finite(terms, player, self.global_step)  # before the step: the weights stay finite
        self.manual_backward(terms["total"])
        if self.grad_clip is not None:  # the Trainer's clipping does not apply to manual optimisation
            self.clip_gradients(opt, gradient_clip_val=self.grad_clip, gradient_clip_algorithm="norm")
        opt.step()
        opt.zero_grad(set_to_none=True)

    def on_train_epoch_end(self) -> None:
        super().on_train_epoch_end()
        schedulers = self.lr_schedulers()
        for s in schedulers if isinstance(schedulers, list) else [schedulers] if schedulers else []:
            s.step()  # under manual optimisation the schedulers are stepped here, once per epoch

    def configure_optimizers(self) -> Any:
        if self.optimizer_g is None or self.optimizer_d is None:
            raise UserError(f"{type(self).__name__} needs model.optimizer_g and model.optimizer_d")
        opt_g = self.make_optimizer(self.optimizer_g, [*self.g_a2b.parameters(), *self.g_b2a.parameters()])
        opt_d = self.make_optimizer(self.optimizer_d, [*self.d_a.parameters(), *self.d_b.parameters()])
        if self.scheduler_factory is None:
            return [opt_g, opt_d]
        return [opt_g, opt_d], [self.scheduler_factory(optimizer=opt_g), self.scheduler_factory(optimizer=opt_d)]
