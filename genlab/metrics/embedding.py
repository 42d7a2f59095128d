"""Metrics of contrastive embeddings: alignment and uniformity (Wang & Isola 2020) for every model that
embeds (``CanEmbed``), and zero-shot classification and retrieval for models with a text side
(``CanZeroShot``). Pure functions on unit vectors first, then the metric objects.

Shapes: N samples, D the embedding's size; every embedding is a unit vector.
"""

from __future__ import annotations

import math
from typing import Annotated

import torch
import torch.nn.functional as F
from torch import Tensor

from genlab.capabilities import CanEmbed, CanZeroShot, capable
from genlab.config.fields import Bounds, checked
from genlab.errors import ArgumentError
from genlab.metrics.base import Context, Metric, seeded


def alignment(a: Tensor, b: Tensor, alpha: float = 2.0) -> float:
    """E‖f(x) − f(x⁺)‖^α over positive pairs a, b (N, D): 0 when every pair coincides; lower is better."""
    return float((a - b).norm(dim=1).pow(alpha).mean())


def uniformity(e: Tensor, t: float = 2.0) -> float:
    """log E_{i≠j} exp(−t‖eᵢ − eⱼ‖²) over embeddings e (N, D): lower is more uniform on the sphere (its
    least is about −4 in many dimensions at t = 2; a collapsed embedding scores 0)."""
    sq = torch.pdist(e.double()).pow(2)  # (N(N−1)/2,) distinct pairs
    return float(torch.logsumexp(-t * sq, 0) - math.log(sq.numel()))


def recall_at_k(queries: Tensor, keys: Tensor, q_class: Tensor, k_class: Tensor, k: int) -> float:
    """Share of queries (N, D) whose k most similar keys (M, D) include one of the query's class."""
    top = (queries @ keys.T).topk(min(k, keys.shape[0]), dim=1).indices  # (N, k)
    return float((k_class[top] == q_class[:, None]).any(1).float().mean())


def class_means(e: Tensor, classes: Tensor, n_classes: int) -> Tensor:
    """(n_classes, D) unit vectors: the normalised mean of the embeddings e (M, D) of each class (M,) — a
    class's zero-shot prompt from its captions."""
    sums = torch.zeros(n_classes, e.shape[1], device=e.device, dtype=e.dtype).index_add_(0, classes, e)
    return F.normalize(sums, dim=1)


def zero_shot_accuracy(images: Tensor, prompts: Tensor, y: Tensor) -> float:
    """Share of images (N, D) whose most similar class prompt (classes, D) is their class y (N,)."""
    return float(((images @ prompts.T).argmax(1) == y).float().mean())


class Embedding(Metric):
    """test/alignment of positive pairs (two views of a test image, or a test image and a held-out caption
    of it) and test/uniformity of the test embeddings, on up to ``n`` test samples."""

    columns = ("alignment", "uniformity")

    @checked
    def __init__(self, n: Annotated[int, Bounds(ge=2)] = 2000) -> None:
        self.n = n

    def applies(self, ctx: Context) -> bool:
        return capable(ctx.model, CanEmbed)

    def compute(self, ctx: Context) -> dict[str, float]:
        model = ctx.model
        assert capable(model, CanEmbed)
        test = ctx.split("test").pick(self.n, ctx.seed)
        with seeded(ctx.device, ctx.seed):  # the views and captions drawn are fixed by the seed
            e = ctx.map(lambda x, y=None: model.embed(x), test.x)
            pairs = ctx.map(lambda x, y=None: torch.cat(model.positive_pairs(x, y), 1), test.x, test.y)
        a, b = pairs.split(e.shape[1], dim=1)
        return {"test/alignment": alignment(a, b), "test/uniformity": uniformity(e)}


class ZeroShot(Metric):
    """test/zero_shot_acc: test images classified by the nearest class prompt (the normalised mean of the
    class's held-out captions); retrieval: test/recall_i2t_<k>, the share of n test images whose k nearest
    held-out captions (each distinct caption once) include one of the image's class, and test/recall_t2i_<k>,
    the share of n captions (one per image) whose k nearest of the n images include one of its class.
    Captions made from labels say the class and nothing else, so a retrieved item counts when its class is
    the query's."""

    columns = ("zero_shot_acc", "recall_i2t_1", "recall_t2i_1")

    @checked
    def __init__(self, n: Annotated[int, Bounds(ge=2)] = 1000, ks: tuple[int, ...] = (1, 5)) -> None:
        if not all(isinstance(k, int) and not isinstance(k, bool) and k >= 1 for k in ks):
            raise ArgumentError(type(self).__name__, "ks", lambda key: f"{key}={list(ks)}: give whole numbers >= 1")
        self.n, self.ks = n, tuple(ks)

    def applies(self, ctx: Context) -> bool:
        return capable(ctx.model, CanZeroShot) and capable(ctx.model, CanEmbed) and ctx.info.has_labels

    def compute(self, ctx: Context) -> dict[str, float]:
        model = ctx.model
        assert capable(model, CanZeroShot) and capable(model, CanEmbed)
        test = ctx.split("test", seen_classes=True)
        if test.y is None or len(test) == 0:
            return {}
        images = ctx.map(lambda x, y=None: model.embed(x), test.x)  # (N, D)
        captions, classes = (t.float().cpu() if t.is_floating_point() else t.cpu() for t in model.held_out_captions())
        prompts = class_means(captions, classes, ctx.info.num_classes or 0)
        out = {"test/zero_shot_acc": zero_shot_accuracy(images, prompts, test.y)}
        some = torch.randperm(len(test), generator=torch.Generator().manual_seed(ctx.seed))[: self.n]
        img, y = images[some], test.y[some]
        with seeded(ctx.device, ctx.seed):  # one held-out caption for each of the n images
            written = torch.cat([model.caption_embeddings(part.to(ctx.device)).float().cpu()
                                 for part in y.split(ctx.batch_size)])
        for k in self.ks:
            out[f"test/recall_i2t_{k}"] = recall_at_k(img, captions, y, classes, k)
            out[f"test/recall_t2i_{k}"] = recall_at_k(written, img, y, y, k)
        return out
