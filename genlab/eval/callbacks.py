"""The one evaluation path (``Evaluator``) and the one picture path (``ImageLogger``) for all models.

Both ask the model for capabilities (``CanReconstruct``, ``CanEncode``, ``CanSample``), never
for its name, and read the data from the ``TensorDataModule`` held by the trainer.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from pytorch_lightning.loggers import TensorBoardLogger
from torch import Tensor
from torchvision.utils import make_grid, save_image

from genlab.data.base import DataInfo, Split, TensorDataModule
from genlab.eval import metrics as M
from genlab.models.base import CanEncode, CanReconstruct, CanSample

GRID_COLUMNS = 8
MIN_PIXELS = 28  # small images (8x8 digits) are upscaled to at least this size per image


# ---- shared helpers ---------------------------------------------------------------------
def _datamodule(trainer: pl.Trainer) -> TensorDataModule | None:
    """The trainer's datamodule when it is a loaded TensorDataModule, on global rank 0 only."""
    dm = trainer.datamodule
    if trainer.global_rank != 0 or not isinstance(dm, TensorDataModule) or not dm.splits:
        return None
    return dm


@contextmanager
def _eval_mode(module: pl.LightningModule) -> Iterator[None]:
    """Eval mode and no gradients for the block; the previous mode comes back afterwards."""
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        module.train(was_training)


def _map(fn: Callable[[Tensor], Tensor], x: Tensor, device: torch.device, batch_size: int) -> Tensor:
    """fn over x (N, *shape) in batches on device, inputs scaled to float; outputs (N, ...) on CPU."""
    outs = [
        fn(TensorDataModule.scale(x[i : i + batch_size].to(device))).float().cpu()
        for i in range(0, x.shape[0], batch_size)
    ]
    return torch.cat(outs)


def _pick(split: Split, n: int, seed: int = 0) -> Split:
    """A fixed random subset of n samples: splits may be stored sorted by class."""
    idx = torch.randperm(len(split), generator=torch.Generator().manual_seed(seed))[:n]
    return split.subset(idx.sort().values)


