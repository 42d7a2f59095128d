"""The one picture path for all models: grids and scatters to TensorBoard and to ``<run>/images``. The
pictures every model with a capability gets are chosen here (reconstructions, samples, translation cycles,
codes, neighbours, views, zero-shot prompts, and the latent-space pictures built in ``latent_pictures``);
a model's pictures of itself come from its ``pictures`` method as ``PictureSpec``s, drawn and written
by the same ``ImageLogger.emit``. Every image grid is a labelled figure drawn by ``figures.grids_figure``:
a title and what each row (and, where it varies, each column) shows."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Annotated

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from pytorch_lightning.loggers import TensorBoardLogger
from torch import Tensor

from genlab.callbacks import embedding_pictures as EP
from genlab.callbacks.evaluator import trained_datamodule
from genlab.callbacks.latent_pictures import LatentPictures, class_rows, encode_all
from genlab.capabilities import (
    CanDecode,
    CanDisturb,
    CanEmbed,
    CanEncode,
    CanReconstruct,
    CanSample,
    CanTranslate,
    CanZeroShot,
    PictureRequest,
    PictureSpec,
    capable,
)
from genlab.config.fields import Bounds, checked
from genlab.data.base import DataInfo, TensorDataModule
from genlab.errors import ArgumentError, GenlabWarning
from genlab.figures import class_name, grids_figure, interleaved_rows, labelled_grid
from genlab.metrics.base import eval_mode, seeded
from genlab.metrics.codes import project_2d
from genlab.metrics.translation import OTHER, domain_splits
from genlab.models.base import GenerativeModel
from genlab.runfolder import RunFolder

GRID_COLUMNS = 8  # images per grid row; the models' own grids get it as PictureRequest.columns


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
    p = project_2d(codes)
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
    pictures go to both. Images are labelled grids (``figures``); 2-D point data are scatters
    against the data.
    With ``latent`` set, the test end adds the latent-space pictures of image data (manifold,
    traversals, interpolations, arithmetic) and the test codes in TensorBoard's projector. The pictures a
    model lists of itself (``GenerativeModel.pictures``) are asked for at the test's end, before every
    training batch and at the end of training.
    """

    @checked
    def __init__(
        self,
        output_dir: str,
        n_images: Annotated[int, Bounds(ge=1)] = 16,
        n_points: Annotated[int, Bounds(ge=1)] = 2000,
        seed: Annotated[int, Bounds(ge=0, lt=2**32)] = 0,
        latent: LatentPictures | None = None,
    ) -> None:
        if latent is not None and not isinstance(latent, LatentPictures):
            raise ArgumentError(type(self).__name__, "latent", lambda key: (
                f"{key} must be a node with _target_: genlab.callbacks.latent_pictures.LatentPictures (or null), "
                f"not {latent!r}"))
        self.image_dir = RunFolder(Path(output_dir)).images
        self.n_images = n_images
        self.n_points = n_points  # points and codes drawn in a scatter
        self.seed = seed  # fixes the shown images and the sampling noise across epochs
        self.latent = latent

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        dm, tb = trained_datamodule(trainer), _tensorboards(trainer)
        if trainer.sanity_checking or dm is None or not tb or not isinstance(pl_module, GenerativeModel):
            return
        with eval_mode(pl_module):
            self.stage_pictures(trainer, pl_module, dm, "val", png=False)

    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        dm = trained_datamodule(trainer)
        if dm is None or not isinstance(pl_module, GenerativeModel):
            return
        with eval_mode(pl_module):
            self.stage_pictures(trainer, pl_module, dm, "test", png=True)
            if capable(pl_module, CanEncode):
                self.code_pictures(trainer, pl_module, dm)
            self.own_pictures(trainer, pl_module, "test")
        for lg in _tensorboards(trainer):
            lg.experiment.flush()

    # the pictures a model draws of itself (GenerativeModel.pictures): at the test's end, and in training for
    # models that draw their training state (asked before every batch: most answer [] at once)
    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: object,
                             batch_idx: int) -> None:
        if isinstance(pl_module, GenerativeModel):
            self.own_pictures(trainer, pl_module, "train_batch")

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if isinstance(pl_module, GenerativeModel):
            self.own_pictures(trainer, pl_module, "train_end")

    def own_pictures(self, trainer: pl.Trainer, model: GenerativeModel, moment: str) -> None:
        """Every picture ``model.pictures`` lists at ``moment``, each drawn in evaluation mode under the seed."""
        dm = trained_datamodule(trainer)
        if dm is None:
            return
        pick = lambda split, n: TensorDataModule.scale(dm.splits[split].pick(n, self.seed).x).cpu()
        request = PictureRequest(moment, dm.info, GRID_COLUMNS, self.n_points, model.trained_batches, pick)
        specs = model.pictures(request)
        if not specs:
            return
        with eval_mode(model):
            for spec in specs:
                self.emit(trainer, spec, dm.info, seed_on=model.device)

    def stage_pictures(
        self, trainer: pl.Trainer, model: GenerativeModel, dm: TensorDataModule, stage: str, png: bool
    ) -> None:
        """Reconstructions of fixed images of the split, samples from fixed noise, translation cycles."""
        info = dm.info
        if capable(model, CanReconstruct):
            shown = dm.splits[stage].pick(self.n_images if info.is_image else self.n_points, self.seed)
            x = TensorDataModule.scale(shown.x.to(model.device))
            y = shown.y.to(model.device) if model.conditional and shown.y is not None else None
            x_hat = model.reconstruct(x, y)
            if info.is_image:
                make = lambda: reconstructions_figure(x, x_hat, info, stage)
            else:
                make = lambda: _points_figure(x, x_hat, "reconstructions")
            self.emit(trainer, PictureSpec(f"{stage}/reconstructions", "reconstructions.png" if png else None, make))
        if capable(model, CanSample):
            y = None
            n = self.n_images if info.is_image else self.n_points
            by_class = model.conditional and info.num_classes
            if by_class and info.is_image:  # one grid row per class, column j from the same noise
                samples = class_rows(model, info.num_classes or 0, GRID_COLUMNS, self.seed)
            else:
                if by_class:  # the scatter colours the points of each class
                    y = torch.arange(info.num_classes or 0, device=model.device).repeat_interleave(
                        max(1, n // (info.num_classes or 1))
                    )
                    n = len(y)
                with seeded(model.device, self.seed):
                    samples = model.sample(n, y)
            if info.is_image:
                make = lambda: samples_figure(samples, info, bool(by_class))
            else:
                data = TensorDataModule.scale(dm.splits[stage].pick(self.n_points, self.seed).x)
                make = lambda: _points_figure(data, samples, "samples", y)
            self.emit(trainer, PictureSpec(f"{stage}/samples", "samples.png" if png else None, make))
        both = domain_splits(dm)
        if capable(model, CanTranslate) and both is not None:  # rows: inputs, translated, translated back
            for direction, splits in zip(("a2b", "b2a"), both):
                x = TensorDataModule.scale(splits[stage].pick(GRID_COLUMNS, self.seed).x.to(model.device))
                t = model.translate(x, direction)
                rows = (x, t, model.translate(t, OTHER[direction]))
                make = lambda rows=rows, d=direction: cycle_figure(rows, info, d)
                file = f"cycle_{direction}.png" if png else None
                self.emit(trainer, PictureSpec(f"{stage}/cycle_{direction}", file, make))

    def code_pictures(self, trainer: pl.Trainer, model: GenerativeModel, dm: TensorDataModule) -> None:
        """The scatter of test codes; on images what the code space holds (nearest neighbours, and by capability
        the disturbed views and the zero-shot prompts); with ``latent``, for decoders, the latent-space pictures,
        and the projector."""
        info, test = dm.info, dm.splits["test"].pick(self.n_points, self.seed)
        labels = test.y if model.conditional else None  # conditional encoders take y
        batch_size = dm.options.eval_batch_size
        codes = None
        with _by_product("test/codes"):
            codes = encode_all(model, test.x, labels, batch_size)  # (N, latent_dim)
        if codes is None:
            return
        self.emit(trainer, PictureSpec("test/codes", "codes.png", lambda: _codes_figure(codes, test.y)))
        if info.is_image:
            x = TensorDataModule.scale(test.x)
            make = lambda: EP.neighbours_figure(x, codes, test.y, info, self.seed)
            self.emit(trainer, PictureSpec("test/neighbours", "neighbours.png", make))
            if capable(model, CanDisturb):  # the same views every time: drawn under the seed
                views = lambda: EP.views_figure(x[:GRID_COLUMNS].to(model.device), model, info)
                self.emit(trainer, PictureSpec("test/views", "views.png", views), seed_on=model.device)
            if capable(model, CanZeroShot) and capable(model, CanEmbed) and test.y is not None and info.num_classes:
                make = lambda: EP.zero_shot_figure(model, x, test.y, info)
                self.emit(trainer, PictureSpec("test/zero_shot", "zero_shot.png", make))
        if self.latent is None:
            return
        if info.is_image and capable(model, CanDecode):
            for pic in self.latent.pictures(model, test, codes, batch_size, info.class_names):
                self.emit(trainer, PictureSpec(f"test/{pic.name}", f"{pic.name}.png", lambda p=pic: [p.make()]), info)
        tensorboards = _tensorboards(trainer)
        if tensorboards:  # the projector: codes with labels as metadata and thumbnails as sprites
            with _by_product("test_codes embedding"):
                emb = self.latent.embedding(codes, test, info.is_image, info.bounded, self.seed)
                for lg in tensorboards:
                    lg.experiment.add_embedding(**emb, tag="test_codes", global_step=trainer.global_step)

    def emit(self, trainer: pl.Trainer, spec: PictureSpec, info: DataInfo | None = None,
             seed_on: torch.device | None = None) -> None:
        """Draw a picture (grids as one figure, bounded as ``spec.bounded`` says, else as the data ``info``
        are; under the logger's seed on the device ``seed_on`` when given) and render it to TensorBoard at
        ``spec.step`` (by default the global step) and, when named, to a PNG; the figure is cleared afterwards
        (its axes and images freed at once, not at the next garbage collection: validation pictures come
        every epoch).

        Pictures are a by-product: a drawing, rendering or writing failure warns and the run goes on.
        """
        step = trainer.global_step if spec.step is None else spec.step
        with _by_product(spec.tag):
            with seeded(seed_on, self.seed) if seed_on is not None else nullcontext():
                drawn = spec.draw()
            if not isinstance(drawn, Figure):
                bounded = spec.bounded if spec.bounded is not None else info is None or info.bounded
                drawn = grids_figure(drawn, bounded)
            try:
                for lg in _tensorboards(trainer):
                    lg.experiment.add_figure(spec.tag, drawn, global_step=step, close=False)  # close=True needs pyplot
                if spec.file is not None:
                    self.image_dir.mkdir(parents=True, exist_ok=True)
                    drawn.savefig(self.image_dir / spec.file)
            finally:
                drawn.clear()


# ---- the labelled grids of the stage pictures ---------------------------------------------------
def reconstructions_figure(x: Tensor, x_hat: Tensor, info: DataInfo, stage: str) -> Figure:
    """Images x (n, C, H, W) and their reconstructions x_hat, in rows of up to GRID_COLUMNS: each row of
    originals directly above its reconstructions (whole rows only: n is cut to a multiple of the row)."""
    ncol = min(len(x), GRID_COLUMNS)
    k = len(x) // ncol * ncol
    images = interleaved_rows([x[:k].detach().float().cpu(), x_hat[:k].detach().float().cpu()], ncol)
    title = f"reconstructions of fixed {stage} images: each row of originals above its reconstructions"
    return labelled_grid(images, ncol, ["original", "reconstruction"] * (k // ncol), title, info=info)


def samples_figure(samples: Tensor, info: DataInfo, by_class: bool) -> Figure:
    """Samples (n, C, H, W) in rows of GRID_COLUMNS; by_class: row c holds class c (``class_rows``),
    labelled with its name from ``info.class_names`` (or its index)."""
    if not by_class:
        return labelled_grid(samples, GRID_COLUMNS, (), "samples from fixed noise", info=info)
    rows = [class_name(c, info.class_names) for c in range(len(samples) // GRID_COLUMNS)]
    title = "samples, one row per class: column j starts from the same noise in every row"
    return labelled_grid(samples, GRID_COLUMNS, rows, title, info=info)


def cycle_figure(rows: tuple[Tensor, Tensor, Tensor], info: DataInfo, direction: str) -> Figure:
    """Inputs (n, C, H, W) of one domain, their translations and those translated back, a row each,
    labelled with the domains' names (``info.domains``)."""
    a, b = info.domains if len(info.domains) == 2 else ("A", "B")
    src, dst = (a, b) if direction == "a2b" else (b, a)
    labels = [f"input: {src}", f"translated: {dst}", f"translated back: {src}"]
    images = torch.cat([r.detach().float().cpu() for r in rows])
    return labelled_grid(images, len(rows[0]), labels, f"translation cycle {src} → {dst} → {src}", info=info)


def _tensorboards(trainer: pl.Trainer) -> list[TensorBoardLogger]:
    return [lg for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)]


@contextmanager
def _by_product(tag: str) -> Iterator[None]:
    """Any error in the block (plotting, IO, a model call) warns: the run matters more than a picture."""
    try:
        yield
    except Exception as e:
        warnings.warn(f"ImageLogger: could not write '{tag}': {type(e).__name__}: {e}", GenlabWarning, stacklevel=3)
