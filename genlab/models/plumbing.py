"""How every genlab model meets Lightning and torch: the one module of ``genlab.models`` that knows the
framework's loop, its hooks and torch's switches, so model files hold only their maths.

- The training step (``training_step``): automatic optimisation, or — with ``updates_per_batch`` = k > 1 —
  genlab's own loop of k updates per loader batch under Lightning's manual optimisation. A model that
  writes its gradient in closed form (``writes_gradients``: ``gradient_terms`` fills each ``.grad``, as the
  RBM's CD update) runs through the same step with Lightning's backward and zero_grad left out.
- Term logging: batch-size weighted epoch means on the device (``TermMeans``) and a step log written
  directly to the loggers (``write_step_log``), both cheaper on a CPU than ``self.log`` per step.
- The finiteness check of every training update (``check_finite``), before its optimiser step.
- torch.compile of the training step or of the networks (``compiled``), eager evaluation.
- Checkpoint extras (``on_save_checkpoint``): the model's config and data description, its batch count,
  the epoch's running term sums, every random state and the values logged so far, so a resumed run
  takes up the uninterrupted one bit for bit.
- The optimiser (``make_optimizer``: torch's fused kernels where they apply).
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Iterable
from typing import Any, ClassVar

import pytorch_lightning as pl
import torch
from torch import Tensor

from genlab.checkpoints import rng_states, set_rng_states
from genlab.data.base import Batch
from genlab.errors import NonFiniteLoss, UserError

OptimizerFactory = Callable[..., torch.optim.Optimizer]
ADVICE = "Lower the learning rate (model.optimizer.lr), or roll back and halve it: trainer.nan_retries=2."
FUSED_DEVICES = ("cpu", "cuda")  # where torch's fused optimiser kernels run


def check_finite(terms: dict[str, Tensor], who: str, step: int, advice: str = ADVICE,
                 stacked: Tensor | None = None) -> None:
    """Raise NonFiniteLoss naming ``who`` ("the Autoencoder", "the generator"), the first non-finite
    term and the global step; one host sync per call. Called before the optimiser step, so the
    weights (and the checkpoints) stay finite. ``stacked``: the terms already stacked (terms,)."""
    if stacked is None:
        stacked = torch.stack([v.detach().float() for v in terms.values()])
    if bool(torch.isfinite(stacked).all()):
        return
    name, value = next((k, v) for k, v in terms.items() if not torch.isfinite(v).all())
    raise NonFiniteLoss(f"{who}'s loss term '{name}' is {value.float().mean().item()} at global step {step}: "
                        f"training diverged. {advice}")


class TermMeans:
    """Batch-size weighted epoch means of the training terms, kept on the device.

    ``self.log`` on every step costs a good share of a small model's step on a CPU (docs/speed.md);
    here a step costs one stack and one multiply-add into a running sum, and the
    means are logged once per epoch. Terms may differ between steps (per phase, per player), so
    sums are kept per set of names.
    """

    def __init__(self) -> None:
        self.sums: dict[tuple[str, ...], tuple[Tensor, float]] = {}

    def add(self, terms: dict[str, Tensor], batch_size: int) -> Tensor:
        """Add a batch's terms; returns them stacked (terms,), detached, as float."""
        keys = tuple(terms)
        row = torch.stack([v.detach().float() for v in terms.values()])  # (terms,)
        total, count = self.sums.get(keys, (None, 0.0))
        # one fused multiply-add into the running sum (a first batch starts it)
        self.sums[keys] = (row * batch_size if total is None else total.add(row, alpha=batch_size),
                           count + batch_size)
        return row

    def pop_means(self) -> dict[str, Tensor]:
        """The means since the last call, by term name; the sums start again."""
        sums: dict[str, Tensor] = {}
        counts: dict[str, float] = {}
        for keys, (total, count) in self.sums.items():
            for k, v in zip(keys, total):
                sums[k] = sums.get(k, 0.0) + v
                counts[k] = counts.get(k, 0.0) + count
        self.sums = {}
        return {k: sums[k] / counts[k] for k in sums}

    def state(self) -> list[list[Any]]:
        """The running sums as plain data for a checkpoint: [names, sums (terms,), count] per set of names."""
        return [[list(keys), total, count] for keys, (total, count) in self.sums.items()]

    def load(self, state: list[list[Any]]) -> None:
        """Take up the sums ``state`` recorded: a run resumed mid-epoch reports the whole epoch's means."""
        self.sums = {tuple(keys): (total, float(count)) for keys, total, count in state}


