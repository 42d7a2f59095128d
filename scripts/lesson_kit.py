"""The parts every lesson of ``scripts/lessons.py`` shares: what a lesson is (preset, claim, criterion,
judge), its record in the gallery, the helpers that read finished runs, and the figure helpers. The judges
are in ``lesson_judges.py`` (autoencoders, VAEs, GANs, comparing pdfs, diffusion, guidance; ``LESSONS``, every
lesson in gallery order), ``lesson_manifold.py``, ``lesson_boltzmann.py`` and ``lesson_contrastive.py``.
"""
from __future__ import annotations

import json
import math
import textwrap
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.image import imread
from omegaconf import DictConfig, OmegaConf
from torch import Tensor

Panel = np.ndarray | Callable[[Axes], None]  # an RGB(A) image (H, W, 3|4), or a function drawing into axes


# ---- what a lesson is ---------------------------------------------------------------------
@dataclass
class Outcome:
    """What a lesson measured: its numbers (one sentence each), whether the claim held by the
    lesson's criterion, and its figure."""

    numbers: list[str]
    held: bool
    figure: Figure


@dataclass(frozen=True)
class Lesson:
    """One claim of the lecture notes: the preset ``lesson_<name>``, the multirun that compares runs
    (``sweep``, one override with several values such as ``model=ae,dae`` or ``model.persistent=false,true``;
    empty: one run of the preset), the overrides of ``--quick``, the criterion by which the claim counts
    as held, and ``judge``, which measures it from the run folders (by the swept value: ``runs["ae"]``;
    by the model's name for a single run)."""

    name: str
    title: str
    claim: str
    criterion: str
    judge: Callable[[dict[str, Path]], Outcome]
    sweep: str = ""
    quick: tuple[str, ...] = ()

    @property
    def swept(self) -> str:
        """The key the multirun sweeps ("model" for ``model=ae,dae``); empty for a single run."""
        return self.sweep.split("=", 1)[0]

    @property
    def command(self) -> str:
        """The one line a user types."""
        if self.sweep:
            return f"genlab-train -m experiment=lesson_{self.name} {self.sweep}"
        return f"genlab-train experiment=lesson_{self.name}"

    def arguments(self, quick: bool, seed: int) -> list[str]:
        """genlab-train's arguments: the command's, the seed, and the ``--quick`` overrides."""
        args = self.command.split()[1:]
        return [*args, f"seed={seed}", *(self.quick if quick else ())]


@dataclass
class Record:
    """A lesson's latest result as kept in lessons.json and shown in the gallery."""

    mode: str  # quick | full
    seed: int
    numbers: list[str] = field(default_factory=list)
    held: bool | None = None  # None: the lesson failed to run
    error: str = ""
    seconds: float = 0.0
    overrides: list[str] = field(default_factory=list)  # the --quick overrides it ran with
    # the same lesson at further seeds (lessons.py --seeds): {"1": {"held", "numbers", "error", "seconds"}}
    others: dict[str, dict[str, Any]] = field(default_factory=dict)


# ---- reading runs -------------------------------------------------------------------------
def metrics_of(run: Path) -> dict[str, float]:
    """The final metrics a run wrote (metrics.json)."""
    return json.loads((run / "metrics.json").read_text())["metrics"]


def config_of(run: Path) -> DictConfig:
    """The run's composed config (.hydra/config.yaml)."""
    cfg = OmegaConf.load(run / ".hydra" / "config.yaml")
    assert isinstance(cfg, DictConfig)
    return cfg


def load(run: Path) -> tuple[Any, Any]:
    """(the best checkpoint's model in eval mode on the CPU, the run's datamodule set up), rebuilt from
    the run folder as genlab-eval does."""
    from genlab.evaluate import load_run
    from genlab.run import build, load_model

    cfg, checkpoint = load_run(run)
    dm = build(cfg.data)
    dm.setup("fit")
    return load_model(cfg.model, checkpoint).eval(), dm


def one_per_class(y: Tensor, n: int = 10) -> Tensor:
    """Indices (≤ n,) of the first sample of each of the first n classes present in labels y (N,)."""
    classes = [int(c) for c in y.unique()[:n]]
    return torch.stack([torch.nonzero(y == c)[0, 0] for c in classes])


