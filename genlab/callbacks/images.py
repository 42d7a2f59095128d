"""The one picture path for all models: grids and scatters to TensorBoard and to
``<run>/images``, chosen by the model's capabilities (reconstruct, sample, encode, decode,
translate, traverse codes, show filters, run chains, plot its state); the latent-space pictures are built in
``latent_pictures``. Every image grid is a labelled figure drawn by ``figures.grids_figure``:
a title and what each row (and, where it varies, each column) shows."""

from __future__ import annotations

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

from genlab.callbacks import embedding_pictures
from genlab.callbacks.evaluator import trained_datamodule
from genlab.callbacks.figures import Grid, class_name, grids_figure, interleaved_rows, labelled_grid
from genlab.callbacks.latent_pictures import LatentPictures, class_rows, encode_all
from genlab.capabilities import (
    CanEncode,
    CanPlotState,
    CanReconstruct,
    CanRunChains,
    CanSample,
    CanShowFilters,
    CanShowTrajectory,
    CanSweepGuidance,
    CanTranslate,
    CanTraverseCodes,
    Traversal,
)
from genlab.config.fields import require
from genlab.data.base import DataInfo, TensorDataModule
from genlab.errors import GenlabWarning, UserError
from genlab.metrics.base import eval_mode, seeded
from genlab.metrics.codes import project_2d
from genlab.metrics.translation import OTHER, domain_splits
from genlab.models.base import GenerativeModel

