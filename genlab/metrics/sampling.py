"""Metric objects for every model that samples: sample quality against real data (FID, KID, MMD²,
precision and recall, each beside its floor), the classifier two-sample test, mode coverage of Gaussian
mixtures, and how often a conditional sampler draws the class it is asked for. The functions are in
``sample_quality`` and ``two_sample``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

import torch
from torch import Tensor

from genlab.capabilities import CanSample, capable
from genlab.config.fields import Bounds, checked, needs_more
from genlab.metrics import sample_quality as Q
from genlab.metrics.base import Context, Metric, seeded
from genlab.metrics.classifier import accuracy
from genlab.metrics.two_sample import c2st


class SampleQuality(Metric):
    """n = min(n_samples, test size, train size) samples (drawn under the seed; a conditional model
    gets the labels of the test samples it is compared with) against n real test samples: FID, KID,
    MMD², precision and recall in the feature space of the dataset classifier (or Inception v3) for
    images, MMD² in data space for points. Each beside its floor ``<metric>_floor``: the same
    metric for n real training samples in place of the model's. ``test/sample_steps`` records the
    step budget iterative samplers were given, when one was set.
    """

    columns = ("fid", "kid", "mmd2", "precision", "recall")

    @checked
    def __init__(self, n_samples: Annotated[int, Bounds(ge=2)] = 2000,
                 feature_network: Annotated[str, Bounds(choices=("classifier", "inception"))] = "classifier",
                 inception_weights: str | None = None,
                 pr_k: Annotated[int, Bounds(ge=1)] = 3,  # k = 0: no k-NN balls, precision = recall = 0
                 kid_subsets: Annotated[int, Bounds(ge=1)] = 10) -> None:
        if n_samples <= pr_k:  # fewer samples than neighbours: every metric would be dropped silently
            raise needs_more(type(self).__name__, "n_samples", n_samples, "pr_k", pr_k,
                             "precision and recall need more samples than neighbours")
        self.n_samples, self.feature_network = n_samples, feature_network
        self.pr_k, self.kid_subsets = pr_k, kid_subsets
        # inception: the weights file must be there now, not after training; it is never downloaded
        self.inception_weights = str(Q.inception_weights(inception_weights)) if feature_network == "inception" else None

    def applies(self, ctx: Context) -> bool:
        return capable(ctx.model, CanSample)

    def features(self, ctx: Context) -> Callable[[Tensor], Tensor] | None:
        """Images (B, C, H, W) in [0, 1] -> features (B, D); points are their own features."""
        if not ctx.info.is_image:
            return lambda x: x.flatten(1)
        if self.feature_network == "inception":
            return Q.InceptionFeatures(self.inception_weights).to(ctx.device)
        clf = ctx.classifier()
        return None if clf is None else clf.features

    def compute(self, ctx: Context) -> dict[str, float]:
        real, floor = ctx.real_pair(self.n_samples)
        features = self.features(ctx)
        if len(real) <= self.pr_k or features is None:
            return {}
        fake = ctx.samples_like(real)
        if fake is None:
            return {}
        feats = lambda x: ctx.map(features, x).double()  # noqa: E731  (n, D)
        r, f, t = feats(real.x), feats(fake), feats(floor.x)
        if ctx.info.is_image:
            score = lambda other: Q.feature_metrics(r, other, self.pr_k, self.kid_subsets, ctx.seed)  # noqa: E731
        else:  # points: in data space
            score = lambda other: {"mmd2": Q.mmd2_unbiased(r, other)}  # noqa: E731
        got, base = score(f), score(t)
        out = {f"test/{k}": v for k, v in got.items()} | {f"test/{k}_floor": v for k, v in base.items()}
        if ctx.sample_steps is not None:
            out["test/sample_steps"] = float(ctx.sample_steps)
        return out


class TwoSampleTest(Metric):
    """The classifier two-sample test (``two_sample.c2st``): a fresh small classifier, trained for ``epochs``
    to tell n model samples from n real training images, scored on m held-out samples against m real test
    images (m = min(n_samples, test size), n = min(n_samples, what the training split leaves)):
    ``test/c2st_acc`` (0.5: indistinguishable) and its p-value ``test/c2st_p``, beside
    ``test/c2st_acc_floor``, the same test with other real training images in place of the model's. The
    held-out samples are SampleQuality's when n_samples agree; the training samples are another draw.
    """

    columns = ("c2st_acc",)

    @checked
    def __init__(self, n_samples: Annotated[int, Bounds(ge=2)] = 1000, epochs: Annotated[int, Bounds(ge=1)] = 20,
                 batch_size: Annotated[int, Bounds(ge=1)] = 128, lr: Annotated[float, Bounds(gt=0)] = 1e-3) -> None:
        self.n_samples, self.epochs, self.batch_size, self.lr = n_samples, epochs, batch_size, lr

    def applies(self, ctx: Context) -> bool:
        return capable(ctx.model, CanSample)

    def compute(self, ctx: Context) -> dict[str, float]:
        test, train = ctx.split("test", stored=True, seen_classes=True), ctx.split("train", stored=True)
        m = min(self.n_samples, len(test), len(train) // 3)  # the floor takes 2n + m training images
        n = min(self.n_samples, (len(train) - m) // 2)
        if min(m, n) < 2:
            return {}
        real_test = test.pick(m, ctx.seed)
        order = torch.randperm(len(train), generator=torch.Generator().manual_seed(ctx.seed))
        real_train, other = train.subset(order[:n]), train.subset(order[n:2 * n + m])
        fake_test, fake_train = ctx.samples_like(real_test), ctx.samples_like(real_train, stream=1)
        if fake_test is None or fake_train is None:
            return {}
        scale = ctx.dm.scale  # stored uint8 pixels -> [0, 1], as the samples are
        run = lambda a, b: c2st(scale(real_train.x), a, scale(real_test.x), b, self.epochs,  # noqa: E731
                                self.batch_size, self.lr, ctx.seed, ctx.device)
        got, floor = run(fake_train, fake_test), run(scale(other.x[:n]), scale(other.x[n:]))
        return {"test/c2st_acc": got.accuracy, "test/c2st_p": got.p_value, "test/c2st_acc_floor": floor.accuracy}


class ModeCoverage(Metric):
    """On a Gaussian mixture (``DataInfo.modes``: toy2d ring8, grid25), the modes covered by the same
    samples as SampleQuality's, and the share of samples within 3σ of a mode (high quality)."""

    columns = ("modes_covered", "high_quality_share")

    @checked
    def __init__(self, n_samples: Annotated[int, Bounds(ge=1)] = 2000,
                 min_share: Annotated[float, Bounds(gt=0, le=1)] = 0.2) -> None:
        self.n_samples, self.min_share = n_samples, min_share

    def applies(self, ctx: Context) -> bool:
        return capable(ctx.model, CanSample) and ctx.info.modes is not None and ctx.info.mode_std is not None

    def compute(self, ctx: Context) -> dict[str, float]:
        real, _ = ctx.real_pair(self.n_samples)
        fake = ctx.samples_like(real)
        if fake is None:
            return {}
        modes, std = torch.tensor(ctx.info.modes), ctx.info.mode_std
        assert std is not None
        covered, share = Q.mode_coverage(fake, modes, std, self.min_share)
        return {"test/modes_covered": float(covered), "test/high_quality_share": share}


