"""The one evaluation path for all models: test metrics chosen by the model's capabilities
(``CanReconstruct``, ``CanEncode``, ...) and what the data provides, never by model name."""

from __future__ import annotations

import math
import warnings

import pytorch_lightning as pl
import torch

from genlab.data.base import TensorDataModule
from genlab.eval import metrics as M
from genlab.eval.common import datamodule, eval_mode, map_batches, pick
from genlab.models.base import CanEncode, CanReconstruct


class Evaluator(pl.Callback):
    """Test metrics for any model, from what it can do and what the data provides.

    Logged at test epoch end, so they reach ``trainer.callback_metrics``, every logger and
    (through train.py) the run's metrics.json.
    """

    def __init__(self, max_probe_train: int = 10000, knn_k: int = 5) -> None:
        self.max_probe_train = max_probe_train
        self.knn_k = knn_k

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
                lambda x: M.squared_error_per_image(x, model.reconstruct(x)), test.x, model.device, dm.eval_batch_size
            )  # (N_test,)
            out["test/sq_err_per_image"] = err.mean().item()
            out["test/mse_per_pixel"] = err.mean().item() / info.dim
            out.update(self._pca_baseline(model, dm, err.mean().item()))
            if dm.holdout_class is not None and test.y is not None:
                out["test/novelty_auroc"] = M.auroc(err, test.y == dm.holdout_class)
        if isinstance(model, CanEncode) and info.has_labels:
            out.update(self._probes(model, dm))
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
        ratio = sq_err / pca_err if pca_err > 0 else math.nan  # k = D: PCA is exact, no ratio
        return {"test/pca_sq_err_per_image": pca_err, "test/sq_err_vs_pca": ratio}

    def _probes(self, model: pl.LightningModule, dm: TensorDataModule) -> dict[str, float]:
        """Linear-probe and k-NN accuracy of the codes of up to max_probe_train train images."""
        train, test = pick(dm.splits["train"], self.max_probe_train), dm.splits["test"]
        if train.y is None or test.y is None or train.y.unique().numel() < 2:
            return {}
        if dm.holdout_class is not None:  # no probe can name a class it never saw: score the others
            test = test.subset(torch.nonzero(test.y != dm.holdout_class).squeeze(1))
        enc = lambda x: model.encode(x).flatten(1)  # (B, latent_dim)
        h_train = map_batches(enc, train.x, model.device, dm.eval_batch_size)
        h_test = map_batches(enc, test.x, model.device, dm.eval_batch_size)
        if not (torch.isfinite(h_train).all() and torch.isfinite(h_test).all()):
            warnings.warn("Evaluator: the codes hold NaN or inf; probes skipped.", stacklevel=2)
            return {}
        return {
            "test/linear_probe_acc": M.linear_probe_accuracy(h_train, train.y, h_test, test.y),
            "test/knn_acc": M.knn_accuracy(h_train, train.y, h_test, test.y, k=self.knn_k),
        }