GRID_COLUMNS = 8
GUIDANCE_SCALES = (0.0, 1.0, 2.0, 4.0)  # the rows of guidance_sweep.png
TRAJECTORY_FRAMES = 8  # frames of a 2-D sampler's particles (TensorBoard steps, trajectory.png panels)


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
    traversals, interpolations, arithmetic) and the test codes in TensorBoard's projector.
    """

    def __init__(
        self,
        output_dir: str,
        n_images: int = 16,
        n_points: int = 2000,
        seed: int = 0,
        latent: LatentPictures | None = None,
    ) -> None:
        key = "callbacks.image_logger"
        require(f"{key}.n_images", n_images, "int", ge=1)
        require(f"{key}.n_points", n_points, "int", ge=1)
        require(f"{key}.seed", seed, "int", ge=0, lt=2**32)
        if latent is not None and not isinstance(latent, LatentPictures):
            raise UserError(f"{key}.latent must be a node with _target_: genlab.callbacks.latent_pictures."
                            f"LatentPictures (or null), not {latent!r}.")
        self.image_dir = Path(output_dir) / "images"
        self.n_images = n_images
        self.n_points = n_points  # points and codes drawn in a scatter
        self.seed = seed  # fixes the shown images and the sampling noise across epochs
        self.latent = latent
        self.plots_state = False  # whether the trained model draws its training state (on_train_start)

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
            if isinstance(pl_module, CanEncode):
                self.code_pictures(trainer, pl_module, dm)
            if isinstance(pl_module, CanTraverseCodes) and dm.info.is_image:  # one block per code, top to bottom
                model, bounded = pl_module, dm.info.bounded
                make = lambda: grids_figure(code_traversal_grids(model.code_traversals(GRID_COLUMNS)), bounded)
                self.emit(trainer, "test/code_traversals", "code_traversals.png", make)
            if isinstance(pl_module, CanRunChains) and dm.info.is_image:  # a chain's way from the data
                self.chain_picture(trainer, pl_module, dm)
            if isinstance(pl_module, CanShowTrajectory):  # a sampler's way from noise
                if dm.info.is_image:
                    self.trajectory_picture(trainer, pl_module, dm.info)
                elif dm.info.dim == 2:
                    self.particles_picture(trainer, pl_module, dm)
            if isinstance(pl_module, CanSweepGuidance) and dm.info.is_image and dm.info.num_classes:
                self.guidance_picture(trainer, pl_module, dm.info)
            if isinstance(pl_module, CanShowFilters) and dm.info.is_image:  # each unit's weights as an image
                filters = pl_module.filters(GRID_COLUMNS * GRID_COLUMNS)
                title = "learned filters: each hidden unit's weights, scaled to [0, 1] one by one"
                make = lambda: labelled_grid(filters.detach().float().cpu(), GRID_COLUMNS, (), title)
                self.emit(trainer, "test/filters", "filters.png", make)
        for lg in _tensorboards(trainer):
            lg.experiment.flush()

    def chain_picture(self, trainer: pl.Trainer, model: CanRunChains, dm: TensorDataModule) -> None:
        """Markov chains from GRID_COLUMNS test images (columns), one row per number of sweeps, up to the
        model's sampling budget: ``test/gibbs_chains``, ``gibbs_chains.png``."""
        budget = int(getattr(model, "sample_steps", 1000))
        sweeps = [k for k in (0, 1, 2, 5, 10, 30, 100, 300, 1000, 3000, 10000) if k < budget] + [budget]
        x = TensorDataModule.scale(dm.splits["test"].pick(GRID_COLUMNS, self.seed).x).to(model.device)
        with seeded(model.device, self.seed):
            frames = model.chain_frames(x, sweeps)  # (rows, columns, *shape)
        images = frames.flatten(0, 1).float().cpu()
        title = "Gibbs chains from test images (columns): visible means after each number of sweeps (rows)"
        make = lambda: labelled_grid(images, GRID_COLUMNS, [f"{k} sweeps" for k in sweeps], title)  # noqa: E731
        self.emit(trainer, "test/gibbs_chains", "gibbs_chains.png", make)

    def trajectory_picture(self, trainer: pl.Trainer, model: CanShowTrajectory, info: DataInfo) -> None:
        """GRID_COLUMNS samples' way from noise (rows, left to right: GRID_COLUMNS frames of the sampler's loop,
        from pure noise to the sample), drawn under the seed: ``test/trajectory``, ``trajectory.png``."""
        with seeded(getattr(model, "device", torch.device("cpu")), self.seed):
            frames = model.trajectory(GRID_COLUMNS, GRID_COLUMNS)  # (frames, n, *shape)
        images = frames.transpose(0, 1).flatten(0, 1).float().cpu()  # row i: sample i's frames
        columns = ["noise", *[""] * (frames.shape[0] - 2), "sample"]
        title = "sampling trajectories: each row one sample's way from pure noise (left) to the sample (right)"
        make = lambda: labelled_grid(images, frames.shape[0], (), title, columns, info=info)  # noqa: E731
        self.emit(trainer, "test/trajectory", "trajectory.png", make)

    def particles_picture(self, trainer: pl.Trainer, model: CanShowTrajectory, dm: TensorDataModule) -> None:
        """2-D points moving from noise to samples: n_points particles at TRAJECTORY_FRAMES points of the
        sampler's loop, over the test data in grey, on fixed axes. TensorBoard gets them as an image sequence
        (``test/trajectory`` at steps 0..frames−1: its slider plays the motion), the PNG as a row of panels."""
        with seeded(getattr(model, "device", torch.device("cpu")), self.seed):
            frames = model.trajectory(self.n_points, TRAJECTORY_FRAMES).float().cpu()  # (frames, n, 2)
        data = dm.splits["test"].pick(self.n_points, self.seed).x.float().flatten(1).cpu()
        both = torch.cat([frames[-1], data])
        centre = both.mean(0)
        half = float((both - centre).abs().amax()) * 1.15 + 1e-6  # the data and the samples in view; noise may leave
        last = len(frames) - 1

        def panel(ax: Axes, k: int) -> None:
            ax.scatter(data[:, 0], data[:, 1], s=2, c="0.75")
            ax.scatter(frames[k, :, 0], frames[k, :, 1], s=1, c="C0", alpha=0.5)
            ax.set_xlim(float(centre[0]) - half, float(centre[0]) + half)
            ax.set_ylim(float(centre[1]) - half, float(centre[1]) + half)
            ax.set_aspect("equal")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title("noise" if k == 0 else "sample" if k == last else f"frame {k}", fontsize=8)

        def one(k: int) -> Figure:
            fig, ax = _figure()
            panel(ax, k)
            fig.tight_layout()
            return fig

        def row() -> Figure:
            fig = Figure(figsize=(1.6 * len(frames), 2.0), dpi=100)
            FigureCanvasAgg(fig)
            for k in range(len(frames)):
                panel(fig.add_subplot(1, len(frames), k + 1), k)
            fig.suptitle("particles from pure noise (left) to samples (right); test data in grey", fontsize=9)
            fig.tight_layout()
            return fig

        for k in range(len(frames)):  # TensorBoard's step slider over the frames
            self.emit(trainer, "test/trajectory", None, lambda k=k: one(k), step=k)
        self.emit(trainer, "test/trajectory_panels", "trajectory.png", row)

    def guidance_picture(self, trainer: pl.Trainer, model: CanSweepGuidance, info: DataInfo) -> None:
        """One sample of each class (columns, at most 10) at each of GUIDANCE_SCALES (rows), all rows from the same
        noise, drawn under the seed: ``test/guidance_sweep``, ``guidance_sweep.png``."""
        device = getattr(model, "device", torch.device("cpu"))
        y = torch.arange(min(10, info.num_classes or 0), device=device)
        with seeded(device, self.seed):
            grid = model.guidance_sweep(y, GUIDANCE_SCALES)  # (scales, classes, *shape)
        images = grid.flatten(0, 1).float().cpu()
        rows = [f"scale {s:g}" for s in GUIDANCE_SCALES]
        columns = [class_name(int(c), info.class_names) for c in y]
        title = "guidance scale (rows: 0 unconditional, 1 conditional, more: guided), one class per column, same noise"
        make = lambda: labelled_grid(images, len(y), rows, title, columns, info=info)  # noqa: E731
        self.emit(trainer, "test/guidance_sweep", "guidance_sweep.png", make)

    # models that draw their training state: a figure every state_every batches and at the end
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # asked once: a protocol's isinstance looks up each of its members (docs/speed.md), and this runs every batch
        self.plots_state = isinstance(pl_module, CanPlotState)

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: object,
                             batch_idx: int) -> None:
        if self.plots_state and pl_module.trained_batches % pl_module.state_every == 0:
            self.state_picture(trainer, pl_module)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if isinstance(pl_module, CanPlotState):
            self.state_picture(trainer, pl_module)

    def state_picture(self, trainer: pl.Trainer, model: GenerativeModel) -> None:
        """The state figure over n_points training points and fixed sampling noise: a TensorBoard
        sequence ``<state_name>/state`` and ``images/<state_name>_step_XXXXX.png``, at the step the
        logged scalars use (training batches; ``trainer.global_step`` counts each optimiser's steps)."""
        dm = trained_datamodule(trainer)
        if dm is None or not isinstance(model, CanPlotState):
            return
        step, name = model.trained_batches, model.state_name
        data = TensorDataModule.scale(dm.splits["train"].pick(self.n_points, self.seed).x)
        with eval_mode(model), seeded(model.device, self.seed):
            self.emit(trainer, f"{name}/state", f"{name}_step_{step:05d}.png",
                      lambda: model.state_figure(data, step=step), step=step)

    def stage_pictures(
        self, trainer: pl.Trainer, model: GenerativeModel, dm: TensorDataModule, stage: str, png: bool
    ) -> None:
        """Reconstructions of fixed images of the split, samples from fixed noise, translation cycles."""
        info = dm.info
        if isinstance(model, CanReconstruct):
            shown = dm.splits[stage].pick(self.n_images if info.is_image else self.n_points, self.seed)
            x = TensorDataModule.scale(shown.x.to(model.device))
            y = shown.y.to(model.device) if model.conditional and shown.y is not None else None
            x_hat = model.reconstruct(x, y)
            if info.is_image:
                make = lambda: reconstructions_figure(x, x_hat, info, stage)
            else:
                make = lambda: _points_figure(x, x_hat, "reconstructions")
            self.emit(trainer, f"{stage}/reconstructions", "reconstructions.png" if png else None, make)
        if isinstance(model, CanSample):
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
            self.emit(trainer, f"{stage}/samples", "samples.png" if png else None, make)
        both = domain_splits(dm)
        if isinstance(model, CanTranslate) and both is not None:  # rows: inputs, translated, translated back
            for direction, splits in zip(("a2b", "b2a"), both):
                x = TensorDataModule.scale(splits[stage].pick(GRID_COLUMNS, self.seed).x.to(model.device))
                t = model.translate(x, direction)
                rows = (x, t, model.translate(t, OTHER[direction]))
                make = lambda rows=rows, d=direction: cycle_figure(rows, info, d)
                self.emit(trainer, f"{stage}/cycle_{direction}", f"cycle_{direction}.png" if png else None, make)

    def code_pictures(self, trainer: pl.Trainer, model: GenerativeModel, dm: TensorDataModule) -> None:
        """The scatter of test codes and, with ``latent``, the latent-space pictures and the projector."""
        info, test = dm.info, dm.splits["test"].pick(self.n_points, self.seed)
        labels = test.y if model.conditional else None  # conditional encoders take y
        batch_size = dm.options.eval_batch_size
        codes = None
        with _by_product("test/codes"):
            codes = encode_all(model, test.x, labels, batch_size)  # (N, latent_dim)
        if codes is None:
            return
        self.emit(trainer, "test/codes", "codes.png", lambda: _codes_figure(codes, test.y))
        for name, make in embedding_pictures.pictures(model, dm, test, codes, self.seed):  # neighbours, views, prompts
            self.emit(trainer, f"test/{name}", f"{name}.png", make)
        if self.latent is None:
            return
        if info.is_image:
            for pic in self.latent.pictures(model, test, codes, batch_size, info.class_names):
                make = lambda p=pic: grids_figure([p.make()], info.bounded)
                self.emit(trainer, f"test/{pic.name}", f"{pic.name}.png", make)
        tensorboards = _tensorboards(trainer)
        if tensorboards:  # the projector: codes with labels as metadata and thumbnails as sprites
            with _by_product("test_codes embedding"):
                emb = self.latent.embedding(codes, test, info.is_image, info.bounded, self.seed)
                for lg in tensorboards:
                    lg.experiment.add_embedding(**emb, tag="test_codes", global_step=trainer.global_step)

    def emit(self, trainer: pl.Trainer, tag: str, filename: str | None, make: Callable[[], Figure],
             step: int | None = None) -> None:
        """Render a figure to TensorBoard (at ``step``, by default the global step) and, when named,
        to a PNG; the figure is cleared afterwards (its axes and images freed at once, not at the next
        garbage collection: validation pictures come every epoch).

        Pictures are a by-product: a rendering or writing failure warns and the run goes on.
        """
        step = trainer.global_step if step is None else step
        with _by_product(tag):
            fig = make()
            try:
                for lg in _tensorboards(trainer):
                    lg.experiment.add_figure(tag, fig, global_step=step, close=False)  # close=True needs pyplot
                if filename is not None:
                    self.image_dir.mkdir(parents=True, exist_ok=True)
                    fig.savefig(self.image_dir / filename)
            finally:
                fig.clear()


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


def code_traversal_grids(traversals: list[Traversal]) -> list[Grid]:
    """One labelled block per grid of ``code_traversals``, labelled as the model labels its codes."""
    return [Grid(t.images, len(t.images) // max(1, len(t.row_labels)), t.row_labels, t.title, t.column_labels)
            for t in traversals]


def _tensorboards(trainer: pl.Trainer) -> list[TensorBoardLogger]:
    return [lg for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)]


@contextmanager
def _by_product(tag: str) -> Iterator[None]:
    """Any error in the block (plotting, IO, a model call) warns: the run matters more than a picture."""
    try:
        yield
    except Exception as e:
        warnings.warn(f"ImageLogger: could not write '{tag}': {type(e).__name__}: {e}", GenlabWarning, stacklevel=3)
