"""The base every genlab model extends.

A model is a LightningModule that
- declares what it can do (``capabilities``: protocols of ``genlab.capabilities`` — encode, decode,
  reconstruct, sample, translate, likelihood bounds), checked against its methods when the class is
  made — the evaluator and the pictures ask for these, never for a model's name; the pictures it
  draws of itself come from ``pictures``;
- declares what it needs from the data (``needs``, plus what its network builders declare), its
  code size (``latent_dim``), whether its methods take a condition (``conditional``) and whether a
  lower val/loss means a better model (``ranks_checkpoints``);
- returns its loss as named terms (``loss_terms``), each logged per stage, the total under "loss".

How a training step runs under Lightning (logging, compile, checkpoint extras, several updates per
batch, closed-form gradients) is ``genlab.models.plumbing``'s.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, ClassVar

from torch import Tensor

from genlab.capabilities import Needs, PictureRequest, PictureSpec, check_capabilities, needs_of
from genlab.data.base import Batch, DataInfo
from genlab.errors import UserError
from genlab.models.plumbing import LightningPlumbing, OptimizerFactory


class GenerativeModel(LightningPlumbing):
    """Base class: the declared contract (what the model can do and needs, its loss terms)."""

    #: what the model needs from the data, beyond what its network builders declare
    needs: ClassVar[Needs] = Needs()
    #: True when the model's methods take the class (or a conditioning vector) as ``y``
    conditional: ClassVar[bool] = False
    #: whether a lower val/loss means a better model, so it can pick the checkpoint to test
    #: (False for adversarial models: their latest epoch is tested)
    ranks_checkpoints: ClassVar[bool] = True
    #: what val/loss measures, where models of several classes share it (autoencoders: the reconstruction
    #: error); a sweep's summary compares val/loss only between runs whose models measure the same thing.
    #: None: the class's own loss
    val_loss_means: ClassVar[str | None] = None
    #: why the model cannot train in several processes (a sentence for the user), or None
    data_parallel_refusal: ClassVar[str | None] = None
    #: the code size of models that have a code (set by the model), None for those that have none
    latent_dim: int | None = None
    #: what the model can do: protocols of ``genlab.capabilities.CAPABILITIES``, checked when the class is made
    capabilities: ClassVar[frozenset[type]] = frozenset()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        check_capabilities(cls)  # a misspelt or forgotten capability method fails at import

    def pictures(self, request: PictureRequest) -> list[PictureSpec]:
        """The pictures the model draws of itself at ``request.moment`` (the image logger writes them); none here."""
        return []

    def __init__(
        self,
        *,
        data_info: DataInfo,
        optimizer: OptimizerFactory | None = None,
        scheduler: Callable[..., Any] | None = None,
        builders: Iterable[object] = (),
        compile: bool = False,
        updates_per_batch: int = 1,
    ) -> None:
        """``builders``: the network builders the model will call; what they declare they need
        (``genlab.nets.layers.needs``) is checked with the model's own needs, before any is built.
        ``compile``: torch.compile the networks while training (``compiled_networks``).
        ``updates_per_batch``: optimiser steps per loader batch, each on its next slice (``training_step``)."""
        super().__init__(optimizer=optimizer, scheduler=scheduler, compile=compile,
                         updates_per_batch=updates_per_batch)
        needs = type(self).needs | needs_of(builders) | Needs(labels=self.conditional)
        needs.check(data_info, type(self).__name__)
        self.needs = needs
        self.data_info = data_info

    def setup(self, stage: str) -> None:
        """Before fit: the batch size against what the model needs (``Needs.batch``), which only the
        datamodule knows; Lightning calls this after the datamodule's setup, before any step."""
        size = getattr(self.datamodule_options(), "batch_size", None)
        if stage == "fit" and isinstance(size, int) and size < self.needs.batch:
            raise UserError(f"data.batch_size={size}: {type(self).__name__} contrasts each sample with the others "
                            f"of its batch, so a batch needs at least {self.needs.batch} samples")

    # ---- the contract -------------------------------------------------------------
    def loss_terms(self, batch: Batch, stage: str) -> dict[str, Tensor]:
        """Named loss terms for a batch; ``"loss"`` is the total that is optimised."""
        raise NotImplementedError

    def val_loss_record(self) -> dict[str, Any]:
        """What metrics.json says of val/loss: whether it ranks the model's runs (not for adversarial
        losses) and what it measures (``val_loss_means``, else the class's name)."""
        return {"ranks": self.ranks_checkpoints, "means": self.val_loss_means or type(self).__name__}

    def steps_leave_parameters_unused(self) -> bool:
        """Whether a backward pass of training can leave trainable weights without a gradient (players that
        step in turn, layer-wise pretraining): under DDP, Lightning must then look for them
        (``find_unused_parameters``; genlab-train picks the strategy's variant that does)."""
        return False

    def trainer_refusal(self, trainer: Any) -> str | None:
        """Why the model cannot train under ``trainer``, as the user's error message, or None. genlab-train
        asks before Lightning starts its processes; ``configure_callbacks`` asks again for direct use."""
        if trainer.world_size > 1 and self.data_parallel_refusal:
            return f"{type(self).__name__} cannot train in {trainer.world_size} processes: {self.data_parallel_refusal}"
        return self.loop_refusal(trainer)