class LightningPlumbing(pl.LightningModule):
    """The Lightning hooks every model shares; ``GenerativeModel`` (models/base.py) adds the contract."""

    #: what model.compile compiles: the training step's forward (``loss_terms``: networks and loss in
    #: one graph) or, for models that train through their own methods (two players), each network
    compiles_loss: ClassVar[bool] = True
    #: True when training's gradient is written in closed form by ``gradient_terms`` rather than by backward
    writes_gradients: ClassVar[bool] = False

    def __init__(self, *, optimizer: OptimizerFactory | None, scheduler: Callable[..., Any] | None,
                 compile: bool, updates_per_batch: int) -> None:
        super().__init__()
        if updates_per_batch < 1:
            raise UserError(f"model.updates_per_batch={updates_per_batch} must be >= 1")
        if compile and self.writes_gradients:
            raise UserError(f"model.compile=true: {type(self).__name__} writes its gradient in closed form (a few "
                            "matrix products, no graph for torch.compile to fuse). Set model.compile=false.")
        self.updates_per_batch = updates_per_batch
        self.compile_networks = compile
        self.compiled_loss: Callable[[Batch, str], dict[str, Tensor]] | None = None  # model.compile: training's
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.trained_batches = 0  # training batches seen, kept in checkpoints (the step of pictures and terms)
        self.train_terms = TermMeans()
        self.step_log: dict[str, Tensor] | None = None  # this batch's terms for the step log (track_train_terms)
        #: the model's config as plain data (set by genlab-train): checkpoints carry it, so a model is
        #: rebuilt from its config and plain tensors, never unpickled
        self.config_record: dict[str, Any] | None = None
        #: the run's whole config as started (``RunFolder.started_config``, set by genlab-train): a resume
        #: compares the folder's config with it, so an edited file is refused rather than silently half-used
        self.run_config: dict[str, Any] | None = None
        self.restored_rng: dict[str, Any] | None = None  # random states of a checkpoint, set at train start
        #: the logged values when the restored checkpoint was written: a resumed run that has no epoch
        #: left to train reports them, as the uninterrupted run did
        self.restored_metrics: dict[str, float] = {}

    # ---- the model's contract, defined by GenerativeModel and the models -----------------------
    def loss_terms(self, batch: Batch, stage: str) -> dict[str, Tensor]:
        raise NotImplementedError

    def gradient_terms(self, batch: Batch) -> dict[str, Tensor]:
        """``loss_terms(batch, "train")``, detached, with the gradient of its "loss" written into each
        trainable parameter's ``.grad`` (replacing it): models with ``writes_gradients`` define it."""
        raise NotImplementedError

    def after_update(self) -> None:
        """Called after every optimiser step of training (an EMA of the weights follows them here)."""

    # ---- where the model runs ---------------------------------------------------------------
    @property
    def attached(self) -> bool:
        """Whether a Trainer runs the model (``self.trainer`` raises outside one)."""
        return self._trainer is not None

    def datamodule_options(self) -> Any:
        """The options of the Trainer's datamodule (``data.batch_size``, ...), or None outside a fit."""
        return getattr(getattr(self._trainer, "datamodule", None), "options", None) if self.attached else None

    # ---- the loss terms of a step, logged -------------------------------------------------------
    def step(self, batch: Batch, stage: str, log_step: bool = True) -> Tensor:
        """The loss terms of a batch, logged for ``stage``; returns the total. ``log_step``: training
        terms also go to the step log (else to the epoch means only: one value per key and step)."""
        compiled = self.compiled_loss if stage == "train" else None
        terms = (compiled or self.loss_terms)(batch, stage)
        bs = batch["x"].shape[0]
        if stage == "train":
            self.record_train_terms(terms, bs, log_step)
        else:  # a few large evaluation batches: Lightning's own epoch means are cheap here
            logged = {f"{stage}/{k}": v.detach() for k, v in terms.items() if k != "loss"}
            if logged:
                self.log_dict(logged, on_epoch=True, batch_size=bs, sync_dist=True)
            self.log(f"{stage}/loss", terms["loss"].detach(), on_epoch=True, prog_bar=True, batch_size=bs,
                     sync_dist=True)
        return terms["loss"]

    def record_train_terms(self, terms: dict[str, Tensor], batch_size: int, log_step: bool = True) -> None:
        """A training update's terms into the epoch means (and with ``log_step`` the step log: one value per
        key and Lightning step), then checked: before the optimiser's step, so the weights (and the
        checkpoints) stay finite."""
        row = self.track_train_terms(terms, batch_size) if log_step else self.train_terms.add(terms, batch_size)
        check_finite(terms, f"the {type(self).__name__}", self.global_step, stacked=row)

    def track_train_terms(self, terms: dict[str, Tensor], batch_size: int) -> Tensor:
        """Add the training terms to the epoch means (``train/<term>``, logged at epoch end), and keep
        them for the step log ``train/<term>_step`` of every ``log_every_n_steps``-th batch, where
        Lightning writes its own step logs (``write_step_log``). Returns them stacked."""
        row = self.train_terms.add(terms, batch_size)
        every = self.trainer.log_every_n_steps
        if every and (self.trained_batches + 1) % every == 0:
            self.step_log = {f"train/{k}_step": v.detach() for k, v in terms.items()}
        return row

    def write_step_log(self) -> None:
        """The kept step log to the run's loggers, at the batch's step (0-based, as Lightning counts the
        steps of its own logs), with the epoch. Written here rather than through ``self.log``, whose
        bookkeeping is costly on a CPU (docs/speed.md); and after
        the batch's optimiser step, so the values' host sync does not stall a GPU in the middle of it."""
        log, self.step_log = self.step_log, None
        if log and self.trainer.is_global_zero and self.loggers:
            values: dict[str, float] = dict(zip(log, torch.stack([v.float() for v in log.values()]).tolist()))
            values["epoch"] = self.current_epoch
            for logger in self.loggers:
                logger.log_metrics(values, step=self.trained_batches)

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        self.after_update()  # the batch's (last) optimiser step is done
        self.write_step_log()
        self.trained_batches += 1

    def on_train_epoch_end(self) -> None:
        means = self.train_terms.pop_means()
        if means:  # averaged over processes too, once per epoch
            self.log_dict({f"train/{k}": v for k, v in means.items()}, on_epoch=True, sync_dist=True)

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        self.step(batch, "val")

    def test_step(self, batch: Batch, batch_idx: int) -> None:
        self.step(batch, "test")

    # ---- checkpoints and random streams -------------------------------------------------------------
    def check_state_finite(self) -> None:
        """Raise NonFiniteLoss naming the first saved tensor — a weight, or a buffer the loss check never sees
        (batch-norm statistics, an EMA copy, persistent chains) — that holds NaN or inf; one host sync."""
        tensors = [(k, v) for k, v in self.state_dict().items() if torch.is_tensor(v) and v.is_floating_point()]
        if not tensors:
            return
        finite = torch.stack([torch.isfinite(v).all() for _, v in tensors])  # (tensors,) bool
        if bool(finite.all()):
            return
        name, value = tensors[int((~finite).nonzero()[0, 0])]
        share = float((~torch.isfinite(value)).float().mean())
        raise NonFiniteLoss(f"the {type(self).__name__}'s saved state '{name}' is not finite ({share:.0%} of its "
                            f"{value.numel()} values NaN or inf) at global step {self.global_step}: training "
                            f"diverged, and no checkpoint holds it. {ADVICE}")

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Plain data beside Lightning's state: the model's config and data description (to rebuild it
        without unpickling); to resume bit for bit, its batch count, the epoch's running term sums,
        every random state and the values logged so far. A state with NaN or inf is never saved (so never
        the best or the tested checkpoint): NonFiniteLoss, before the file is written."""
        self.check_state_finite()
        try:
            logged = self.trainer.callback_metrics
        except RuntimeError:  # saved outside a Trainer
            logged = {}
        checkpoint["genlab"] = {
            "trained_batches": self.trained_batches,
            "model_config": self.config_record,
            "run_config": self.run_config,
            "data_info": dataclasses.asdict(self.data_info),
            "rng": rng_states(),
            "term_sums": self.train_terms.state(),
            "metrics": {k: float(v) for k, v in logged.items()},
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        record = checkpoint.get("genlab", {})
        self.trained_batches = int(record.get("trained_batches", 0))
        self.restored_rng = record.get("rng")
        self.train_terms.load(record.get("term_sums", []))
        self.restored_metrics = dict(record.get("metrics", {}))

    def on_train_start(self) -> None:
        # A resumed fit takes up the random stream where the checkpoint left it: after the sanity
        # check (which draws too), so the remaining epochs are those the uninterrupted run had.
        if self.restored_rng is not None:
            set_rng_states(self.restored_rng)
            self.restored_rng = None
        if self.trainer.global_rank > 0:
            # every process was seeded alike (the same initial weights); their draws (noise, z, binarised
            # pixels) must differ, or the global batch would repeat them: other ranks branch off rank 0's stream
            branch = int(torch.randint(0, 2**62, (1,))) + self.trainer.global_rank
            torch.manual_seed(branch)

    # ---- torch.compile (model.compile=true) ----------------------------------------------
    def networks(self) -> list[torch.nn.Module]:
        """The networks compiled by model.compile: the model's direct submodules that hold parameters."""
        return [m for m in self.children() if any(True for _ in m.parameters())]

    def compiled(self, on: bool) -> None:
        """Training steps through torch.compile (on) or eagerly. The loss step is compiled as one function
        (``compiled_loss``); networks are compiled in place (nn.Module.compile), so parameter names and
        checkpoints stay as they are. The optimiser and Lightning's loop stay eager."""
        if not self.compile_networks:
            return
        import torch._dynamo

        # networks of one class share a code object, and dynamo's cache of graphs per code object
        # (8 by default) would be filled by the players of a GAN and their batch sizes
        config = torch._dynamo.config
        key = "recompile_limit" if hasattr(config, "recompile_limit") else "cache_size_limit"
        setattr(config, key, max(getattr(config, key), 64))
        if self.compiles_loss:
            self.compiled_loss = torch.compile(self.loss_terms) if on else None
            return
        for net in self.networks():
            if on:
                net.compile()
            else:
                net._compiled_call_impl = None  # nn.Module.compile's own switch back to eager

    # validation and evaluation run eagerly: a few large batches do not repay compiling their graphs
    def on_train_epoch_start(self) -> None:
        self.compiled(True)

    def on_validation_start(self) -> None:
        self.compiled(False)

    def on_fit_end(self) -> None:
        self.compiled(False)

    # ---- the training step ----------------------------------------------------------------------
    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        if self.automatic_optimization:
            if not self.writes_gradients:
                return self.step(batch, "train")
            terms = self.gradient_terms(batch)  # .grad written; Lightning's backward and zero_grad skip (below)
            self.record_train_terms(terms, batch["x"].shape[0])
            self.reduce_gradients()
            return terms["loss"]
        # model.updates_per_batch = k > 1: k updates, one per slice, in order (manual optimisation)
        parts = split_batch(batch, self.updates_per_batch)
        opt, step = self.optimizers(), self.optimizer_steps(len(parts))
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            if self.writes_gradients:
                terms = self.gradient_terms(part)
                self.record_train_terms(terms, part["x"].shape[0], log_step=last)
                loss = terms["loss"]
            else:
                loss = self.step(part, "train", log_step=last)  # terms tracked and checked before the step
                opt.zero_grad(set_to_none=True)
                if last:  # through Lightning's hooks once per loader batch, as the optimiser step below
                    self.manual_backward(loss)
                else:
                    loss.backward()
            step(i)
            if not last:
                self.after_update()  # the last one's comes from on_train_batch_end
        return loss

    def backward(self, loss: Tensor, *args: Any, **kwargs: Any) -> None:
        if not self.writes_gradients:
            super().backward(loss, *args, **kwargs)
        # else the gradient is in .grad already (gradient_terms in training_step)

    def optimizer_zero_grad(self, epoch: int, batch_idx: int, optimizer: torch.optim.Optimizer) -> None:
        # Lightning zeroes between training_step and backward, where gradient_terms has written .grad
        if not self.writes_gradients:
            super().optimizer_zero_grad(epoch, batch_idx, optimizer)

    def reduce_gradients(self) -> None:
        """Several processes: the mean of the written gradients over them, which DDP's backward hooks would
        take for a gradient made by backward (written ones never pass through them)."""
        if self.trainer.world_size > 1:
            for p in self.parameters():
                if p.grad is not None:
                    p.grad = self.trainer.strategy.reduce(p.grad, reduce_op="mean")

    # ---- which loop a Trainer allows ----------------------------------------------------------------
    def split_refusal(self, trainer: Any) -> str | None:
        """Why ``trainer`` cannot run several updates per loader batch (genlab's own update loop under
        Lightning's manual optimisation), or None."""
        if trainer.world_size > 1:
            return "several processes (DDP reduces the gradients once per forward of its wrapped model)"
        if trainer.gradient_clip_val:
            return f"gradient clipping (trainer.gradient_clip_val={trainer.gradient_clip_val})"
        if trainer.accumulate_grad_batches != 1:
            return "gradient accumulation (trainer.accumulate_grad_batches)"
        if str(trainer.precision).startswith("16"):
            return "fp16 mixed precision (its loss scaler works per Lightning step)"
        if self.scheduler_factory is not None:
            return "a learning-rate scheduler (model.scheduler: Lightning steps it only under its own loop)"
        if type(self).needs.views > 1:
            return "disturbed views (drawn per loader batch, and a contrastive loss needs the whole batch)"
        return None

    def loop_refusal(self, trainer: Any) -> str | None:
        """Why the training step cannot run under ``trainer`` (``updates_per_batch``, written gradients), or None."""
        name = type(self).__name__
        if self.writes_gradients and trainer.accumulate_grad_batches != 1:
            return (f"trainer.accumulate_grad_batches={trainer.accumulate_grad_batches}: {name} writes each batch's "
                    "gradient in closed form, which accumulation would overwrite. Raise data.batch_size instead.")
        if self.writes_gradients and str(trainer.precision).startswith("16"):
            return (f"trainer.precision={trainer.precision}: fp16's loss scaler scales the loss before a backward "
                    f"pass, which {name}'s closed-form gradient does not have. Use bf16-mixed or 32-true.")
        if self.updates_per_batch > 1:
            why = self.split_refusal(trainer)
            if why is not None:
                return (f"model.updates_per_batch={self.updates_per_batch} needs genlab's own update loop, which "
                        f"this run cannot use: {why}. Set model.updates_per_batch=1 and data.batch_size to the "
                        "minibatch.")
        return None

    def configure_callbacks(self) -> list:
        """No callbacks. Lightning calls this hook before it checks the Trainer's options against the
        model's optimisation mode, so the training loop is chosen here: several updates per loader batch
        run under manual optimisation, and so do written gradients where the run allows it (no closure,
        zero_grad or backward hooks per step: a tenth of a 784-500 RBM's update on a CPU, docs/speed.md)."""
        why = self.trainer_refusal(self.trainer)
        if why is not None:
            raise UserError(why)
        if self.updates_per_batch > 1 or (self.writes_gradients and self.split_refusal(self.trainer) is None):
            self.automatic_optimization = False
        return []

    def optimizer_steps(self, n: int) -> Callable[[int], None]:
        """The optimiser's step for update i of the n of a loader batch (manual optimisation). The last
        goes through Lightning's optimiser wrapper (its hooks, profiler and step count); the ones before it
        call the torch optimiser itself and only advance Lightning's step count, so that ``global_step``
        (``trainer.max_steps``, the checkpoints' step) counts updates, without the wrapper's per-call cost.
        Callbacks' ``on_before_optimizer_step`` see one update per loader batch."""
        opt = self.optimizers()
        loop = getattr(self.trainer.fit_loop.epoch_loop, "manual_optimization", None)
        progress = getattr(loop, "optim_step_progress", None)
        raw = opt.optimizer

        def step(i: int) -> None:
            if i == n - 1 or progress is None:  # a Lightning without the counter: the wrapper for every update
                opt.step()
                return
            progress.increment_ready()
            raw.step()
            progress.increment_completed()

        return step

    def configure_optimizers(self) -> Any:
        if self.optimizer_factory is None:
            raise ValueError(f"{type(self).__name__} needs model.optimizer")
        opt = make_optimizer(self.optimizer_factory, [p for p in self.parameters() if p.requires_grad],
                             str(self.trainer.precision))
        if self.scheduler_factory is None:
            return opt
        return {"optimizer": opt, "lr_scheduler": {"scheduler": self.scheduler_factory(optimizer=opt)}}


def split_batch(batch: Batch, k: int) -> list[Batch]:
    """A loader batch as k minibatches, in order: every entry cut along its first (batch) dimension by
    ``Tensor.tensor_split`` (sizes differ by at most one, so a short last batch gives k shorter ones)."""
    if k == 1:
        return [batch]
    return [dict(zip(batch, rows)) for rows in zip(*(v.tensor_split(k) for v in batch.values()))]


def make_optimizer(factory: OptimizerFactory, params: Iterable[torch.nn.Parameter],
                   precision: str = "32-true") -> torch.optim.Optimizer:
    """``factory(params=...)``, with the optimiser's fused kernel when it has one (Adam, AdamW,
    SGD, Adagrad) and the config left the choice open (no ``fused`` or ``foreach`` key): one
    kernel over all tensors instead of a Python loop over them (timed in docs/speed.md).
    Not under fp16 mixed precision (``precision``, the
    trainer's), whose gradient scaler must unscale before clipping, which a fused step does
    inside. Set ``model.optimizer.fused=false`` to get torch's default.
    """
    params = list(params)
    keywords = getattr(factory, "keywords", None) or {}  # a functools.partial from config, or a class
    cls = getattr(factory, "func", factory)
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
