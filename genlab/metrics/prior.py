"""Metrics of DALLE-2's priors (genlab/models/prior.py): how close the image embedding a prior predicts for a
caption is to the embedding of the image the caption describes, in the frozen CLIP's space — against the
caption's text embedding used directly, as the decoder of today's caption_ddpm uses it."""

from __future__ import annotations

from typing import Annotated

import torch
import torch.nn.functional as F
from torch import Tensor

from genlab.capabilities import CanPredictImageEmbedding, capable
from genlab.config.fields import Bounds, checked
from genlab.data.captioned import held_out_mask
from genlab.metrics.attributes import exact_recall
from genlab.metrics.base import Context, Metric, seeded


def mean_cosine(a: Tensor, b: Tensor) -> float:
    """The mean cosine of the rows of a and b (N, D)."""
    return float(F.cosine_similarity(a, b, dim=1).mean())


class PriorSimilarity(Metric):
    """On n test images and a held-out caption of each naming every attribute (CLIP's ``describe``):
    test/prior_cosine, the mean cosine of the predicted image embedding to the image's true CLIP embedding,
    and test/text_cosine, the same for the caption's text embedding itself (the baseline a prior must beat;
    CLIP's two sides meet at a cosine well below 1). test/prior_recall_exact_1 (text_recall_exact_1): the share
    of captions whose predicted (text) embedding's nearest test image has exactly the caption's attributes. /seen
    and /held_out: apart on images of attribute combinations training saw and of those it never saw
    (``data.holdout``). A guided prior also reports test/prior_cosine/scale_<s> and prior_recall_exact_1/scale_<s>
    at each of its ``guidance_scales``."""

    columns = ("prior_cosine", "text_cosine", "prior_recall_exact_1")

    @checked
    def __init__(self, n: Annotated[int, Bounds(ge=2)] = 1000) -> None:
        self.n = n

    def applies(self, ctx: Context) -> bool:
        return bool(ctx.info.attributes) and capable(ctx.model, CanPredictImageEmbedding)

    def compute(self, ctx: Context) -> dict[str, float]:
        model = ctx.model
        assert capable(model, CanPredictImageEmbedding)
        clip = model.frozen_clip()
        test = ctx.split("test")
        if test.factors is None or len(test) < 2:
            return {}
        some = torch.randperm(len(test), generator=torch.Generator().manual_seed(ctx.seed))[: self.n]
        factors = test.factors[some]
        values = factors[:, : len(ctx.info.attributes)].long()  # (n, A)
        images = ctx.map(lambda x, y=None: clip.embed(x), test.x[some]).float()  # (n, D) the true embeddings
        with seeded(ctx.device, ctx.seed), torch.no_grad():
            texts = torch.cat([clip.describe(v.to(ctx.device)).float().cpu() for v in values.split(ctx.batch_size)])
        held = held_out_mask(factors, [dict(c) for c in ctx.info.holdout])

        def predicted(scale: float | None) -> Tensor:
            with seeded(ctx.device, ctx.seed), torch.no_grad():
                return torch.cat([model.image_embeddings(t.to(ctx.device), scale, ctx.sample_steps).float().cpu()
                                  for t in texts.split(ctx.batch_size)])

        def scores(pred: Tensor, name: str, suffix: str = "") -> dict[str, float]:
            out = {f"test/{name}_cosine{suffix}": mean_cosine(pred, images),
                   f"test/{name}_recall_exact_1{suffix}": exact_recall(pred, images, values, values)}
            if not suffix and held.any() and (~held).any():
                for part, mask in (("seen", ~held), ("held_out", held)):
                    out[f"test/{name}_cosine/{part}"] = mean_cosine(pred[mask], images[mask])
            return out

        out = {**scores(texts, "text"), **scores(predicted(None), "prior")}
        for s in model.guidance_scales():
            out.update(scores(predicted(float(s)), "prior", f"/scale_{s:g}"))
        return out
