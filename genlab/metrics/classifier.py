"""A small CNN that knows a labelled image dataset: it scores conditional samples by class
(``test/sample_class_acc``) and its penultimate activations serve as a feature network.

Every classifier genlab trains (this one, and the domain and content classifiers of the
translation metrics) goes through ``cached_classifier``: trained once per dataset and
configuration, deterministically from its seed, and cached under
``<cache_dir>/classifiers/<tag>-<checksum>.pt``; the checksum covers the training tensors' bytes,
the image shape and the training config, so other data retrains it. The file is written to a
temporary name and renamed into place, so a run never reads a file another run is still
writing. Nothing is ever downloaded.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from genlab.data.base import TensorDataModule, map_batches
from genlab.errors import UserError
from genlab.files import load_checked, save_checked

FORMAT_VERSION = 1  # bump when the architecture or the file layout changes: old caches retrain


@dataclass(frozen=True)
class ClassifierConfig:
    """Architecture and training of the classifier; all of it enters the cache checksum."""

    channels: tuple[int, int] = (16, 32)  # the two conv blocks
    hidden: int = 128  # penultimate width = feature size
    epochs: int = 3
    min_steps: int = 500  # at least this many updates, so that small datasets (digits) are learnt too
    batch_size: int = 64
    lr: float = 3e-3  # peak of the one-cycle schedule
    binarize_prob: float = 0.5  # share of training batches Bernoulli-sampled: robust to binary inputs
    seed: int = 0


class DatasetClassifier(nn.Module):
    """Two conv blocks (3x3 conv, ReLU, 2x2 max-pool), a ReLU layer of ``hidden`` units, logits.

    No dropout and no batch norm, so ``features`` is a deterministic function of x in any mode.
    """

    def __init__(self, shape: tuple[int, int, int], num_classes: int, channels: tuple[int, int] = (16, 32),
                 hidden: int = 128) -> None:
        super().__init__()
        c, h, w = shape
        c1, c2 = channels
        self.shape, self.num_classes = tuple(shape), num_classes
        self.conv = nn.Sequential(
            nn.Conv2d(c, c1, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # (B, c1, H/2, W/2)
            nn.Conv2d(c1, c2, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # (B, c2, H/4, W/4)
        )
        self.fc = nn.Sequential(nn.Flatten(), nn.Linear(c2 * (h // 2 // 2) * (w // 2 // 2), hidden), nn.ReLU())
        self.head = nn.Linear(hidden, num_classes)

    def features(self, x: Tensor) -> Tensor:
        """x (B, C, H, W) in [0, 1] -> penultimate activations (B, hidden)."""
        return self.fc(self.conv(x))

    def forward(self, x: Tensor) -> Tensor:
        """x (B, C, H, W) in [0, 1] -> logits (B, num_classes)."""
        return self.head(self.features(x))


@torch.inference_mode(False)  # callable from a test loop, which runs under inference mode
@torch.enable_grad()
def train_classifier(x: Tensor, y: Tensor, num_classes: int, cfg: ClassifierConfig,
                     device: torch.device | str = "cpu") -> DatasetClassifier:
    """Train on x (N, C, H, W), uint8 or floats in [0, 1], with labels y (N,); on the CPU the same
    seed gives the same net (cuDNN kernels may differ in the last bits).

    ``epochs`` passes (at least ``min_steps`` updates) of Adam with a one-cycle learning rate;
    each batch is replaced by a Bernoulli sample of itself with probability ``binarize_prob``, so
    grey, binarised and sampled images all classify well.
    """
    x = TensorDataModule.scale(x)
    with torch.random.fork_rng(devices=[]):  # initial weights from the seed, global stream untouched
        torch.manual_seed(cfg.seed)
        net = DatasetClassifier(tuple(x.shape[1:]), num_classes, cfg.channels, cfg.hidden).to(device)
    g = torch.Generator().manual_seed(cfg.seed)  # batch order and binarisation
    steps_per_epoch = math.ceil(len(x) / cfg.batch_size)
    total_steps = max(cfg.epochs * steps_per_epoch, cfg.min_steps)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=total_steps)
    net.train()
    for step in range(total_steps):
        i = step % steps_per_epoch
        if i == 0:  # a new pass in a new order
            order = torch.randperm(len(x), generator=g)
        idx = order[i * cfg.batch_size : (i + 1) * cfg.batch_size]
        xb = x[idx]
        if torch.rand((), generator=g) < cfg.binarize_prob:
            xb = torch.bernoulli(xb, generator=g)
        loss = F.cross_entropy(net(xb.to(device)), y[idx].to(device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    return net.eval()


def checksum(x: Tensor, y: Tensor, shape: tuple[int, ...], num_classes: int, cfg: ClassifierConfig) -> str:
    """sha256 over the stored training tensors (x, y bytes and dtypes), the shape and the config."""
    h = hashlib.sha256()
    meta = {"version": FORMAT_VERSION, "shape": list(shape), "num_classes": num_classes,
            "x": [str(x.dtype), list(x.shape)], "y": [str(y.dtype), list(y.shape)], "config": dataclasses.asdict(cfg)}
    h.update(json.dumps(meta, sort_keys=True).encode())
    for t in (x, y):  # the raw buffers, without a copy when already contiguous on the CPU
        h.update(memoryview(t.detach().cpu().contiguous().numpy()).cast("B"))
    return h.hexdigest()


@torch.inference_mode(False)  # weights made under inference mode could never train or load again
def cached_classifier(tag: str, x: Tensor, y: Tensor, num_classes: int, cfg: ClassifierConfig,
                      cache_dir: str | Path, device: torch.device | str = "cpu") -> DatasetClassifier:
    """A classifier of images x (N, C, H, W) with labels y (N,): loaded from
    ``<cache_dir>/classifiers/<tag>-<checksum>.pt``, or trained and cached there. A cache file that
    cannot be read (another version, a damaged file) is trained again and replaced."""
    shape = tuple(x.shape[1:])
    key = checksum(x, y, shape, num_classes, cfg)
    path = Path(cache_dir) / "classifiers" / f"{tag}-{key[:16]}.pt"
    net = DatasetClassifier(shape, num_classes, cfg.channels, cfg.hidden)  # type: ignore[arg-type]
    state = load_checked(path)  # None: absent, damaged, swapped or of another version
    if isinstance(state, dict) and state.get("checksum") == key:  # the prefix matched; the full key must too
        try:
            net.load_state_dict(state["state_dict"])
            return net.to(device).eval()
        except (KeyError, RuntimeError, TypeError):  # weights of another network: train it again
            net = DatasetClassifier(shape, num_classes, cfg.channels, cfg.hidden)  # type: ignore[arg-type]
    net = train_classifier(x, y, num_classes, cfg, device)
    state = {"checksum": key, "state_dict": {k: v.cpu() for k, v in net.state_dict().items()}}
    # written whole, with its content's digest: two runs may write it at once
    save_checked(path, state, "callbacks.evaluator.classifier_cache")
    return net


def dataset_classifier(dm: TensorDataModule, cache_dir: str | Path, epochs: int = 3,
                       device: torch.device | str = "cpu", seed: int = 0, min_steps: int = 500) -> DatasetClassifier:
    """The classifier of dm's training split (dm set up), from the cache or trained and cached.

    Raises UserError for data that is not labelled images (2-D points have no image classifier).
    """
    info = dm.info
    if not (info.is_image and info.has_labels):
        raise UserError(f"The dataset classifier needs labelled images, but the data is {info.describe()}.")
    if not dm.splits:
        raise ValueError("dataset_classifier needs a set-up datamodule: call dm.setup() first.")
    train = dm.splits["train"]
    assert train.y is not None and info.num_classes is not None
    cfg = ClassifierConfig(epochs=epochs, min_steps=min_steps, seed=seed)
    return cached_classifier(info.name, train.x, train.y, info.num_classes, cfg, cache_dir, device)


def attribute_classifiers(dm: TensorDataModule, cache_dir: str | Path, epochs: int = 3,
                          device: torch.device | str = "cpu", seed: int = 0) -> dict[str, DatasetClassifier]:
    """For captioned data (``DataInfo.attributes``, the first factors), one classifier per attribute, trained on
    the true values of the generator's reference draw (every combination, the held-out ones too:
    ``CaptionedShapesDataModule.reference_split``) and cached as the dataset classifier is; colour images are
    not binarised."""
    from genlab.data.captioned import CaptionedShapesDataModule

    info = dm.info
    if not (info.is_image and info.attributes and isinstance(dm, CaptionedShapesDataModule)):
        raise UserError(f"The attribute classifiers need captioned images, but the data is {info.describe()}.")
    train = dm.reference_split()
    assert train.factors is not None
    cfg = ClassifierConfig(epochs=epochs, seed=seed, binarize_prob=0.0)
    return {name: cached_classifier(f"{info.name}-{name}", train.x, train.factors[:, i].long().contiguous(),
                                    len(values), cfg, cache_dir, device)
            for i, (name, values) in enumerate(info.attributes)}


@torch.no_grad()
def accuracy(net: DatasetClassifier, x: Tensor, y: Tensor, batch_size: int = 512) -> float:
    """Share of x (N, C, H, W), uint8 or float in [0, 1], that net assigns to its label y (N,)."""
    device = next(net.parameters()).device
    pred = map_batches(lambda xb: net(xb).argmax(1), x, device, batch_size)  # (N,)
    return (pred == y.cpu()).float().mean().item()
