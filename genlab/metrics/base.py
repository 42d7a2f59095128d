"""What every metric object shares: the ``Metric`` interface, the ``Context`` it reads, ``Scores``.

A metric family is a small object (``callbacks/evaluator.yaml`` lists them by name) that says
when it applies — from the model's capabilities and declared attributes and what the data
provides — and computes its values. The context computes what several metrics need once per
evaluation (codes of a split, samples, per-image reconstruction errors, the dataset classifier).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from torch import Tensor

from genlab.capabilities import CanEncode, CanSample, capable
from genlab.data.base import Split, TensorDataModule, map_batches
from genlab.errors import ArgumentError, GenlabWarning
from genlab.metrics import classifier as classifier_module
from genlab.metrics.classifier import DatasetClassifier
from genlab.models.base import GenerativeModel


@contextmanager
def eval_mode(module: pl.LightningModule) -> Iterator[None]:
    """Eval mode and no gradients for the block; the previous mode comes back afterwards."""
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        module.train(was_training)


@contextmanager
def seeded(device: torch.device, seed: int) -> Iterator[None]:
    """Fixed random numbers for the block without disturbing the training random stream."""
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


class Scores(dict):
    """Metric values by name (``test/<name>``), with the units of those that have one and the
    names a table across runs shows (``columns``), in the order the metrics were listed."""

    def __init__(self) -> None:
        super().__init__()
        self.units: dict[str, str] = {}
        self.columns: list[str] = []


class Context:
    """One evaluation of ``model`` on a set-up datamodule: shared inputs, each computed once.

    ``classifier_cache``: where dataset classifiers are kept (None: no classifier-based metrics);
    ``sample_steps``: the step budget handed to iterative samplers (None: each model's default);
    ``max_test``: the test split is a fixed random subset of this many samples (None: all of it).
    """

    def __init__(self, model: GenerativeModel, dm: TensorDataModule, seed: int = 0,
                 classifier_cache: Path | str | None = None, classifier_epochs: int = 3,
                 sample_steps: int | None = None, max_test: int | None = None) -> None:
        self.model, self.dm, self.info = model, dm, dm.info
        self.device = model.device
        self.batch_size = dm.options.eval_batch_size
        self.holdout_class = dm.options.holdout_class
        self.seed = seed
        self.classifier_cache = classifier_cache
        self.classifier_epochs = classifier_epochs
        self.sample_steps = sample_steps
        self.max_test = max_test
        self.units: dict[str, str] = {}  # metrics note the unit of a value here (test/neg_elbo: nats)
        self.memo: dict[Any, Any] = {}

    # ---- the data -----------------------------------------------------------------------------
    def split(self, name: str, stored: bool = False, seen_classes: bool = False) -> Split:
        """A split of the datamodule; ``stored``: as stored, never binarised (what samples are
        compared with); ``seen_classes``: without the hold-out class, which no model or probe saw."""
        s = self.dm.as_stored(name) if stored else self.dm.splits[name]
        if name == "test" and self.max_test is not None and len(s) > self.max_test:
            s = s.pick(self.max_test, self.seed)  # the same images as stored and as the model sees them
        return s.without_class(self.holdout_class) if seen_classes else s

    def tensors(self, name: str) -> Split:
        """A split as ``split`` gives it, scaled to float (for closed-form fits such as PCA)."""
        s = self.split(name)
        return Split(self.dm.scale(s.x), s.y, s.factors)

    def labels(self, split: Split) -> Tensor | None:
        """What the model's methods take as ``y`` for this split: its labels for conditional models."""
        return split.y if self.model.conditional else None

    def map(self, fn: Callable[..., Tensor], x: Tensor, y: Tensor | None = None) -> Tensor:
        """fn over x (N, *shape) in evaluation batches on the model's device; (N, ...) on the CPU."""
        return map_batches(fn, x, self.device, self.batch_size, y)

    # ---- computed once, shared by metrics ------------------------------------------------------
    def once(self, key: Any, make: Callable[[], Any]) -> Any:
        if key not in self.memo:
            self.memo[key] = make()
        return self.memo[key]

    def codes(self, split: Split, key: str) -> Tensor | None:
        """Codes (N, latent_dim) of a split (the posterior means of stochastic encoders), on the CPU;
        None, with a warning, when any is NaN or inf. ``key`` names the split for the memo."""
        assert capable(self.model, CanEncode)

        def make() -> Tensor | None:
            h = self.map(lambda x, y=None: self.model.encode(x, y).flatten(1), split.x, self.labels(split))
            if not torch.isfinite(h).all():
                warnings.warn("Evaluator: the codes hold NaN or inf; the metrics on codes are skipped.", GenlabWarning,
                              stacklevel=3)
                return None
            return h

        return self.once(("codes", key), make)

    def real_pair(self, n: int) -> tuple[Split, Split]:
        """What samples are compared with: min(n, test size, train size) real test samples and as many
        real training samples (the floor: a perfect sampler's score), both as stored and fixed by
        the seed; without the hold-out class, which the model never saw."""
        test, train = self.split("test", stored=True, seen_classes=True), self.split("train", stored=True)
        n = min(n, len(test), len(train))
        return test.pick(n, self.seed), train.pick(n, self.seed)

    def samples_like(self, real: Split, stream: int = 0) -> Tensor | None:
        """As many samples as ``real`` holds (n, *shape) on the CPU, drawn under the seed in evaluation
        batches with the step budget; a conditional model is asked for real's labels. None, with a
        warning, when any is NaN or inf. ``stream``: another k gives samples independent of stream 0's
        (a classifier trained on one set of samples is scored on another)."""
        assert capable(self.model, CanSample)
        labels = real.y if self.model.conditional else None
        seed = self.seed if stream == 0 else int(np.random.SeedSequence([self.seed, stream]).generate_state(1)[0])

        def make() -> Tensor | None:
            model, y, n = self.model, labels, len(real)
            with seeded(self.device, seed):
                fake = torch.cat([
                    model.sample(len(i), None if y is None else y[i].to(self.device), self.sample_steps).float().cpu()
                    for i in torch.arange(n).split(self.batch_size)
                ])
            if not torch.isfinite(fake).all():
                warnings.warn("Evaluator: the samples hold NaN or inf; the metrics on samples are skipped.",
                              GenlabWarning, stacklevel=3)
                return None
            return fake

        return self.once(("samples", stream, len(real), None if labels is None else tuple(labels.tolist())), make)

    def classifier(self) -> DatasetClassifier | None:
        """The dataset classifier of labelled images (genlab.metrics.classifier), trained once and
        cached; None without a cache folder or for data it cannot classify."""
        if self.classifier_cache is None or not (self.info.is_image and self.info.has_labels):
            return None
        return self.once("classifier", lambda: classifier_module.dataset_classifier(
            self.dm, self.classifier_cache, self.classifier_epochs, device=self.device))

    def attribute_classifiers(self) -> dict[str, DatasetClassifier] | None:
        """One classifier per attribute of captioned images (``classifier_module.attribute_classifiers``),
        trained once and cached; None without a cache folder or for data without attributes."""
        if self.classifier_cache is None or not (self.info.is_image and self.info.attributes):
            return None
        return self.once("attribute_classifiers", lambda: classifier_module.attribute_classifiers(
            self.dm, self.classifier_cache, self.classifier_epochs, device=self.device))


class Metric:
    """A metric family: ``applies`` says whether it can score this model on this data, ``compute``
    returns its values by name (``test/...``; NaN and inf are left out of the results) and notes
    units in ``ctx.units``. ``columns``: the names (without ``test/``) a table across runs shows
    (genlab-eval), each with its ``<name>_floor`` beside it when there is one.
    """

    columns: tuple[str, ...] = ()

    def applies(self, ctx: Context) -> bool:
        raise NotImplementedError

    def compute(self, ctx: Context) -> dict[str, float]:
        raise NotImplementedError

    def data_problem(self, ctx: Context) -> ArgumentError | None:
        """An argument this metric cannot use on this data (more neighbours than training codes), found when
        the data is set up, before training; asked only where the metric ``applies``. None: none."""
        return None

    def table(self, values: dict[str, float]) -> list[str]:
        """The names of computed values that a table across runs shows."""
        return [c for c in self.columns if f"test/{c}" in values]


def finite(values: dict[str, float]) -> dict[str, float]:
    """The values that are defined: NaN (an undefined ratio, a missing class) and inf are left out."""
    return {k: v for k, v in values.items() if math.isfinite(v)}
