"""Metrics of captioned data (genlab/data/captioned.py), whose captions name attributes: zero-shot reading of
each attribute by a model with a text side, and retrieval where a hit has exactly the query's attributes —
on all test images, and apart on those whose attribute combination training never saw (``data.holdout``)."""

from __future__ import annotations

import torch
from torch import Tensor

from genlab.capabilities import CanEmbed, CanPromptAttributes, capable
from genlab.config.fields import require
from genlab.data.captioned import held_out_mask
from genlab.metrics.base import Context, Metric, seeded


def exact_recall(queries: Tensor, keys: Tensor, q_values: Tensor, k_values: Tensor) -> float:
    """The share of queries (N, D) whose nearest key (M, D) has exactly the query's values ((N, A), (M, A))."""
    nearest = (queries @ keys.T).argmax(1)
    return float((k_values[nearest] == q_values).all(1).float().mean())


class AttributeZeroShot(Metric):
    """test/zero_shot_acc/<attribute>: each test image's value read as its nearest prompt among the values'
    (``attribute_prompts``: held-out templates naming that value alone); test/zero_shot_acc/all: the share of
    images with every attribute read right, and /all_held_out on the images of held-out combinations alone.
    test/recall_i2t_exact_1 and test/recall_t2i_exact_1: among n test images and a held-out caption naming
    every attribute of each, the share whose nearest caption (image) has exactly the query's attributes."""

    columns = ("zero_shot_acc/all", "zero_shot_acc/all_held_out", "recall_i2t_exact_1")

    def __init__(self, n: int = 1000) -> None:
        require("callbacks.evaluator.metrics.attribute_zero_shot.n", n, "int", ge=2)
        self.n = n

    def applies(self, ctx: Context) -> bool:
        return bool(ctx.info.attributes) and capable(ctx.model, CanPromptAttributes) \
            and capable(ctx.model, CanEmbed)

    def compute(self, ctx: Context) -> dict[str, float]:
        model = ctx.model
        assert capable(model, CanPromptAttributes) and capable(model, CanEmbed)
        test = ctx.split("test")
        if test.factors is None or len(test) == 0:
            return {}
        names = [a for a, _ in ctx.info.attributes]
        values = test.factors[:, : len(names)].long()  # (N, A)
        images = ctx.map(lambda x, y=None: model.embed(x), test.x).float()  # (N, D)
        with torch.no_grad():
            prompts = {a: p.float().cpu() for a, p in model.attribute_prompts().items()}
        right = torch.stack([(images @ prompts[a].T).argmax(1) == values[:, i] for i, a in enumerate(names)], 1)
        out = {f"test/zero_shot_acc/{a}": float(right[:, i].float().mean()) for i, a in enumerate(names)}
        out["test/zero_shot_acc/all"] = float(right.all(1).float().mean())
        held = held_out_mask(test.factors, [dict(c) for c in ctx.info.holdout])
        if held.any():
            out["test/zero_shot_acc/all_held_out"] = float(right[held].all(1).float().mean())
            out["test/zero_shot_acc/all_seen"] = float(right[~held].all(1).float().mean())
        some = torch.randperm(len(test), generator=torch.Generator().manual_seed(ctx.seed))[: self.n]
        with seeded(ctx.device, ctx.seed), torch.no_grad():  # a held-out caption of each of the n images
            captions = torch.cat([model.describe(part.to(ctx.device)).float().cpu()
                                  for part in values[some].split(ctx.batch_size)])
        img, v = images[some], values[some]
        out["test/recall_i2t_exact_1"] = exact_recall(img, captions, v, v)
        out["test/recall_t2i_exact_1"] = exact_recall(captions, img, v, v)
        return out