@torch.no_grad()
def batched(fn: Callable[[Tensor], Tensor], x: Tensor, size: int = 512) -> Tensor:
    """fn over x (N, ...) in chunks, without gradients; (N, ...)."""
    return torch.cat([fn(chunk) for chunk in x.split(size)])


# ---- drawing ------------------------------------------------------------------------------
def new_figure(width: float, height: float) -> Figure:
    """A figure on the Agg canvas (no pyplot)."""
    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def pixels(fig: Figure) -> np.ndarray:
    """A drawn figure as an RGBA array (H, W, 4): a labelled grid becomes a panel of a larger figure."""
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba()).copy()


def panels(items: Sequence[tuple[str, Panel]], title: str, columns: int | None = None,
           plot_size: tuple[float, float] = (5.0, 3.6)) -> Figure:
    """Panels in a grid of ``columns`` (default: one row), each under its caption, ``title`` on top.
    Images are shown at their own size (one figure pixel per image pixel), plots at ``plot_size``
    inches, so that a run's picture is not resampled into a blur."""
    columns = columns or len(items)
    rows = math.ceil(len(items) / columns)

    def size(item: Panel) -> tuple[float, float]:
        return (item.shape[1] / 100, item.shape[0] / 100) if isinstance(item, np.ndarray) else plot_size

    cells = [[items[r * columns + c] if r * columns + c < len(items) else None for c in range(columns)]
             for r in range(rows)]
    widths = [max(size(row[c][1])[0] for row in cells if row[c] is not None) for c in range(columns)]
    heights = [max(size(it[1])[1] for it in row if it is not None) for row in cells]
    chars = [max(20, int(w * 100 / 8.5)) for w in widths]  # about 8 pixels per character of a caption
    caption_lines = [max((len(textwrap.wrap(it[0], chars[c])) for c, it in enumerate(row) if it), default=0)
                     for row in cells]
    head = textwrap.wrap(title, max(40, int(sum(widths) * 100 / 8)))
    total_w = sum(widths) + 0.3 * columns
    total_h = sum(heights) + 0.22 * sum(caption_lines) + 0.1 * rows + 0.25 * len(head) + 0.2
    fig = Figure(figsize=(total_w, total_h), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    grid = fig.add_gridspec(rows, columns, width_ratios=widths, height_ratios=heights)
    for r, row in enumerate(cells):
        for c, it in enumerate(row):
            if it is None:
                continue
            caption, item = it
            ax = fig.add_subplot(grid[r, c])
            if isinstance(item, np.ndarray):
                ax.imshow(item, interpolation="antialiased")
                ax.set_axis_off()
            else:
                item(ax)
            if caption:
                ax.set_title("\n".join(textwrap.wrap(caption, chars[c])), fontsize=10)
    fig.suptitle("\n".join(head), fontsize=11, weight="bold")
    return fig


def image_rows(rows: Sequence[tuple[str, Tensor]], title: str, info: Any, size: int = 40) -> Figure:
    """Rows of images (n, C, H, W), each labelled, under ``title``, as genlab's labelled grid (the run
    pictures' style); small images are enlarged (nearest neighbour) to about ``size`` pixels."""
    import torch.nn.functional as F

    from genlab.figures import labelled_grid

    images = torch.cat([r.detach().float().cpu() for _, r in rows])
    factor = max(1, round(size / images.shape[-1]))
    images = F.interpolate(images, scale_factor=factor, mode="nearest") if factor > 1 else images
    return labelled_grid(images, len(rows[0][1]), [label for label, _ in rows], title, info=info)


def bars(ax: Axes, groups: Sequence[str], series: dict[str, Sequence[float]], ylabel: str) -> None:
    """Grouped bars: one group per name in ``groups``, one bar per series, values written on top."""
    width = 0.8 / len(series)
    for i, (label, values) in enumerate(series.items()):
        pos = np.arange(len(groups)) + (i - (len(series) - 1) / 2) * width
        drawn = ax.bar(pos, values, width, label=label)
        ax.bar_label(drawn, fmt="%.3g", fontsize=8)
    ax.set_xticks(np.arange(len(groups)), groups)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=8)


def picture(run: Path, name: str) -> np.ndarray:
    """One of the run's own pictures (``<run>/images/<name>``) as an array."""
    return imread(run / "images" / name)


