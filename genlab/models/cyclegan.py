"""CycleGAN (Zhu et al. 2017): unpaired image-to-image translation between domains A and B.

Two generators g_A2B, g_B2A and two PatchGAN discriminators D_A, D_B; the generators are trained
on the adversarial losses plus λ_cyc·(‖a − g_B2A(g_A2B(a))‖₁ + ‖b − g_A2B(g_B2A(b))‖₁) and an
optional identity loss λ_id·(‖g_A2B(b) − b‖₁ + ‖g_B2A(a) − a‖₁); the discriminators see fakes
drawn from a history pool of 50 earlier fakes. On the two-player base: one optimiser for both
generators, one for both discriminators, generators first, as in the paper's implementation.
The networks are built by ``genlab.nets.cyclegan``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from genlab.capabilities import CanReconstruct, CanTranslate, Needs
from genlab.data.base import Batch, DataInfo
from genlab.errors import UserError
from genlab.models.two_player import TwoPlayerModel

NetBuilder = Callable[..., nn.Module]  # a genlab.nets.cyclegan builder: (in_shape) -> a network
ADVERSARIAL = ("lsgan", "non_saturating")
DIRECTIONS = ("a2b", "b2a")


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
class CycleGAN(TwoPlayerModel):
    """Unpaired translation A <-> B; needs a two-domain dataset (batches with ``x`` and ``x_b``).

    Images in [0, 1] enter the networks as 2x − 1 and leave as (tanh + 1)/2. Terms are logged per
    player: ``gen/adv_a2b`` (g_A2B fooling D_B), ``gen/adv_b2a``, ``gen/cycle_a``, ``gen/cycle_b``,
    ``gen/identity_*``, ``gen/total``; ``disc/a``, ``disc/b``, ``disc/total``. ``loss`` is the
    generators' total.
    """

    capabilities = frozenset({CanTranslate, CanReconstruct})

    needs: ClassVar[Needs] = Needs(image=True, domains=2)

    def __init__(
        self,
        *,
        data_info: DataInfo,
        generator: NetBuilder,
        discriminator: NetBuilder,
        adversarial: str = "lsgan",
        cycle_weight: float = 10.0,
        identity_weight: float = 0.0,
        pool_size: int = 50,
        **kwargs: Any,
    ) -> None:
        """``kwargs``: the two-player options (optimizer_g, optimizer_d, grad_clip, scheduler)."""
        super().__init__(data_info=data_info, builders=[generator, discriminator], **kwargs)
        if adversarial not in ADVERSARIAL:
            raise UserError(f"model.adversarial={adversarial!r} is not one of {', '.join(ADVERSARIAL)}")
        self.adversarial, self.cycle_weight, self.identity_weight = adversarial, cycle_weight, identity_weight
        shape = data_info.shape
        self.g_a2b, self.g_b2a = generator(in_shape=shape), generator(in_shape=shape)
        self.d_a, self.d_b = discriminator(in_shape=shape), discriminator(in_shape=shape)  # judge A / B images
        self.pool_a, self.pool_b = HistoryPool(pool_size), HistoryPool(pool_size)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint["genlab"]["pools"] = [list(self.pool_a.images), list(self.pool_b.images)]  # a resume sees them

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        pools = (checkpoint.get("genlab") or {}).get("pools")
        if pools is not None:
            self.pool_a.images, self.pool_b.images = [list(images) for images in pools]

    def player_parameters(self, player: str) -> Iterable[nn.Parameter]:
        nets = (self.g_a2b, self.g_b2a) if player == "generator" else (self.d_a, self.d_b)
        return [p for net in nets for p in net.parameters()]

    # ---- capabilities ------------------------------------------------------------------
    def translate(self, x: Tensor, direction: str) -> Tensor:
        """x (B, C, H, W) in [0, 1] from the source domain -> its translation, same shape, in [0, 1];
        direction "a2b" (g_A2B) or "b2a" (g_B2A)."""
        if direction not in DIRECTIONS:
            raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
        net = self.g_a2b if direction == "a2b" else self.g_b2a
        return self.to_data(net(self.to_players(x)))  # the generators end in tanh

    def reconstruct(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """The cycle A -> B -> A of domain-A images x (B, C, H, W)."""
        return self.translate(self.translate(x, "a2b"), "b2a")

    # ---- the two players' losses ---------------------------------------------------------
    def generator_terms(self, a: Tensor, b: Tensor) -> tuple[dict[str, Tensor], Tensor, Tensor]:
        """The generators' terms for images a (B, C, H, W) of A and b of B, with the fakes
        g_B2A(b) (domain A) and g_A2B(a) (domain B) for the discriminators."""
        fake_b, fake_a = self.translate(a, "a2b"), self.translate(b, "b2a")
        terms = {
            "adv_a2b": adversarial_loss(self.d_b(self.to_players(fake_b)), True, self.adversarial),
            "adv_b2a": adversarial_loss(self.d_a(self.to_players(fake_a)), True, self.adversarial),
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
        def judged(d: nn.Module, real: Tensor, fake: Tensor) -> Tensor:
            k, p = self.adversarial, self.to_players
            return 0.5 * (adversarial_loss(d(p(real)), True, k) + adversarial_loss(d(p(fake.detach())), False, k))

        d_a, d_b = judged(self.d_a, a, fake_a), judged(self.d_b, b, fake_b)
        return {"a": d_a, "b": d_b, "total": d_a + d_b}

    @staticmethod
    def named(gen: dict[str, Tensor], disc: dict[str, Tensor]) -> dict[str, Tensor]:
        terms = {f"gen/{k}": v for k, v in gen.items()} | {f"disc/{k}": v for k, v in disc.items()}
        terms["loss"] = gen["total"]
        return terms

    def loss_terms(self, batch: Batch, stage: str) -> dict[str, Tensor]:
        """Evaluation terms (no pool: the discriminators judge the current fakes)."""
        a, b = batch["x"], batch["x_b"]
        gen, fake_a, fake_b = self.generator_terms(a, b)
        return self.named(gen, self.discriminator_terms(a, b, fake_a, fake_b))

    def training_step(self, batch: Batch, batch_idx: int) -> None:
        a, b = batch["x"], batch["x_b"]
        fakes: dict[str, Tensor] = {}

        def generators() -> tuple[Tensor, dict[str, Tensor]]:  # the discriminators frozen: adversarial terms reach g
            terms, fakes["a"], fakes["b"] = self.generator_terms(a, b)
            return terms["total"], terms

        def discriminators() -> tuple[Tensor, dict[str, Tensor]]:  # real against detached fakes, half from the pools
            terms = self.discriminator_terms(a, b, self.pool_a.query(fakes["a"]), self.pool_b.query(fakes["b"]))
            return terms["total"], terms

        gen = self.play("generator", generators)
        disc = self.play("discriminator", discriminators)
        self.track_train_terms(self.named(gen, disc), a.shape[0])
