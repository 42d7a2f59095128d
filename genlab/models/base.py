"""The contract every genlab model follows.

A model is a LightningModule that
- says what it can do through capability protocols (``CanEncode``, ``CanDecode``,
  ``CanReconstruct``, ``CanSample``, ``CanScoreLikelihood``, ``conditional``) — callbacks and
  metrics ask for these, never for a model's name;
- says what it needs from the data (``check_data``), so a mismatch is one sentence at start-up;
- returns its loss as named terms (``loss_terms``), each logged separately per stage,
  with the total under ``"loss"``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from typing import Any, Protocol, runtime_checkable

import pytorch_lightning as pl
import torch
from torch import Tensor

from genlab.data.base import Batch, DataInfo
from genlab.errors import IncompatibleError

OptimizerFactory = Callable[..., torch.optim.Optimizer]
FUSED_DEVICES = ("cpu", "cuda")  # where torch's fused optimiser kernels run


@runtime_checkable
class CanEncode(Protocol):
    def encode(self, x: Tensor) -> Tensor:
        """x (B, *shape) -> code h (B, latent_dim); deterministic (the mean for stochastic encoders)."""
        ...


@runtime_checkable
class CanDecode(Protocol):
    def decode(self, h: Tensor) -> Tensor:
        """code h (B, latent_dim) -> x̂ (B, *shape) in data space."""
        ...


@runtime_checkable
class CanReconstruct(Protocol):
    def reconstruct(self, x: Tensor) -> Tensor:
        """x (B, *shape) -> x̂ (B, *shape) in data space."""
        ...


@runtime_checkable
class CanSample(Protocol):
    def sample(self, n: int, y: Tensor | None = None) -> Tensor:
        """n new samples (n, *shape); y (n,) the requested classes for conditional models."""
        ...


@runtime_checkable
class CanScoreLikelihood(Protocol):
    """Latent-variable models that bound −log p(x) in nats per sample (VAE family).

    ``y`` (B,) class labels are used by conditional models and ignored by the others.
    """

    def neg_elbo(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """(B,) −ELBO = −E_q[log p(x|h)] + KL(q(h|x) ‖ p(h)) in nats: the KL term analytic, the
        reconstruction term from one reparameterised posterior sample (an unbiased estimate)."""
        ...

    def iwae_nll(self, x: Tensor, k: int, chunk: int, y: Tensor | None = None) -> Tensor:
        """(B,) −log (1/k Σ_i p(x, h_i) / q(h_i|x)), h_i ~ q(h|x): the importance-weighted bound
        on −log p(x) (tighter as k grows); evaluated ``chunk`` samples at a time."""
        ...

    def kl_per_dim(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """(B, latent_dim) KL(q(h_d|x) ‖ p(h_d)) per code dimension, in nats."""
        ...


class GenerativeModel(pl.LightningModule):
    """Base class: logging of named loss terms, optimiser set-up, data checks."""

    #: what the model needs from the data; checked by ``check_data``
    needs_image: bool = False
    needs_labels: bool = False
    #: True when the model takes the class label as input (cvae, cgan, ...)
    conditional: bool = False
    #: whether a lower val/loss means a better model, so it can pick the checkpoint to test
    #: (False for adversarial models: see genlab.checkpoint)
    ranks_checkpoints: bool = True

    def __init__(
        self,
        data_info: DataInfo,
        optimizer: OptimizerFactory | None = None,
        scheduler: Callable[..., Any] | None = None,
    ) -> None:
        super().__init__()
        self.check_data(data_info)
        self.data_info = data_info
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler

    # ---- the contract -------------------------------------------------------------
    @classmethod
    def check_data(cls, info: DataInfo) -> None:
        """Raise IncompatibleError with the reason when this model cannot use ``info``."""
        name = cls.__name__
        if cls.needs_image and not info.is_image:
            raise IncompatibleError(
                f"{name} needs image data (C, H, W); '{info.name}' provides {info.dim}-D points. "
                "Pick an image dataset (e.g. data=digits) or an MLP model (e.g. model=ae)."
            )
        if (cls.needs_labels or cls.conditional) and not info.has_labels:
            raise IncompatibleError(f"{name} is conditional on class labels; '{info.name}' has none.")

    def loss_terms(self, batch: Batch, stage: str) -> dict[str, Tensor]:
        """Named loss terms for a batch; ``"loss"`` is the total that is optimised."""
        raise NotImplementedError

    # ---- Lightning plumbing shared by all models -------------------------------------
    def _step(self, batch: Batch, stage: str) -> Tensor:
        terms = self.loss_terms(batch, stage)
        bs = batch["x"].shape[0]
        if stage == "train":
            self.track_train_terms(terms, bs)
        else:  # a few large evaluation batches: Lightning's own epoch means are cheap here
            logged = {f"{stage}/{k}": v.detach() for k, v in terms.items() if k != "loss"}
            if logged:
                self.log_dict(logged, on_epoch=True, batch_size=bs)
            self.log(f"{stage}/loss", terms["loss"].detach(), on_epoch=True, prog_bar=True, batch_size=bs)
        return terms["loss"]

    def track_train_terms(self, terms: dict[str, Tensor], batch_size: int) -> None:
        """Keep the training terms for ``train/<term>`` epoch means (logged at epoch end), and
        log them as ``train/<term>_step`` every ``log_every_n_steps`` steps.

        ``self.log`` on every step costs about a millisecond per term on a CPU, a tenth of a
        small model's step; here a step costs one stacking op (terms may differ between steps,
        e.g. per phase, so they are kept per key set).
        """
        kept = self.__dict__.setdefault("_train_terms", {})
        keys = tuple(terms)
        kept.setdefault(keys, []).append((torch.stack([v.detach() for v in terms.values()]), batch_size))
        trainer = self._trainer
        every = trainer.log_every_n_steps if trainer is not None else 0
        if every and trainer.fit_loop.epoch_loop._batches_that_stepped % every == 0:
            self.log_dict({f"train/{k}_step": v.detach() for k, v in terms.items()}, on_step=True, on_epoch=False)

    def on_train_epoch_end(self) -> None:
        sums: dict[str, Tensor] = {}
        counts: dict[str, float] = {}
        for keys, rows in self.__dict__.pop("_train_terms", {}).items():
            values = torch.stack([v for v, _ in rows]).float()  # (steps, terms)
            weights = torch.tensor([float(n) for _, n in rows], device=values.device)  # batch sizes
            for k, total in zip(keys, weights @ values):
                sums[k] = sums.get(k, 0.0) + total
                counts[k] = counts.get(k, 0.0) + float(weights.sum())
        if sums:  # batch-size weighted means over the epoch
            self.log_dict({f"train/{k}": sums[k] / counts[k] for k in sums}, on_epoch=True)

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        self._step(batch, "val")

    def test_step(self, batch: Batch, batch_idx: int) -> None:
        self._step(batch, "test")

    def configure_optimizers(self) -> Any:
        if self.optimizer_factory is None:
            raise ValueError(f"{type(self).__name__} needs model.optimizer")
        opt = self.make_optimizer(self.optimizer_factory, [p for p in self.parameters() if p.requires_grad])
        if self.scheduler_factory is None:
            return opt
        return {"optimizer": opt, "lr_scheduler": {"scheduler": self.scheduler_factory(optimizer=opt)}}

    def make_optimizer(self, factory: OptimizerFactory, params: Iterable[torch.nn.Parameter]) -> torch.optim.Optimizer:
        """``factory(params=...)``, with the optimiser's fused kernel when it has one (Adam, AdamW,
        SGD, Adagrad) and the config left the choice open (no ``fused`` or ``foreach`` key): one
        kernel over all tensors instead of a Python loop over them. The MLP VAE's Adam step takes
        1.9 ms instead of 9 ms on one CPU thread. Not under fp16 mixed precision, whose gradient
        scaler must unscale before clipping, which a fused step does inside. Set
        ``model.optimizer.fused=false`` to get torch's default.
        """
        params = list(params)
        keywords = getattr(factory, "keywords", None) or {}
        cls = getattr(factory, "func", factory)
        precision = str(getattr(self._trainer, "precision", "32-true"))
        fusable = (
            "fused" not in keywords and "foreach" not in keywords
            and isinstance(cls, type) and "fused" in inspect.signature(cls.__init__).parameters
            and all(p.device.type in FUSED_DEVICES and p.is_floating_point() for p in params)
            and not precision.startswith("16")
        )
        if fusable:
            try:
                return factory(params=params, fused=True)
            except (RuntimeError, ValueError):  # no fused kernel for these tensors: the default
                pass
        return factory(params=params)
