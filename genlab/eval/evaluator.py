"""The one evaluation path for all models: test metrics chosen by the model's capabilities
(``CanReconstruct``, ``CanEncode``, ...) and what the data provides, never by model name."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable

import pytorch_lightning as pl
import torch
from torch import Tensor

from genlab.data.base import Split, TensorDataModule
from genlab.errors import UserError
from genlab.eval import disentangle as D
from genlab.eval import metrics as M
from genlab.eval import sample_quality as Q
from genlab.eval.classifier import accuracy, get_classifier
from genlab.eval.common import datamodule, eval_mode, map_batches, pick
from genlab.eval.latent_pictures import seeded
from genlab.eval.translation import CanTranslate, domain_splits, translation_classifiers, translation_metrics
from genlab.models.base import CanEncode, CanReconstruct, CanSample, CanScoreLikelihood


class Evaluator(pl.Callback):
    """Test metrics for any model, from what it can do and what the data provides.

    Logged at test epoch end, so they reach ``trainer.callback_metrics``, every logger and
    (through train.py) the run's metrics.json.
    """

    def __init__(
        self, max_probe_train: int = 10000, knn_k: int = 5, iwae_samples: int = 100, iwae_chunk: int = 50,
        seed: int = 0, classifier_cache: str | None = None, classifier_epochs: int = 3,
        samples_per_class: int = 100, n_quality_samples: int = 2000, feature_network: str = "classifier",
        inception_weights: str | None = None, pr_k: int = 3, kid_subsets: int = 10,
    ) -> None:
        self.max_probe_train = max_probe_train
        self.knn_k = knn_k
        self.iwae_samples = iwae_samples  # k of the importance-weighted bound
        self.iwae_chunk = iwae_chunk  # samples decoded at once: the memory knob
        self.seed = seed  # fixes the Monte-Carlo draws of the likelihood estimates (and the samples)
        self.classifier_cache = classifier_cache  # None: no dataset classifier, no sample_class_acc
        self.classifier_epochs = classifier_epochs
        self.samples_per_class = samples_per_class
        self.n_quality_samples = n_quality_samples  # samples scored for FID, KID, MMD², precision/recall
        if feature_network not in ("classifier", "inception"):
            raise UserError(f"callbacks.evaluator.feature_network={feature_network!r}: use classifier or inception.")
        self.feature_network = feature_network
        # inception: the weights file must be there now, not after training; it is never downloaded
        self.inception_weights = str(Q.inception_weights(inception_weights)) if feature_network == "inception" else None
        self.pr_k = pr_k  # neighbours of the precision/recall manifold balls
        self.kid_subsets = kid_subsets

    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        dm = datamodule(trainer)
        if dm is None:
            return
        with eval_mode(pl_module):
            results = self.evaluate(pl_module, dm)
        for name, value in results.items():
            pl_module.log(name, value, rank_zero_only=True)

    def evaluate(self, model: pl.LightningModule, dm: TensorDataModule) -> dict[str, float]:
        """All metrics the model and data allow, by name; undefined values (NaN) are left out."""
        info, test = dm.info, dm.splits["test"]
        out: dict[str, float] = {}
        if isinstance(model, CanReconstruct):
            err = map_batches(
                lambda x, **y: M.squared_error_per_image(x, model.reconstruct(x, **y)),
                test.x, model.device, dm.eval_batch_size, y=_labels(model, test),
            )  # (N_test,)
            out["test/sq_err_per_image"] = err.mean().item()
            out["test/mse_per_pixel"] = err.mean().item() / info.dim
            out.update(self._pca_baseline(model, dm, err.mean().item()))
            if dm.holdout_class is not None and test.y is not None:
                out["test/novelty_auroc"] = M.auroc(err, test.y == dm.holdout_class)
        if isinstance(model, CanEncode) and info.has_labels:
            out.update(self._probes(model, dm))
        if isinstance(model, CanScoreLikelihood):
            out.update(self._likelihoods(model, dm))
        conditional_sampler = isinstance(model, CanSample) and getattr(model, "conditional", False)
        if conditional_sampler and info.is_image and info.has_labels and self.classifier_cache is not None:
            out.update(self._sample_classes(model, dm))
        if isinstance(model, CanSample):
            out.update(self._sample_quality(model, dm))
        if isinstance(model, CanEncode) and info.has_factors:
            out.update(self._factors(model, dm))
        if isinstance(model, CanTranslate) and domain_splits(dm) is not None:  # unpaired translation (CycleGAN)
            cache = self.classifier_cache  # None: cycle errors only, no classifier-judged accuracies
            clf = None if cache is None else translation_classifiers(dm, cache, self.classifier_epochs,
                                                                     device=model.device)
            out.update(translation_metrics(model, dm, clf, model.device, dm.eval_batch_size))
        return {k: v for k, v in out.items() if math.isfinite(v)}

    @staticmethod
    def _pca_baseline(model: pl.LightningModule, dm: TensorDataModule, sq_err: float) -> dict[str, float]:
        """PCA with the model's code size, fitted on train, scored on the same test images."""
        k = getattr(model, "latent_dim", None)
        if not isinstance(k, int) or k <= 0:
            return {}
        fit = M.fit_pca(dm.tensors("train").x, min(k, dm.info.dim))
        x = dm.tensors("test").x
        pca_err = M.squared_error_per_image(x, M.pca_reconstruct(fit, x)).mean().item()
        ratio = sq_err / pca_err if k < dm.info.dim else math.nan  # k >= D: PCA is exact, no ratio
        return {"test/pca_sq_err_per_image": pca_err, "test/sq_err_vs_pca": ratio}

    def _probes(self, model: pl.LightningModule, dm: TensorDataModule) -> dict[str, float]:
        """Linear-probe and k-NN accuracy of the codes of up to max_probe_train train images."""
        train, test = pick(dm.splits["train"], self.max_probe_train), dm.splits["test"]
        if train.y is None or test.y is None or train.y.unique().numel() < 2:
            return {}
        if dm.holdout_class is not None:  # no probe can name a class it never saw: score the others
            test = test.subset(torch.nonzero(test.y != dm.holdout_class).squeeze(1))
        h_train, h_test = _codes(model, train, dm.eval_batch_size), _codes(model, test, dm.eval_batch_size)
        if h_train is None or h_test is None:
            return {}
        return {
            "test/linear_probe_acc": M.linear_probe_accuracy(h_train, train.y, h_test, test.y),
            "test/knn_acc": M.knn_accuracy(h_train, train.y, h_test, test.y, k=self.knn_k),
        }

    def _likelihoods(self, model: pl.LightningModule, dm: TensorDataModule) -> dict[str, float]:
        """−ELBO and the IWAE bound on −log p(x) (nats per image, test mean), and the active units:
        code dimensions whose Cov_x(E_q[h_d|x]) over the test set exceeds 0.01 (Burda et al. 2016).

        The Monte-Carlo draws come from ``seed`` (in a forked random state, so training's
        stream is untouched): the same checkpoint gives the same figures.
        """
        test = dm.splits["test"]
        run = lambda fn: map_batches(fn, test.x, model.device, dm.eval_batch_size, y=_labels(model, test))
        with seeded(model.device, self.seed):
            neg_elbo = run(lambda x, **y: model.neg_elbo(x, **y))  # (N_test,)
            iwae = run(lambda x, **y: model.iwae_nll(x, self.iwae_samples, self.iwae_chunk, **y))
        out = {"test/neg_elbo": neg_elbo.mean().item(), "test/iwae_nll": iwae.mean().item()}
        if isinstance(model, CanEncode):
            mu = run(lambda x, **y: model.encode(x, **y).flatten(1))  # (N_test, latent_dim) posterior means
            out["test/active_units"] = float((mu.var(0) > 0.01).sum())
        return out

    def _sample_classes(self, model: pl.LightningModule, dm: TensorDataModule) -> dict[str, float]:
        """Share of samples_per_class samples of each class (drawn under ``seed``) that the dataset
        classifier names as the requested class, and the classifier's own test accuracy: the ceiling."""
        clf = get_classifier(dm, self.classifier_cache, self.classifier_epochs, device=model.device)
        test, classes = dm.splits["test"], torch.arange(dm.info.num_classes or 0)
        assert test.y is not None
        if dm.holdout_class is not None:  # neither the model nor the classifier saw it: score the others
            classes = classes[classes != dm.holdout_class]
            test = test.subset(torch.nonzero(test.y != dm.holdout_class).squeeze(1))
        y = classes.repeat_interleave(self.samples_per_class)  # (n_classes · samples_per_class,)
        with seeded(model.device, self.seed):
            x = torch.cat([model.sample(len(yb), y=yb.to(model.device)).cpu() for yb in y.split(dm.eval_batch_size)])
        return {
            "test/classifier_acc": accuracy(clf, test.x, test.y, dm.eval_batch_size),
            "test/sample_class_acc": accuracy(clf, x, y, dm.eval_batch_size),
        }

    def _sample_quality(self, model: pl.LightningModule, dm: TensorDataModule) -> dict[str, float]:
        """n = min(n_quality_samples, test size, train size) samples (drawn under ``seed``; a conditional
        model gets the labels of the test images it is compared with) against n test samples: FID, KID,
        MMD², precision and recall in the feature space of the dataset classifier (or Inception) for
        images, MMD² in data space for points, and the modes covered for mixtures. Each beside its floor
        ``<metric>_floor``: the same metric for n real training samples in place of the model's."""
        test, train = dm.as_stored("test"), dm.as_stored("train")  # the real images, never binarised
        if dm.holdout_class is not None and test.y is not None:  # the model never saw it: score the others
            test = test.subset(torch.nonzero(test.y != dm.holdout_class).squeeze(1))
        n = min(self.n_quality_samples, len(test), len(train))
        features = self._feature_network(model, dm) if dm.info.is_image else lambda x: x.flatten(1)
        if n <= self.pr_k or features is None:
            return {}
        real, floor = pick(test, n, self.seed), pick(train, n, self.seed)
        labels = real.y if getattr(model, "conditional", False) else None
        with seeded(model.device, self.seed):
            fake = torch.cat([
                model.sample(len(i), y=None if labels is None else labels[i].to(model.device)).float().cpu()
                for i in torch.arange(n).split(dm.eval_batch_size)
            ])  # (n, *shape)
        if not torch.isfinite(fake).all():
            warnings.warn("Evaluator: the samples hold NaN or inf; the sample-quality metrics are skipped.",
                          stacklevel=2)
            return {}
        feats = lambda x: map_batches(features, x, model.device, dm.eval_batch_size).double()  # (n, D)
        r, f, t = feats(real.x), feats(fake), feats(floor.x)
        if dm.info.is_image:
            score = lambda other: Q.feature_metrics(r, other, self.pr_k, self.kid_subsets, self.seed)
        else:  # points: in data space
            score = lambda other: {"mmd2": Q.mmd2_unbiased(r, other)}
        got, base = score(f), score(t)
        out = {f"test/{k}": v for k, v in got.items()} | {f"test/{k}_floor": v for k, v in base.items()}
        modes = getattr(dm, "modes", None)  # mixture centres (K, 2) of ring8 / grid25
        if modes is not None:
            covered, share = Q.mode_coverage(fake, modes, dm.noise)
            out |= {"test/modes_covered": float(covered), "test/high_quality_share": share}
        return out

    def _feature_network(self, model: pl.LightningModule, dm: TensorDataModule) -> Callable[[Tensor], Tensor] | None:
        """Images (B, C, H, W) in [0, 1] -> features (B, D): the dataset classifier's penultimate layer
        (None without labels or without a classifier cache), or Inception v3."""
        if self.feature_network == "inception":
            return Q.InceptionFeatures(self.inception_weights).to(model.device)
        if not dm.info.has_labels or self.classifier_cache is None:
            return None
        return get_classifier(dm, self.classifier_cache, self.classifier_epochs, device=model.device).features

    def _factors(self, model: pl.LightningModule, dm: TensorDataModule) -> dict[str, float]:
        """Per true factor, the test R² of a linear read-out from the codes (accuracy for categorical
        factors: test/acc/<name>), fitted on up to max_probe_train train codes; and the MIG of the test codes."""
        train, test = pick(dm.splits["train"], self.max_probe_train), dm.splits["test"]
        if train.factors is None or test.factors is None:
            return {}
        h_train, h_test = _codes(model, train, dm.eval_batch_size), _codes(model, test, dm.eval_batch_size)
        if h_train is None or h_test is None:
            return {}
        names = dm.info.factor_names
        discrete = D.discrete_columns(train.factors)  # e.g. the sprite's shape index
        categorical = [names[k] for k in discrete]
        scores = D.factor_r2(h_train, train.factors, h_test, test.factors, names, categorical)
        out = {f"test/{'acc' if n in categorical else 'r2'}/{n}": v for n, v in scores.items()}
        out["test/mig"] = D.mig(h_test, test.factors, discrete_factors=discrete)
        return out


def _labels(model: pl.LightningModule, split: Split) -> torch.Tensor | None:
    """The split's labels for a conditional model (its methods take ``y=``), else None."""
    return split.y if getattr(model, "conditional", False) else None


def _codes(model: pl.LightningModule, split: Split, batch_size: int) -> torch.Tensor | None:
    """Codes (N, latent_dim) of a split on the CPU; None (with a warning) if any is NaN or inf."""
    enc = lambda x, **y: model.encode(x, **y).flatten(1)  # (B, latent_dim)
    h = map_batches(enc, split.x, model.device, batch_size, y=_labels(model, split))
    if not torch.isfinite(h).all():
        warnings.warn("Evaluator: the codes hold NaN or inf; the metrics on codes are skipped.", stacklevel=2)
        return None
    return h
