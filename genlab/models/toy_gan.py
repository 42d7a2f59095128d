"""The lectures' GAN illustration: a two-parameter generator against a three-parameter discriminator.

Data x = h·w with w = (0.98, 0.2) and h ~ N(0, 1) (``data=toy2d data.kind=line data.noise=0``).
Generator x = h·v, v learnable, starting at v = (0.2, 0.98). Discriminator
y = sig(|x₁|w₁ + |x₂|w₂ + b) with learnable w, b: through |x| it sees how far the points reach
along each axis, so the generator can only fool it by turning v towards ±w (or its mirror
image (w₁, −w₂), which |x| cannot tell apart). The model draws its state — data, samples, v and
D's surface — every ``plot_every`` steps (the ImageLogger writes the figures) and logs v₁, v₂ and
the angle between v and w at every step.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from torch import Tensor, nn

from genlab.capabilities import CanSample, Needs, PictureRequest, PictureSpec
from genlab.data.base import Batch, DataInfo
from genlab.data.builtin import LINE_DIRECTION
from genlab.errors import UserError
from genlab.models.two_player import TwoPlayerModel

LOSSES = ("non_saturating", "minimax")


class ToyGAN(TwoPlayerModel):
    """x = h·v against sig(|x₁|w₁ + |x₂|w₂ + b); one SGD (or any) optimiser per player, the
    discriminator stepped first, as in Goodfellow et al.'s algorithm.

    ``loss``: the generator minimises −log D(G(h)) (non_saturating) or log(1 − D(G(h))) (minimax,
    the lectures' cost); the discriminator minimises the cross-entropy of real (1) and fake (0).
    """

    capabilities = frozenset({CanSample})

    needs: ClassVar[Needs] = Needs(shape=(2,))

    def __init__(
        self,
        *,
        data_info: DataInfo,
        v_init: Sequence[float] = (0.2, 0.98),
        d_weight_init: Sequence[float] = (0.71, -0.71),
        d_bias_init: float = 0.0,
        loss: str = "non_saturating",
        plot_every: int = 25,
        **kwargs: Any,
    ) -> None:
        """``kwargs``: the two-player options (optimizer_g, optimizer_d, grad_clip, scheduler)."""
        super().__init__(data_info=data_info, **kwargs)
        if loss not in LOSSES:
            raise UserError(f"model.loss={loss!r} is not one of {', '.join(LOSSES)}")
        if len(v_init) != 2 or len(d_weight_init) != 2:
            raise UserError("model.v_init and model.d_weight_init must hold two numbers each.")
        self.loss = loss
        self.plot_every = plot_every
        self.v = nn.Parameter(torch.tensor([float(c) for c in v_init]))  # (2,) the generator
        self.d_weight = nn.Parameter(torch.tensor([float(c) for c in d_weight_init]))  # (2,) the discriminator
        self.d_bias = nn.Parameter(torch.tensor(float(d_bias_init)))
        self.register_buffer("w_data", torch.tensor(LINE_DIRECTION))  # the data's direction, for the angle

    # ---- the two players -----------------------------------------------------------------
    def generate(self, h: Tensor) -> Tensor:
        """h (B, 1) -> x = h·v (B, 2)."""
        return h * self.v

    def sample(self, n: int, y: Tensor | None = None, steps: int | None = None) -> Tensor:
        """n points h·v with h ~ N(0, 1): (n, 2)."""
        return self.generate(torch.randn(n, 1, device=self.device))

    def discriminator_logit(self, x: Tensor) -> Tensor:
        """x (B, 2) -> |x₁|w₁ + |x₂|w₂ + b (B,): the logit of D(x) = sig(·)."""
        return x.abs() @ self.d_weight + self.d_bias

    def discriminator_loss(self, real: Tensor, fake: Tensor) -> Tensor:
        """−mean log D(real) − mean log(1 − D(fake)), with log sig(t) = −softplus(−t)."""
        return F.softplus(-self.discriminator_logit(real)).mean() + F.softplus(self.discriminator_logit(fake)).mean()

    def generator_loss(self, fake: Tensor) -> Tensor:
        """−mean log D(fake) (non_saturating) or mean log(1 − D(fake)) (minimax)."""
        t = self.discriminator_logit(fake)
        return F.softplus(-t).mean() if self.loss == "non_saturating" else -F.softplus(t).mean()

    def cos_vw(self) -> Tensor:
        """cos of the angle between v and the data's direction w."""
        return self.v @ self.w_data / (self.v.norm() * self.w_data.norm()).clamp_min(1e-12)

    # ---- training --------------------------------------------------------------------------
    def loss_terms(self, batch: Batch, stage: str) -> dict[str, Tensor]:
        real = batch["x"]
        fake = self.sample(real.shape[0])
        g = self.generator_loss(fake)
        return {"gen": g, "disc": self.discriminator_loss(real, fake), "cos_vw": self.cos_vw().detach(), "loss": g}

    def training_step(self, batch: Batch, batch_idx: int) -> None:
        real = batch["x"]
        n = real.shape[0]
        fake = lambda: self.sample(n)  # noqa: E731
        disc = self.play("discriminator", lambda: self.named(disc=self.discriminator_loss(real, fake().detach())))
        gen = self.play("generator", lambda: self.named(gen=self.generator_loss(fake())))  # D frozen: moves v only
        cos = self.cos_vw().detach()
        self.track_train_terms({**gen, **disc, "loss": gen["gen"]}, n)
        self.log_dict({"toy/v1": self.v[0].detach(), "toy/v2": self.v[1].detach(),
                       "toy/angle_deg": torch.rad2deg(torch.acos(cos.clamp(-1, 1)))}, on_step=True, on_epoch=False)

    @staticmethod
    def named(**term: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """A player's objective of one named term: (the term, {name: the term})."""
        (value,) = term.values()
        return value, term

    def player_parameters(self, player: str) -> Iterable[nn.Parameter]:
        return [self.v] if player == "generator" else [self.d_weight, self.d_bias]

    # ---- the picture -----------------------------------------------------------------------
    def pictures(self, request: PictureRequest) -> list[PictureSpec]:
        """The state over ``request.points`` training points before every ``plot_every``-th training batch and
        at the end of training: a TensorBoard sequence ``toy/state`` and ``images/toy_step_XXXXX.png``, at the
        step the logged terms use (training batches)."""
        step = request.step
        if not (request.moment == "train_end" or request.moment == "train_batch" and step % self.plot_every == 0):
            return []
        draw = lambda: self.state_figure(request.pick("train", request.points), step=step)  # noqa: E731
        return [PictureSpec("toy/state", f"toy_step_{step:05d}.png", draw, step=step)]

    @torch.no_grad()
    def state_figure(self, data: Tensor, n_generated: int = 500, step: int | None = None) -> Figure:
        """Data points (N, 2), n_generated samples, v and w as arrows over D's surface sig(|x|·w + b)."""
        fake = self.sample(n_generated).cpu()
        data = data.detach().float().cpu()
        r = 1.1 * max(float(data.abs().max()), float(fake.abs().max()), 1.0)
        grid = torch.linspace(-r, r, 121)
        gx, gy = torch.meshgrid(grid, grid, indexing="xy")  # (121, 121): x₁ along columns, x₂ along rows
        pts = torch.stack([gx.flatten(), gy.flatten()], dim=1).to(self.device)
        surface = torch.sigmoid(self.discriminator_logit(pts)).view(gx.shape).cpu()

        fig = Figure(figsize=(5.5, 5), dpi=100)
        FigureCanvasAgg(fig)
        ax = fig.add_subplot()
        mesh = ax.pcolormesh(gx, gy, surface, cmap="coolwarm", vmin=0, vmax=1, shading="auto")
        fig.colorbar(mesh, ax=ax, label="D(x) = sig(|x₁|w₁ + |x₂|w₂ + b)")
        ax.scatter(data[:, 0], data[:, 1], s=4, c="black", label="data x = h·w")
        ax.scatter(fake[:, 0], fake[:, 1], s=4, c="gold", label="generated x = h·v")
        v, w = self.v.detach().cpu(), self.w_data.cpu()
        ax.annotate("", xy=(float(v[0]), float(v[1])), xytext=(0, 0),
                    arrowprops={"arrowstyle": "-|>", "color": "darkgreen", "lw": 2.5})
        ax.plot([], [], c="darkgreen", lw=2.5, label="v")  # the arrow's legend entry
        ax.plot([-r * w[0], r * w[0]], [-r * w[1], r * w[1]], "k--", lw=0.8, label="the data's direction w")
        angle = math.degrees(math.acos(max(-1.0, min(1.0, float(self.cos_vw())))))
        wd = self.d_weight.detach().cpu()
        ax.set_title(f"{'' if step is None else f'step {step}: '}v = ({v[0]:.2f}, {v[1]:.2f}), "
                     f"angle(v, w) = {angle:.1f}°\ndiscriminator: w = ({wd[0]:.2f}, {wd[1]:.2f}), "
                     f"b = {float(self.d_bias):.2f}",
                     fontsize=9)
        ax.set(xlim=(-r, r), ylim=(-r, r), xlabel="x₁", ylabel="x₂", aspect="equal")
        ax.legend(loc="upper left", fontsize="small", markerscale=3)
        fig.tight_layout()
        return fig
