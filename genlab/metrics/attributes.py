"""Metrics of captioned data (genlab/data/captioned.py), whose captions name attributes: zero-shot reading of
each attribute by a model with a text side, retrieval where a hit has exactly the query's attributes, and for
samplers from text, whether a sample has the attributes its caption names — on all test images, and apart on
those whose attribute combination training never saw (``data.holdout``)."""

from __future__ import annotations

from typing import Annotated

import torch
from torch import Tensor

from genlab.capabilities import CanEmbed, CanPromptAttributes, CanSampleFromText, capable
from genlab.config.fields import Bounds, checked
from genlab.data.captioned import TEST_TEMPLATES, Captioner, held_out_mask
from genlab.metrics.base import Context, Metric, seeded
from genlab.metrics.classifier import accuracy


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

    @checked
    def __init__(self, n: Annotated[int, Bounds(ge=2)] = 1000) -> None:
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


class AttributeFidelity(Metric):
    """For samplers from text on captioned images: each of n test images' attributes named by a held-out caption
    (every attribute, CLIP never trained on the sentence), one sample per caption, and each attribute read back
    by a classifier trained on the data's true values (``Context.attribute_classifiers``, cached).
    test/attribute_fidelity/<attribute>: the share of samples the classifier reads as the caption says;
    /all: every attribute right; /all_seen and /all_held_out: for captions of combinations training saw and
    never saw. test/attribute_classifier_acc/<attribute>: each classifier on the real test images (the ceiling).
    test/caption_diversity: the mean distance between ``per_caption`` samples of one caption in the features of
    the dataset classifier, over that between random real test images (0: one image per caption)."""

    columns = ("attribute_fidelity/all", "attribute_fidelity/all_held_out", "caption_diversity")

    @checked
    def __init__(self, n: Annotated[int, Bounds(ge=1)] = 500, per_caption: Annotated[int, Bounds(ge=2)] = 4,
                 diverse_captions: Annotated[int, Bounds(ge=1)] = 25) -> None:
        self.n, self.per_caption, self.diverse_captions = n, per_caption, diverse_captions

    def applies(self, ctx: Context) -> bool:
        return bool(ctx.info.attributes) and capable(ctx.model, CanSampleFromText) \
            and ctx.attribute_classifiers() is not None

    def compute(self, ctx: Context) -> dict[str, float]:
        model = ctx.model
        assert capable(model, CanSampleFromText)
        classifiers = ctx.attribute_classifiers()
        test = ctx.split("test")
        if classifiers is None or test.factors is None or len(test) == 0:
            return {}
        names = [a for a, _ in ctx.info.attributes]
        some = torch.randperm(len(test), generator=torch.Generator().manual_seed(ctx.seed))[: self.n]
        factors = test.factors[some]
        values = factors[:, : len(names)].long()  # (n, A)
        with seeded(ctx.device, ctx.seed), torch.no_grad():
            texts = Captioner(TEST_TEMPLATES, 0.0).draw(values).texts  # every attribute named
            step = max(1, ctx.batch_size)
            x = torch.cat([model.sample_texts(texts[i:i + step], 1, ctx.sample_steps).float().cpu()
                           for i in range(0, len(texts), step)])  # (n, *shape)
        out: dict[str, float] = {}
        right = []
        for i, a in enumerate(names):
            clf = classifiers[a]
            pred = ctx.map(lambda xb, y=None, clf=clf: clf(xb.to(next(clf.parameters()).device)).argmax(1), x)  # (n,)
            right.append(pred == values[:, i])
            out[f"test/attribute_fidelity/{a}"] = float(right[-1].float().mean())
            out[f"test/attribute_classifier_acc/{a}"] = accuracy(clf, test.x, test.factors[:, i].long(),
                                                                   ctx.batch_size)
        every = torch.stack(right, 1).all(1)
        out["test/attribute_fidelity/all"] = float(every.float().mean())
        held = held_out_mask(factors, [dict(c) for c in ctx.info.holdout])
        if held.any():
            out["test/attribute_fidelity/all_held_out"] = float(every[held].float().mean())
        if (~held).any():
            out["test/attribute_fidelity/all_seen"] = float(every[~held].float().mean())
        diversity = self.diversity(ctx, texts[: self.diverse_captions], test.x)
        if diversity is not None:
            out["test/caption_diversity"] = diversity
        return out

    def diversity(self, ctx: Context, texts: list[str], real: Tensor) -> float | None:
        """Mean feature distance among per_caption samples of each text, over that among random real images."""
        clf = ctx.classifier()
        if clf is None or not texts:
            return None
        device = next(clf.parameters()).device
        with seeded(ctx.device, ctx.seed + 1), torch.no_grad():
            x = ctx.model.sample_texts(texts, self.per_caption, ctx.sample_steps).float().cpu()
        f = ctx.map(lambda xb, y=None: clf.features(xb.to(device)), x).view(len(texts), self.per_caption, -1)
        within = torch.cdist(f, f).sum((1, 2)) / (self.per_caption * (self.per_caption - 1))  # (k,) mean off-diagonal
        pick = torch.randperm(len(real), generator=torch.Generator().manual_seed(ctx.seed))[: 2 * len(texts)]
        r = ctx.map(lambda xb, y=None: clf.features(xb.to(device)), real[pick])
        half = len(r) // 2
        if half == 0:
            return None
        between = (r[:half] - r[half:2 * half]).norm(dim=1).mean()
        return float(within.mean() / between.clamp_min(1e-12))