# ---- evaluation ---------------------------------------------------------------------------
class Evaluator(pl.Callback):
    """Test metrics for any model, from what it can do and what the data provides.

    Logged at test epoch end, so they reach ``trainer.callback_metrics``, every logger and
    (through train.py) the run's metrics.json.
    """

    def __init__(self, max_probe_train: int = 10000, knn_k: int = 5) -> None:
        self.max_probe_train = max_probe_train
        self.knn_k = knn_k

    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        dm = _datamodule(trainer)
        if dm is None:
            return
        with _eval_mode(pl_module):
            results = self.evaluate(pl_module, dm)
        for name, value in results.items():
            pl_module.log(name, value, rank_zero_only=True)

    def evaluate(self, model: pl.LightningModule, dm: TensorDataModule) -> dict[str, float]:
        """All metrics the model and data allow, by name; undefined values (NaN) are left out."""
        info, test = dm.info, dm.splits["test"]
        out: dict[str, float] = {}
        if isinstance(model, CanReconstruct):
            err = _map(
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
        train, test = _pick(dm.splits["train"], self.max_probe_train), dm.splits["test"]
        if train.y is None or test.y is None or train.y.unique().numel() < 2:
            return {}
        if dm.holdout_class is not None:  # no probe can name a class it never saw: score the others
            test = test.subset(torch.nonzero(test.y != dm.holdout_class).squeeze(1))
        enc = lambda x: model.encode(x).flatten(1)  # (B, latent_dim)
        h_train = _map(enc, train.x, model.device, dm.eval_batch_size)
        h_test = _map(enc, test.x, model.device, dm.eval_batch_size)
        if not (torch.isfinite(h_train).all() and torch.isfinite(h_test).all()):
            warnings.warn("Evaluator: the codes hold NaN or inf; probes skipped.", stacklevel=2)
            return {}
        return {
            "test/linear_probe_acc": M.linear_probe_accuracy(h_train, train.y, h_test, test.y),
            "test/knn_acc": M.knn_accuracy(h_train, train.y, h_test, test.y, k=self.knn_k),
        }


# ---- pictures -------------------------------------------------------------------------------
def _grid(x: Tensor, info: DataInfo, ncol: int) -> Tensor:
    """Images (n, C, H, W) -> one grid picture (3, H', W') in [0, 1], small images upscaled."""
    x = x.detach().float().cpu()
    if x.shape[-1] < MIN_PIXELS:
        x = F.interpolate(x, scale_factor=math.ceil(MIN_PIXELS / x.shape[-1]), mode="nearest")
    if info.bounded:
        x = x.clamp(0, 1)
    return make_grid(x, nrow=ncol, padding=2, normalize=not info.bounded, pad_value=1.0)


def _xy(x: Tensor) -> Tensor:
    """Points (n, D) -> their first two coordinates (n, 2), zero-padded for D = 1."""
    x = x.detach().float().cpu().flatten(1)[:, :2]
    return F.pad(x, (0, 2 - x.shape[1]))


def _figure() -> tuple[Figure, Axes]:
    """A figure on the Agg canvas (no pyplot: no display needed, no global state)."""
    fig = Figure(figsize=(5, 5), dpi=100)
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot()


def _colours(y: Tensor | None) -> dict:
    """scatter() keywords colouring points by class label y (n,), or none without labels."""
    if y is None:
        return {}
    n = int(y.max()) + 1
    if n > 20:
        return {"c": y.cpu(), "cmap": "viridis"}
    cmap = "tab10" if n <= 10 else "tab20"  # class k keeps colour k across pictures
    return {"c": y.cpu(), "cmap": cmap, "vmin": -0.5, "vmax": (10 if n <= 10 else 20) - 0.5}


def _points_figure(data: Tensor, other: Tensor, label: str, y: Tensor | None = None) -> Figure:
    """Scatter of data points (grey) under model points (reconstructions or samples, coloured by y)."""
    fig, ax = _figure()
    d, o = _xy(data), _xy(other)
    ax.scatter(d[:, 0], d[:, 1], s=3, c="0.7", label="data")
    ax.scatter(o[:, 0], o[:, 1], s=3, label=label, **_colours(y))
    ax.legend(loc="upper right", markerscale=4)
    ax.set_aspect("equal", adjustable="datalim")
    fig.tight_layout()
    return fig


def _codes_figure(codes: Tensor, y: Tensor | None) -> Figure:
    """Codes (n, d) as a 2-D scatter (PCA when d > 2), coloured by label when there are labels."""
    fig, ax = _figure()
    p = M.project_2d(codes)
    sc = ax.scatter(p[:, 0], p[:, 1], s=4, **_colours(y))
    if y is not None:
        ax.legend(*sc.legend_elements(), title="class", loc="best", fontsize="small")
    d = codes.shape[1]
    ax.set_title(f"test codes (d={d}" + (", first 2 principal components)" if d > 2 else ")"))
    fig.tight_layout()
    return fig


class ImageLogger(pl.Callback):
    """Reconstructions, samples and code scatters as PNGs in ``<output_dir>/images`` and in TensorBoard.

    Validation epochs go to TensorBoard only (a sequence showing training progress); the test
    pictures go to both. Images are grids; 2-D point data are scatters against the data.
    """

    def __init__(self, output_dir: str, n_images: int = 16, n_points: int = 2000, seed: int = 0) -> None:
        self.image_dir = Path(output_dir) / "images"
        self.n_images = n_images
        self.n_points = n_points  # points and codes drawn in a scatter
        self.seed = seed  # fixes the shown images and the sampling noise across epochs

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        dm, tb = _datamodule(trainer), _tensorboards(trainer)
        if trainer.sanity_checking or dm is None or not tb:
            return
        with _eval_mode(pl_module):
            self._pictures(trainer, pl_module, dm, "val", png=False)

    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        dm = _datamodule(trainer)
        if dm is None:
            return
        with _eval_mode(pl_module):
            self._pictures(trainer, pl_module, dm, "test", png=True)
            if isinstance(pl_module, CanEncode):
                test = _pick(dm.splits["test"], self.n_points, self.seed)
                codes = _map(lambda x: pl_module.encode(x).flatten(1), test.x, pl_module.device, dm.eval_batch_size)
                self._emit(trainer, "test/codes", "codes.png", lambda: _codes_figure(codes, test.y))
        for lg in _tensorboards(trainer):
            lg.experiment.flush()

    def _pictures(
        self, trainer: pl.Trainer, model: pl.LightningModule, dm: TensorDataModule, stage: str, png: bool
    ) -> None:
        """Reconstructions of fixed images of the split and samples from fixed noise."""
        info = dm.info
        if isinstance(model, CanReconstruct):
            shown = _pick(dm.splits[stage], self.n_images if info.is_image else self.n_points, self.seed)
            x = TensorDataModule.scale(shown.x.to(model.device))
            x_hat = model.reconstruct(x)
            if info.is_image:  # originals in the top rows, their reconstructions below
                ncol = min(len(x), GRID_COLUMNS)
                make = lambda: torch.cat([_grid(x, info, ncol), _grid(x_hat, info, ncol)], dim=1)
            else:
                make = lambda: _points_figure(x, x_hat, "reconstructions")
            self._emit(trainer, f"{stage}/reconstructions", "reconstructions.png" if png else None, make)
        if isinstance(model, CanSample):
            y = None
            n = self.n_images if info.is_image else self.n_points
            if getattr(model, "conditional", False) and info.num_classes:  # one grid row per class
                per_class = GRID_COLUMNS if info.is_image else max(1, n // info.num_classes)
                y = torch.arange(info.num_classes, device=model.device).repeat_interleave(per_class)
                n = len(y)
            with _seeded(model.device, self.seed):
                samples = model.sample(n, y=y)
            if info.is_image:
                make = lambda: _grid(samples, info, GRID_COLUMNS)
            else:
                data = TensorDataModule.scale(_pick(dm.splits[stage], self.n_points, self.seed).x)
                make = lambda: _points_figure(data, samples, "samples", y)
            self._emit(trainer, f"{stage}/samples", "samples.png" if png else None, make)

    def _emit(self, trainer: pl.Trainer, tag: str, filename: str | None, make: Callable[[], Tensor | Figure]) -> None:
        """Render a picture (grid tensor or figure) to TensorBoard and, when named, to a PNG.

        Pictures are a by-product: a rendering or writing failure warns and the run goes on.
        """
        try:
            pic = make()
            for lg in _tensorboards(trainer):
                if isinstance(pic, Figure):
                    lg.experiment.add_figure(tag, pic, global_step=trainer.global_step, close=False)
                else:
                    lg.experiment.add_image(tag, pic, global_step=trainer.global_step, dataformats="CHW")
            if filename is not None:
                self.image_dir.mkdir(parents=True, exist_ok=True)
                if isinstance(pic, Figure):
                    pic.savefig(self.image_dir / filename)
                else:
                    save_image(pic, self.image_dir / filename)
        except Exception as e:  # any plotting or IO error: the run matters more than a picture
            warnings.warn(f"ImageLogger: could not write '{tag}': {type(e).__name__}: {e}", stacklevel=2)


def _tensorboards(trainer: pl.Trainer) -> list[TensorBoardLogger]:
    return [lg for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)]


@contextmanager
def _seeded(device: torch.device, seed: int) -> Iterator[None]:
    """Fixed random numbers for the block without disturbing the training random stream."""
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield
