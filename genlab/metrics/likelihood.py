"""Likelihood: every bound or estimate of −log p(x) a model reports, by the name and unit it gives.

A VAE reports its −ELBO and IWAE bound in nats, an RBM its AIS estimate, a diffusion model its
bound in bits per dimension: the metric asks the model (``CanBoundLikelihood``) which bounds it has
and averages each over the test set, so a new family adds its own bound without an edit here.
"""

from __future__ import annotations

from typing import Annotated

from genlab.capabilities import Budget, CanBoundLikelihood, capable
from genlab.config.fields import Bounds, checked
from genlab.metrics.base import Context, Metric, seeded


class Likelihood(Metric):
    """``test/<name>`` for each of the model's likelihood bounds, the test mean of its per-sample
    values, computed within ``samples`` Monte-Carlo draws per image (``chunk`` at a time). The
    draws come from the evaluator's seed, in a forked random state: the same checkpoint always
    gets the same figures, and training's random stream is untouched."""

    @checked
    def __init__(self, samples: Annotated[int, Bounds(ge=1)] = 100, chunk: Annotated[int, Bounds(ge=1)] = 50) -> None:
        self.budget = Budget(samples=samples, chunk=chunk)

    def applies(self, ctx: Context) -> bool:
        return capable(ctx.model, CanBoundLikelihood)

    def compute(self, ctx: Context) -> dict[str, float]:
        assert capable(ctx.model, CanBoundLikelihood)
        test = ctx.split("test")
        out = {}
        with seeded(ctx.device, ctx.seed):
            for bound in ctx.model.likelihood_bounds(self.budget):
                values = ctx.map(lambda x, y=None, b=bound: b.per_sample(x, y), test.x, ctx.labels(test))  # (N_test,)
                out[f"test/{bound.name}"] = values.mean().item()
                ctx.units[f"test/{bound.name}"] = bound.unit
                for key, (value, unit) in bound.extras.items():
                    out[f"test/{key}"] = float(value)
                    ctx.units[f"test/{key}"] = unit
        return out

    def table(self, values: dict[str, float]) -> list[str]:
        return [k.removeprefix("test/") for k in values]