class SampleClasses(Metric):
    """For a conditional sampler of labelled images: the share of ``per_class`` samples of each class
    (drawn under the seed) that the dataset classifier names as the requested class, beside the
    classifier's own test accuracy (the ceiling); the hold-out class, never seen, is left out."""

    columns = ("sample_class_acc",)

    @checked
    def __init__(self, per_class: Annotated[int, Bounds(ge=1)] = 100) -> None:
        self.per_class = per_class

    def applies(self, ctx: Context) -> bool:
        return (capable(ctx.model, CanSample) and ctx.model.conditional and ctx.info.is_image
                and ctx.info.has_labels and ctx.classifier() is not None)

    def compute(self, ctx: Context) -> dict[str, float]:
        assert capable(ctx.model, CanSample)
        clf, test = ctx.classifier(), ctx.split("test", seen_classes=True)
        assert test.y is not None
        classes = torch.arange(ctx.info.num_classes or 0)
        if ctx.holdout_class is not None:
            classes = classes[classes != ctx.holdout_class]
        y = classes.repeat_interleave(self.per_class)  # (n_classes · per_class,)
        with seeded(ctx.device, ctx.seed):
            x = torch.cat([ctx.model.sample(len(yb), yb.to(ctx.device), ctx.sample_steps).cpu()
                           for yb in y.split(ctx.batch_size)])
        return {
            "test/classifier_acc": accuracy(clf, test.x, test.y, ctx.batch_size),
            "test/sample_class_acc": accuracy(clf, x, y, ctx.batch_size),
        }
