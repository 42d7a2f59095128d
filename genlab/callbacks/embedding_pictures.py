"""Pictures of what an encoder's space holds, for any model that encodes images: the nearest test
neighbours of query images (by their codes); for contrastive models the disturbed views they were
trained on; and, for models with a text side (CLIP), the similarity of test images to each class prompt.
``ImageLogger`` chooses them by capability at the end of the test and writes them."""

from __future__ import annotations

import torch
from matplotlib.figure import Figure
from torch import Tensor

from genlab.capabilities import CanDisturb, CanZeroShot
from genlab.data.base import DataInfo
from genlab.figures import class_name, labelled_grid
from genlab.metrics.embedding import class_means

QUERIES, NEIGHBOURS = 8, 7  # rows of the neighbour grid, and the neighbours beside each query


def nearest(codes: Tensor, queries: Tensor, k: int) -> Tensor:
    """Indices (q, k) of the k nearest codes (N, d) to each of the query rows ``queries`` (q,) of codes,
    the query itself left out; Euclidean, as the k-NN probe measures."""
    d = torch.cdist(codes[queries].double(), codes.double())  # (q, N)
    d[torch.arange(len(queries)), queries] = float("inf")
    return d.topk(k, dim=1, largest=False).indices


def neighbours_figure(x: Tensor, codes: Tensor, y: Tensor | None, info: DataInfo, seed: int = 0) -> Figure:
    """Test images x (N, C, H, W) in [0, 1]: QUERIES rows, each a query image then its nearest neighbours."""
    q = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))[:QUERIES]
    idx = torch.cat([q[:, None], nearest(codes, q, NEIGHBOURS)], 1)  # (q, 1 + k)
    labels = []
    if y is not None:  # each row: how many neighbours share the query's class
        same = (y[idx[:, 1:]] == y[idx[:, :1]]).sum(1)
        labels = [f"class {class_name(int(y[i]), info.class_names)}: {int(s)}/{NEIGHBOURS}" for i, s in zip(q, same)]
    title = "nearest test neighbours in code space: the query (first column), then its neighbours by distance"
    return labelled_grid(x[idx.flatten()], NEIGHBOURS + 1, labels, title, info=info)


def views_figure(x: Tensor, model: CanDisturb, info: DataInfo, rows: int = 4) -> Figure:
    """The first GRID images of x (n, C, H, W) and ``rows`` disturbed views of each, one view per row."""
    shown = [x] + [model.disturb(x) for _ in range(rows)]
    labels = ["image"] + [f"view {i + 1}" for i in range(rows)]
    what = getattr(getattr(model, "views", None), "describe", lambda: "")()
    title = "the disturbed views contrastive training compares" + (f" ({what})" if what else "")
    return labelled_grid(torch.cat(shown).float().cpu(), len(x), labels, title, info=info)


def prompt_similarity_figure(sims: Tensor, y: Tensor, class_names: tuple[str, ...]) -> Figure:
    """Cosine similarities (n, classes) of n test images (sorted by class y) to each class prompt."""
    fig = Figure(figsize=(1.2 + 0.45 * sims.shape[1], 1.2 + 0.22 * sims.shape[0]))
    ax = fig.add_subplot()
    im = ax.imshow(sims.numpy(), cmap="viridis", aspect="auto")
    names = [class_name(c, class_names) for c in range(sims.shape[1])]
    ax.set_xticks(range(len(names)), names, rotation=90 if max(map(len, names)) > 3 else 0)
    ax.set_yticks(range(len(y)), [class_name(int(c), class_names) for c in y], fontsize="small")
    ax.set_xlabel("class prompt (held-out templates)")
    ax.set_ylabel("test image of class")
    ax.set_title("image–prompt similarity: zero-shot picks the brightest cell of a row", fontsize="small")
    fig.colorbar(im, ax=ax, label="cosine similarity")
    fig.tight_layout()
    return fig


def zero_shot_figure(model: CanZeroShot, x: Tensor, y: Tensor, info: DataInfo) -> Figure:
    """The similarity to each class prompt of two test images (x (N, C, H, W) scaled, labels y (N,)) per class;
    ``model`` also embeds images (``CanEmbed``)."""
    per_class = [torch.nonzero(y == c).squeeze(1)[:2] for c in range(info.num_classes or 0)]
    idx = torch.cat(per_class)
    captions, classes = model.held_out_captions()
    prompts = class_means(captions, classes, info.num_classes or 0)
    device = model.device  # type: ignore[attr-defined]
    sims = (model.embed(x[idx].to(device)) @ prompts.T).float().cpu()  # type: ignore[attr-defined]
    return prompt_similarity_figure(sims, y[idx], info.class_names)
