"""Metrics of unpaired translation (CycleGAN) on a two-domain dataset, for any model that translates.

- cycle error: mean |x − x̂| per pixel of the cycle A -> B -> A (and B -> A -> B) on test images;
- translation accuracy: the share of test images whose translation a domain classifier (A vs B,
  trained on the two real training sets) puts in the target domain AND a content classifier
  (the dataset's classes, trained on both domains' labelled images, so it reads either domain)
  gives the source image's class; both parts are reported too, with the classifiers' own
  accuracy on real test images (their ceiling).

Both classifiers are genlab's dataset classifier (``genlab.eval.classifier``), trained once per
dataset and configuration and cached like it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor

from genlab.data.base import Split, TensorDataModule
from genlab.eval.classifier import ClassifierConfig, DatasetClassifier, checksum, train_classifier
from genlab.eval.common import map_batches

OTHER = {"a2b": "b2a", "b2a": "a2b"}


@runtime_checkable
class CanTranslate(Protocol):
    def translate(self, x: Tensor, direction: str) -> Tensor:
        """x (B, *shape) from the source domain -> its translation (B, *shape); direction "a2b" or "b2a"."""
        ...


def domain_splits(dm: TensorDataModule) -> tuple[dict[str, Split], dict[str, Split]] | None:
    """(domain A's splits, domain B's splits) of a set-up two-domain datamodule; None for other data."""
    splits_b = getattr(dm, "splits_b", None)
    if len(dm.info.domains) != 2 or not splits_b or not dm.splits:
        return None
    return dm.splits, splits_b


def _cat(a: Tensor, b: Tensor) -> Tensor:
    """Images of both domains in one tensor (uint8 kept when both are uint8, else floats in [0, 1])."""
    if a.dtype != b.dtype:
        a, b = TensorDataModule.scale(a), TensorDataModule.scale(b)
    return torch.cat([a, b])


@torch.inference_mode(False)  # weights made under inference mode could never train or load again
def cached_classifier(tag: str, x: Tensor, y: Tensor, num_classes: int, cfg: ClassifierConfig,
                      cache_dir: str | Path, device: torch.device | str = "cpu") -> DatasetClassifier:
    """A dataset classifier of images x (N, C, H, W) with labels y (N,): loaded from
    ``<cache_dir>/classifiers/<tag>-<checksum>.pt`` or trained and cached there."""
    shape = tuple(x.shape[1:])
    key = checksum(x, y, shape, num_classes, cfg)
    path = Path(cache_dir) / "classifiers" / f"{tag}-{key[:16]}.pt"
    if path.exists():
        state = torch.load(path, map_location="cpu", weights_only=True)
        if state.get("checksum") == key:
            net = DatasetClassifier(shape, num_classes, cfg.channels, cfg.hidden)  # type: ignore[arg-type]
            net.load_state_dict(state["state_dict"])
            return net.to(device).eval()
    net = train_classifier(x, y, num_classes, cfg, device)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")  # parallel jobs never read a half-written file
    torch.save({"checksum": key, "state_dict": {k: v.cpu() for k, v in net.state_dict().items()}}, tmp)
    os.replace(tmp, path)
    return net


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
