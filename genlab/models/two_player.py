"""The base of every two-player model (gan, dcgan, cgan, infogan, wgan_gp, cyclegan, toy_gan).

Written once here: the optimiser pair (generator side, discriminator side) with optional
schedulers stepped per epoch, one player's step under Lightning's manual optimisation (the other
player frozen, the loss checked for NaN/inf before the step, the gradient clipped, the step taken),
the mapping between data space and the players' centred space, and the refusal of Trainer options
that manual optimisation cannot honour. A model says which parameters belong to each player and
in what order they play in ``training_step``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from genlab.data.base import DataInfo
from genlab.errors import UserError
from genlab.models.base import GenerativeModel, OptimizerFactory
from genlab.models.plumbing import check_finite, make_optimizer

PLAYERS = ("generator", "discriminator")
TWO_PLAYER_ADVICE = ("Lower the learning rates (model.optimizer_g.lr, model.optimizer_d.lr), clip the gradients "
                     "(model.grad_clip=1.0), or roll back and halve them: trainer.nan_retries=2.")
Objective = Callable[[], tuple[Tensor, dict[str, Tensor]]]  # -> (loss to minimise, terms to log and check)


class TwoPlayerModel(GenerativeModel):
    """Two players with their own optimisers, stepped by hand; see the module docstring."""

    ranks_checkpoints: ClassVar[bool] = False  # an adversarial val/loss cannot rank checkpoints: the latest is tested

    def __init__(
        self,
        *,
        data_info: DataInfo,
        optimizer_g: OptimizerFactory | None = None,
        optimizer_d: OptimizerFactory | None = None,
        grad_clip: float | None = None,
        scheduler: Callable[..., Any] | None = None,
        builders: Iterable[object] = (),
        compile: bool = False,
    ) -> None:
        super().__init__(data_info=data_info, scheduler=scheduler, builders=builders, compile=compile)
        self.automatic_optimization = False
        self.optimizer_g, self.optimizer_d, self.grad_clip = optimizer_g, optimizer_d, grad_clip

    def steps_leave_parameters_unused(self) -> bool:
        return True  # each player's step leaves the other's weights without a gradient

    # ---- what a model says ----------------------------------------------------------------
    def player_parameters(self, player: str) -> Iterable[nn.Parameter]:
        """The parameters the ``player`` ("generator" or "discriminator") optimises."""
        raise NotImplementedError

    # ---- the data-space mapping --------------------------------------------------------------
    def to_players(self, x: Tensor) -> Tensor:
        """Data -> the players' space: images in [0, 1] as 2x − 1 in [−1, 1]; points unchanged."""
        return 2 * x - 1 if self.data_info.bounded else x

    def to_data(self, x: Tensor) -> Tensor:
        """The players' space -> data: (x + 1)/2 for images; points unchanged."""
        return (x + 1) / 2 if self.data_info.bounded else x

    def squash(self, raw: Tensor) -> Tensor:
        """A generator's raw output -> the players' space: tanh for images, linear for points."""
        return torch.tanh(raw) if self.data_info.bounded else raw

    # ---- one step of one player ----------------------------------------------------------------
    def play(self, player: str, objective: Objective) -> dict[str, Tensor]:
        """One optimiser step of ``player`` on ``objective()``; the other player's weights are frozen
        for it (no gradient reaches them), and a player's gradients exist only during its own step.
        Returns the terms, checked to be finite before the step."""
        opt = self.optimizers()[PLAYERS.index(player)]
        with self.toggled_optimizer(opt):
            loss, terms = objective()
            check_finite({**terms, "total": loss}, f"the {type(self).__name__} {player}", self.global_step,
                         TWO_PLAYER_ADVICE)
            opt.zero_grad(set_to_none=True)
            self.manual_backward(loss)
            if self.grad_clip is not None:  # the Trainer's clipping does not apply to manual optimisation
                self.clip_gradients(opt, gradient_clip_val=self.grad_clip, gradient_clip_algorithm="norm")
            opt.step()
            opt.zero_grad(set_to_none=True)
        return terms

    # ---- Lightning set-up ----------------------------------------------------------------------
    def configure_callbacks(self) -> list:
        """No callbacks. Lightning calls this hook before it checks the Trainer, so the settings
        manual optimisation cannot take are reported here, as the user's options."""
        trainer, name = self.trainer, type(self).__name__
        if trainer.gradient_clip_val:
            raise UserError(
                f"trainer.gradient_clip_val={trainer.gradient_clip_val} cannot be used with {name}: "
                "its two players step by hand (manual optimisation). Use "
                f"model.grad_clip={trainer.gradient_clip_val} and trainer.gradient_clip_val=null."
            )
        if trainer.accumulate_grad_batches != 1:
            raise UserError(f"trainer.accumulate_grad_batches must be 1 for {name} (manual optimisation)")
        return []

    compiles_loss = False  # each player's objective is its own method: model.compile compiles the networks

    def configure_optimizers(self) -> Any:
        if self.optimizer_g is None or self.optimizer_d is None:
            raise UserError(f"{type(self).__name__} needs model.optimizer_g and model.optimizer_d")
        precision = str(self.trainer.precision)
        opts = [make_optimizer(factory, self.player_parameters(player), precision)
                for factory, player in zip((self.optimizer_g, self.optimizer_d), PLAYERS)]
        if self.scheduler_factory is None:
            return opts
        return opts, [self.scheduler_factory(optimizer=o) for o in opts]

    def on_train_epoch_end(self) -> None:
        super().on_train_epoch_end()
        schedulers = self.lr_schedulers()
        for s in schedulers if isinstance(schedulers, list) else [schedulers] if schedulers else []:
            s.step()  # under manual optimisation the schedulers are stepped here, once per epoch
