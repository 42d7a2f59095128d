"""Metrics of unpaired translation (CycleGAN) on a two-domain dataset, for any model that translates.

- cycle error: mean |x − x̂| per pixel of the cycle A -> B -> A (and B -> A -> B) on test images;
- translation accuracy: the share of test images whose translation a domain classifier (A vs B,
  trained on the two real training sets) puts in the target domain AND a content classifier
  (the dataset's classes, trained on both domains' labelled images, so it reads either domain)
  gives the source image's class; both parts are reported too, with the classifiers' own
  accuracy on real test images (their ceiling).

Both classifiers are genlab's dataset classifier (``genlab.metrics.classifier``), trained once per
dataset and configuration and cached like it. Pure functions first, then the ``Translation``
metric object.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from genlab.capabilities import CanTranslate, capable
from genlab.data.base import Split, TensorDataModule, map_batches
from genlab.metrics.base import Context, Metric
from genlab.metrics.classifier import ClassifierConfig, DatasetClassifier, cached_classifier

OTHER = {"a2b": "b2a", "b2a": "a2b"}


def domain_splits(dm: TensorDataModule) -> tuple[dict[str, Split], dict[str, Split]] | None:
    """(domain A's splits, domain B's splits) of a set-up two-domain datamodule; None for other data."""
    if len(dm.info.domains) != 2 or not dm.splits_b or not dm.splits:
        return None
    return dm.splits, dm.splits_b


def _cat(a: Tensor, b: Tensor) -> Tensor:
    """Images of both domains in one tensor (uint8 kept when both are uint8, else floats in [0, 1])."""
    if a.dtype != b.dtype:
        a, b = TensorDataModule.scale(a), TensorDataModule.scale(b)
    return torch.cat([a, b])


@dataclass
class TranslationClassifiers:
    domain: DatasetClassifier  # logits (B, 2): domain A (0) or B (1)
    content: DatasetClassifier | None  # logits (B, num_classes); None for unlabelled domains


def translation_classifiers(dm: TensorDataModule, cache_dir: str | Path, epochs: int = 3, seed: int = 0,
                            min_steps: int = 500, device: torch.device | str = "cpu") -> TranslationClassifiers:
    """The domain classifier (train A vs train B) and, when both domains are labelled, the content
    classifier (train A ∪ train B with their classes) of a set-up two-domain datamodule."""
    both = domain_splits(dm)
    if both is None:
        raise ValueError("translation_classifiers needs a set-up two-domain datamodule")
    a, b = both[0]["train"], both[1]["train"]
    cfg = ClassifierConfig(epochs=epochs, min_steps=min_steps, seed=seed, binarize_prob=0.0)  # grey-level images
    x = _cat(a.x, b.x)
    side = torch.cat([torch.zeros(len(a), dtype=torch.long), torch.ones(len(b), dtype=torch.long)])
    name = dm.info.name
    domain = cached_classifier(f"{name}-domains", x, side, 2, cfg, cache_dir, device)
    content = None
    if a.y is not None and b.y is not None and dm.info.num_classes:
        content = cached_classifier(f"{name}-content", x, torch.cat([a.y, b.y]), dm.info.num_classes, cfg,
                                    cache_dir, device)
    return TranslationClassifiers(domain, content)


def _predict(net: DatasetClassifier, x: Tensor, batch_size: int) -> Tensor:
    device = next(net.parameters()).device
    return map_batches(lambda xb: net(xb).argmax(1), x, device, batch_size).long()  # (N,)


@torch.no_grad()
def translation_metrics(model: CanTranslate, dm: TensorDataModule, classifiers: TranslationClassifiers | None,
                        device: torch.device, batch_size: int = 512) -> dict[str, float]:
    """Cycle errors and (with classifiers) translation accuracies on the test images of both domains."""
    both = domain_splits(dm)
    if both is None:
        return {}
    tests = {"a2b": both[0]["test"], "b2a": both[1]["test"]}
    out: dict[str, float] = {}
    for direction, src in tests.items():
        fake = map_batches(lambda x, d=direction: model.translate(x, d), src.x, device, batch_size)  # (N, *shape)
        back = map_batches(lambda x, d=OTHER[direction]: model.translate(x, d), fake, device, batch_size)
        out[f"test/cycle_error_{direction[0]}"] = (TensorDataModule.scale(src.x) - back).abs().mean().item()
        if classifiers is None:
            continue
        target = 1 if direction == "a2b" else 0
        in_domain = _predict(classifiers.domain, fake, batch_size) == target
        out[f"test/translation_domain_acc_{direction}"] = in_domain.float().mean().item()
        if classifiers.content is not None and src.y is not None:
            kept = _predict(classifiers.content, fake, batch_size) == src.y
            out[f"test/translation_content_acc_{direction}"] = kept.float().mean().item()
            out[f"test/translation_acc_{direction}"] = (in_domain & kept).float().mean().item()
    if classifiers is not None:  # the ceilings: the classifiers on real test images of both domains
        a, b = tests["a2b"], tests["b2a"]
        x, side = _cat(a.x, b.x), torch.cat([torch.zeros(len(a)), torch.ones(len(b))]).long()
        out["test/domain_classifier_acc"] = (_predict(classifiers.domain, x, batch_size) == side).float().mean().item()
        if classifiers.content is not None and a.y is not None and b.y is not None:
            right = _predict(classifiers.content, x, batch_size) == torch.cat([a.y, b.y])
            out["test/content_classifier_acc"] = right.float().mean().item()
    return out


class Translation(Metric):
    """For a model that translates, on a two-domain dataset: cycle errors and, with a classifier
    cache, the translation accuracies A -> B and B -> A beside the classifiers' own accuracy."""

    columns = ("translation_acc_a2b", "translation_acc_b2a", "cycle_error_a", "cycle_error_b")

    def applies(self, ctx: Context) -> bool:
        return capable(ctx.model, CanTranslate) and domain_splits(ctx.dm) is not None

    def compute(self, ctx: Context) -> dict[str, float]:
        assert capable(ctx.model, CanTranslate)
        cache = ctx.classifier_cache  # None: cycle errors only, no classifier-judged accuracies
        clf = None if cache is None else translation_classifiers(ctx.dm, cache, ctx.classifier_epochs,
                                                                 device=ctx.device)
        return translation_metrics(ctx.model, ctx.dm, clf, ctx.device, ctx.batch_size)
