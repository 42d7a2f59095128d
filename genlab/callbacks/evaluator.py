"""The one evaluation path for all models: the metric objects listed in config, each applied
where the model's capabilities and the data allow (``genlab.metrics``), never by model name.

    callbacks.evaluator.metrics.probes.knn_k=10          # an option of one metric
    ~callbacks.evaluator.metrics.sample_quality          # switch one off
    +callbacks.evaluator.metrics.mine="{_target_: my.Metric}"   # add one (a genlab.metrics.base.Metric)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated

import pytorch_lightning as pl
from omegaconf import OmegaConf

from genlab.callbacks.interrupt import raise_pending
from genlab.config import conf_dir
from genlab.config.fields import Bounds, checked
from genlab.config.instantiation import build
from genlab.data.base import TensorDataModule
from genlab.errors import ArgumentError
from genlab.metrics.base import Context, Metric, Scores, eval_mode, finite
from genlab.models.base import GenerativeModel


def trained_datamodule(trainer: pl.Trainer) -> TensorDataModule | None:
    """The trainer's datamodule when it is a loaded TensorDataModule, on global rank 0 only."""
    dm = trainer.datamodule
    if trainer.global_rank != 0 or not isinstance(dm, TensorDataModule) or not dm.splits:
        return None
    return dm


class Evaluator(pl.Callback):
    """Test metrics for any model, logged at test epoch end, so they reach
    ``trainer.callback_metrics``, every logger and (through train.py) the run's metrics.json.

    ``metrics``: the metric objects by name, in the order they run. ``seed`` fixes every random
    draw of the evaluation (Monte-Carlo estimates, samples) in a forked random state.
    ``classifier_cache``: where dataset classifiers are kept (None: no classifier-based metrics).
    ``sample_steps``: the step budget of iterative samplers (None: each model's default).
    ``max_test``: the metrics score a fixed random subset of this many test images (None: all of them).
    """

    @checked
    def __init__(self, metrics: Mapping[str, Metric] | None = None,
                 seed: Annotated[int, Bounds(ge=0, lt=2**32)] = 0,
                 classifier_cache: str | None = None, classifier_epochs: Annotated[int, Bounds(ge=1)] = 3,
                 sample_steps: Annotated[int | None, Bounds(ge=1)] = None,
                 max_test: Annotated[int | None, Bounds(ge=1)] = None) -> None:
        self.metrics = dict(metrics or {})
        for name, metric in self.metrics.items():
            if not isinstance(metric, Metric):
                raise ArgumentError(type(self).__name__, "metrics", lambda key, name=name, metric=metric: (
                    f"{key}.{name} is a {type(metric).__name__}, not a metric: give it a _target_ naming a "
                    "genlab.metrics.base.Metric subclass"))
        self.seed, self.sample_steps, self.max_test = seed, sample_steps, max_test
        self.classifier_cache, self.classifier_epochs = classifier_cache, classifier_epochs
        self.last = Scores()  # the latest evaluation, with its units
        self.config_key: str | None = None  # where the run's config holds it (set by config.instantiation)

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Before training (the data is set up first): a metric's argument this data cannot serve is refused
        now, not found after training; named under ``config_key``, the evaluator's place in the config."""
        if stage != "fit" or not isinstance(pl_module, GenerativeModel) or not isinstance(trainer.datamodule,
                                                                                          TensorDataModule):
            return
        ctx = Context(pl_module, trainer.datamodule, self.seed, None, self.classifier_epochs, self.sample_steps,
                      self.max_test)
        for name, metric in self.metrics.items():
            problem = metric.data_problem(ctx) if metric.applies(ctx) else None
            if problem is not None:
                raise problem.at(f"{self.config_key}.metrics.{name}" if self.config_key else f"metrics.{name}")

    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not isinstance(pl_module, GenerativeModel) or not isinstance(trainer.datamodule, TensorDataModule):
            return
        dm = trained_datamodule(trainer)
        if dm is not None:  # rank 0 scores the whole test set, once
            with eval_mode(pl_module):
                self.last = self.evaluate(pl_module, dm)
        distributed = trainer.world_size > 1
        if distributed:  # every process logs the same values, so Lightning's epoch-level sync has them all
            self.last = trainer.strategy.broadcast(self.last, src=0)
        for name, value in self.last.items():
            pl_module.log(name, value, sync_dist=distributed)

    def evaluate(self, model: GenerativeModel, dm: TensorDataModule) -> Scores:
        """Every listed metric that applies to the model and data, by value name; undefined values
        (NaN, inf) are left out. The result also carries the units and the table's columns."""
        ctx = Context(model, dm, self.seed, self.classifier_cache, self.classifier_epochs, self.sample_steps,
                      self.max_test)
        out = Scores()
        for metric in self.metrics.values():
            raise_pending()  # a stop whose first raise a finalizer swallowed, before minutes of sampling
            if metric.applies(ctx):
                values = finite(metric.compute(ctx))
                out.update(values)
                out.columns += [c for c in metric.table(values) if c not in out.columns]
        out.units.update({k: v for k, v in ctx.units.items() if k in out})
        return out


def configured_evaluator(classifier_cache: str | Path | None = None, overrides: Sequence[str] = ()) -> Evaluator:
    """The evaluator as ``conf/callbacks/evaluator.yaml`` configures it, outside a run (genlab-eval,
    notebooks, tests): ``classifier_cache`` in place of the run's cache folder, and dotted
    ``overrides`` such as "metrics.probes.knn_k=3" or "sample_steps=50"."""
    node = OmegaConf.load(conf_dir() / "callbacks" / "evaluator.yaml").evaluator
    node.classifier_cache = None if classifier_cache is None else str(classifier_cache)
    node = OmegaConf.merge(node, OmegaConf.from_dotlist(list(overrides)))
    # placed where a run's config holds it, so that a bad option is named by its key there
    return build(OmegaConf.create({"callbacks": {"evaluator": node}}).callbacks.evaluator)
