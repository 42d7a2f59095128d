"""Labelled image grids: the one rendering path of every grid ``ImageLogger`` writes.

A ``Grid`` is images laid out in rows with what each row and column shows; ``grids_figure``
draws one or more of them, stacked, into a matplotlib Figure (no pyplot: an Agg canvas, no
global state). Each grid is one ``imshow`` of a torchvision grid (no loop over images) drawn at
one figure pixel per grid pixel, so small images stay sharp after the nearest-neighbour
upscaling and the margins are sized for the labels, not guessed by a layout engine.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import torch
import torch.nn.functional as F
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.font_manager import FontProperties
from matplotlib.textpath import TextToPath
from torch import Tensor
from torchvision.utils import make_grid

from genlab.data.base import DataInfo

MIN_PIXELS = 28  # small images (8x8 digits) are upscaled to at least this size per image
PAD = 2  # white pixels between images
DPI = 100  # one figure pixel per grid pixel
FONT = 8  # points: row, column and axis labels
TITLE_FONT = 9
LINE_IN = FONT / 72 * 1.45  # inches per line of a label
MARGIN_IN = 0.08
_TEXT = TextToPath()  # measures text in the font matplotlib draws it in, without drawing


@dataclass(frozen=True)
class Grid:
    """Images laid out in rows of ``columns``, with what each row and column shows.

    Labels are one per row / column; an empty label leaves its row or column unmarked (for
    thinned tick labels). ``separators`` are column indices i with a line drawn before column i
    (endpoints set apart from what lies between them).
    """

    images: Tensor  # (rows·columns, C, H, W); a short last row is left blank
    columns: int
    row_labels: Sequence[str] = ()
    title: str = ""
    column_labels: Sequence[str] = ()
    xlabel: str = ""
    ylabel: str = ""
    separators: Sequence[int] = ()

    @property
    def rows(self) -> int:
        return math.ceil(len(self.images) / max(1, self.columns))


def grid_image(images: Tensor, columns: int, bounded: bool = True) -> tuple[Tensor, tuple[int, int]]:
    """Images (n, C, H, W) -> one picture (3, H', W') in [0, 1] and the image size (h, w) in it.

    Small images are upscaled by an integer factor (nearest) to at least MIN_PIXELS; bounded
    images are clamped to [0, 1], unbounded ones min-max scaled over the whole grid.
    """
    x = images.detach().float().cpu()
    if x.shape[-1] < MIN_PIXELS:
        x = F.interpolate(x, scale_factor=math.ceil(MIN_PIXELS / x.shape[-1]), mode="nearest")
    if bounded:
        x = x.clamp(0, 1)
    grid = make_grid(x, nrow=columns, padding=PAD, normalize=not bounded, pad_value=1.0)
    return grid, (x.shape[-2], x.shape[-1])


def cell_centres(n: int, size: int) -> list[float]:
    """Pixel coordinates (imshow's, pixel k spans k ± 0.5) of the centres of n cells of ``size`` pixels."""
    return [PAD + k * (size + PAD) + (size - 1) / 2 for k in range(n)]


def number(v: float | Tensor, spec: str = ".3g") -> str:
    """A short label for a value, formatted by ``spec``, with a true minus sign and no −0 (or −0.00)."""
    s = format(float(v), spec)
    return (s.lstrip("-") if float(s) == 0 else s).replace("-", "−")


def thinned(labels: Sequence[str], most: int) -> list[str]:
    """Every k-th label kept (the others emptied) so that at most ``most`` remain: readable ticks."""
    step = max(1, math.ceil(len(labels) / most))
    return [s if k % step == 0 else "" for k, s in enumerate(labels)]


def class_name(k: int, names: Sequence[str]) -> str:
    """Class k's name from ``DataInfo.class_names``, or its index when the data name none."""
    return names[k] if 0 <= k < len(names) else str(k)


@lru_cache(maxsize=4096)
def text_width_in(line: str, size: float = FONT) -> float:
    """Width in inches of one line of text at ``size`` points (labels recur every epoch: cached)."""
    return _TEXT.get_text_width_height_descent(line, FontProperties(size=size), ismath=False)[0] / 72


def _text_in(labels: Sequence[str]) -> float:
    """Width in inches of the longest line of labels."""
    return max((text_width_in(line) for s in labels for line in s.split("\n") if line), default=0.0)


def _left_in(g: Grid) -> float:
    """Room for a grid's row labels and y label, in inches."""
    return MARGIN_IN + (_text_in(g.row_labels) + 0.06) * any(g.row_labels) + LINE_IN * bool(g.ylabel)


def _bottom_in(g: Grid, cell_width: int) -> tuple[float, bool]:
    """Room under a grid for its column labels and x label, in inches, and whether the column
    labels are turned upright (when the longest is wider than the room between two labels)."""
    width = _text_in(g.column_labels)
    marked = [k for k, s in enumerate(g.column_labels) if s]
    gap = min((b - a for a, b in zip(marked, marked[1:])), default=len(g.column_labels))
    rotate = width > gap * (cell_width + PAD) / DPI
    labels = (width + 0.05 if rotate else LINE_IN) * any(g.column_labels)
    return MARGIN_IN + labels + LINE_IN * bool(g.xlabel), rotate


def _title(text: str, width_in: float) -> list[str]:
    """A title wrapped at spaces to lines at most ``width_in`` inches wide (a longer word keeps its own line)."""
    lines: list[str] = []
    for word in text.split():
        if lines and text_width_in(f"{lines[-1]} {word}", TITLE_FONT) <= 0.97 * width_in:  # hinting may widen
            lines[-1] = f"{lines[-1]} {word}"
        else:
            lines.append(word)
    return lines


def grids_figure(grids: Sequence[Grid], bounded: bool = True, title: str = "") -> Figure:
    """Grids stacked top to bottom in one figure, each under its title, with row and column labels.

    bounded: images in [0, 1] (clamped) rather than unbounded values (min-max scaled per grid).
    The figure is as wide as the widest grid plus the widest row labels, at one figure pixel per
    grid pixel; titles are wrapped to that width, left-aligned.
    """
    pics = [grid_image(g.images, g.columns, bounded) for g in grids]
    left = max(_left_in(g) for g in grids)
    width = left + max(image.shape[2] for image, _ in pics) / DPI + MARGIN_IN
    title_line = LINE_IN * TITLE_FONT / FONT
    parts = []  # (title lines, image height, bottom, rotate) per grid, inches
    for g, (image, cell) in zip(grids, pics):
        bottom, rotate = _bottom_in(g, cell[1])
        parts.append((_title(g.title, width - 2 * MARGIN_IN), image.shape[1] / DPI, bottom, rotate))
    head = _title(title, width - 2 * MARGIN_IN)
    height = (MARGIN_IN + len(head) * title_line if head else 0.0) + sum(
        MARGIN_IN + len(t) * title_line + h + b for t, h, b, _ in parts)
    fig = Figure(figsize=(width, height), dpi=DPI)
    FigureCanvasAgg(fig)
    y = height  # inches from the bottom, going down
    if head:
        y -= MARGIN_IN
        fig.text(0.5, y / height, "\n".join(head), ha="center", va="top", fontsize=TITLE_FONT, weight="bold")
        y -= len(head) * title_line
    for g, (image, cell), (lines, h, bottom, rotate) in zip(grids, pics, parts):
        y -= MARGIN_IN
        if lines:
            fig.text(MARGIN_IN / width, y / height, "\n".join(lines), ha="left", va="top", fontsize=TITLE_FONT)
            y -= len(lines) * title_line
        y -= h
        ax = fig.add_axes((left / width, y / height, image.shape[2] / DPI / width, h / height))
        _draw(ax, g, image, cell, rotate)
        y -= bottom
    return fig


def _draw(ax: Axes, g: Grid, image: Tensor, cell: tuple[int, int], rotate: bool) -> None:
    """One grid picture (3, H', W') of images of size ``cell`` into its axes, with ticks at the
    row and column centres."""
    ax.imshow(image.permute(1, 2, 0).numpy(), interpolation="nearest")
    cols = min(g.columns, len(g.images))
    xt = [(x, s) for x, s in zip(cell_centres(cols, cell[1]), g.column_labels) if s]
    yt = [(y, s) for y, s in zip(cell_centres(g.rows, cell[0]), g.row_labels) if s]
    ax.set_xticks([x for x, _ in xt], [s for _, s in xt], fontsize=FONT, rotation=90 if rotate else 0)
    ax.set_yticks([y for y, _ in yt], [s for _, s in yt], fontsize=FONT)
    ax.tick_params(length=2, pad=2)
    for spine in ax.spines.values():
        spine.set_visible(False)
    for i in g.separators:
        ax.axvline(i * (cell[1] + PAD) + PAD / 2 - 0.5, color="0.35", linewidth=1.5)
    if g.xlabel:
        ax.set_xlabel(g.xlabel, fontsize=FONT, labelpad=1)
    if g.ylabel:
        ax.set_ylabel(g.ylabel, fontsize=FONT, labelpad=1)


def labelled_grid(
    images: Tensor,
    columns: int,
    row_labels: Sequence[str] = (),
    title: str = "",
    column_labels: Sequence[str] | None = None,
    info: DataInfo | None = None,
    *,
    xlabel: str = "",
    ylabel: str = "",
    separators: Sequence[int] = (),
) -> Figure:
    """One labelled grid of images (n, C, H, W) in rows of ``columns`` as a figure (see ``Grid``);
    ``info`` says whether the images are bounded in [0, 1] (the default) or min-max scaled."""
    g = Grid(images, columns, tuple(row_labels), title, tuple(column_labels or ()), xlabel, ylabel, tuple(separators))
    return grids_figure([g], True if info is None else info.bounded)


def interleaved_rows(blocks: Sequence[Tensor], columns: int) -> Tensor:
    """Blocks of images, each (n, C, H, W) with n a multiple of ``columns`` -> (len(blocks)·n, C, H, W)
    in rows of ``columns``, row r of every block in turn (each row of originals above its reconstructions)."""
    x = torch.stack(list(blocks))  # (B, n, C, H, W)
    b, n = x.shape[:2]
    return x.reshape(b, n // columns, columns, *x.shape[2:]).transpose(0, 1).reshape(b * n, *x.shape[2:])


def particles_figure(frames: Tensor, data: Tensor, shown: Sequence[int] | None = None, title: str = "") -> Figure:
    """2-D particles frames (F, n, 2) of a sampler's way from noise to samples over the data (N, 2) in grey,
    one panel per shown frame (all by default) side by side, on the same fixed axes: the data and the last
    frame (the samples) in view, noise may leave it."""
    shown = list(range(len(frames))) if shown is None else list(shown)
    both = torch.cat([frames[-1], data])
    centre = both.mean(0)
    half = float((both - centre).abs().amax()) * 1.15 + 1e-6
    last = len(frames) - 1
    one = len(shown) == 1
    fig = Figure(figsize=(5, 5) if one else (1.6 * len(shown), 2.0), dpi=100)
    FigureCanvasAgg(fig)
    for i, k in enumerate(shown):
        ax = fig.add_subplot(1, len(shown), i + 1)
        ax.scatter(data[:, 0], data[:, 1], s=2, c="0.75")
        ax.scatter(frames[k, :, 0], frames[k, :, 1], s=1, c="C0", alpha=0.5)
        ax.set_xlim(float(centre[0]) - half, float(centre[0]) + half)
        ax.set_ylim(float(centre[1]) - half, float(centre[1]) + half)
        ax.set_aspect("equal")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title("noise" if k == 0 else "sample" if k == last else f"frame {k}", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig
