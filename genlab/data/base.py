"""In-memory datamodules: every dataset is held as tensors and batched by indexing.

A dataset subclass only says how to load its tensors (``load``) and what it provides
(``info``); splitting, hold-out classes, binarisation, scaling and batching live here,
so every dataset behaves the same on the training hot path. The options every datamodule
takes are declared once, in ``genlab.config.data.DataOptions``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from torch import Tensor

from genlab.config.data import DataOptions
from genlab.draws import bernoulli16
from genlab.errors import UserError

Batch = dict[str, Tensor]


@dataclass(frozen=True)
class DataInfo:
    """What a dataset provides; models check their needs against it at start-up."""

    name: str
    shape: tuple[int, ...]  # one sample: (C, H, W) for images, (D,) for points
    num_classes: int | None = None  # None: no labels
    factor_names: tuple[str, ...] = ()  # true generating factors stored with every sample
    bounded: bool = True  # values in [0, 1] (images) rather than unbounded reals (points)
    class_names: tuple[str, ...] = ()
    domains: tuple[str, ...] = ()  # names of unpaired domains (batches x, x_b); () for one domain
    modes: tuple[tuple[float, ...], ...] | None = None  # centres of a Gaussian mixture (ring8, grid25)
    mode_std: float | None = None  # the standard deviation of each mixture component
    # captioned data (genlab.data.captioned): the attributes captions name, each (name, its values), stored as
    # the value's index in the factor of that name; the combinations kept out of training, each a tuple of
    # (attribute, value); and the chance a caption leaves out each attribute but the shape
    attributes: tuple[tuple[str, tuple[str, ...]], ...] = ()
    holdout: tuple[tuple[tuple[str, str], ...], ...] = ()
    caption_omit: float = 0.0

    @property
    def is_image(self) -> bool:
        return len(self.shape) == 3

    @property
    def dim(self) -> int:
        return math.prod(self.shape)

    @property
    def has_labels(self) -> bool:
        return self.num_classes is not None

    @property
    def has_factors(self) -> bool:
        return len(self.factor_names) > 0

    @classmethod
    def from_dict(cls, d: dict) -> DataInfo:
        """The DataInfo that ``dataclasses.asdict`` made ``d`` from (as checkpoints store it)."""
        d = dict(d)
        for key in ("shape", "factor_names", "class_names", "domains"):
            d[key] = tuple(d.get(key) or ())
        if d.get("modes") is not None:
            d["modes"] = tuple(tuple(m) for m in d["modes"])
        d["attributes"] = tuple((str(a), tuple(v)) for a, v in d.get("attributes") or ())
        d["holdout"] = tuple(tuple((str(k), str(v)) for k, v in combo) for combo in d.get("holdout") or ())
        return cls(**d)

    def describe(self) -> str:
        kind = "images " + "x".join(map(str, self.shape)) if self.is_image else f"{self.dim}-D points"
        extra = f", {self.num_classes} classes" if self.has_labels else ", no labels"
        if self.has_factors:
            extra += ", factors " + "/".join(self.factor_names)
        if self.domains:
            extra += ", unpaired domains " + " / ".join(self.domains)
        return f"{self.name}: {kind}{extra}"


@dataclass
class Split:
    """One split as tensors: x is uint8 (scaled per batch) or float; y and factors optional."""

    x: Tensor  # (N, *shape)
    y: Tensor | None = None  # (N,) int64
    factors: Tensor | None = None  # (N, F) float

    def __len__(self) -> int:
        return self.x.shape[0]

    def subset(self, idx: Tensor) -> Split:
        return Split(
            self.x[idx],
            None if self.y is None else self.y[idx],
            None if self.factors is None else self.factors[idx],
        )

    def pick(self, n: int, seed: int = 0) -> Split:
        """A fixed random subset of n samples, kept in their order: splits may be stored sorted by class."""
        idx = torch.randperm(len(self), generator=torch.Generator().manual_seed(seed))[:n]
        return self.subset(idx.sort().values)

    def without_class(self, k: int | None) -> Split:
        """The split without the samples of class k (all of it for k None or no labels)."""
        if k is None or self.y is None:
            return self
        return self.subset(torch.nonzero(self.y != k).squeeze(1))

    def as_batch(self) -> Batch:
        out = {"x": self.x}
        if self.y is not None:
            out["y"] = self.y
        if self.factors is not None:
            out["factors"] = self.factors
        return out


@dataclass
class Splits:
    train: Split
    test: Split
    val: Split | None = None  # None: carved out of train by the datamodule
    extra: dict[str, Split] = field(default_factory=dict)


def epoch_order(n: int, seed: int, epoch: int) -> Tensor:
    """The shuffled order (n,) of an epoch: a function of (seed, epoch) alone, so a run resumed at any
    epoch sees the orders the uninterrupted run saw, and shuffling never draws from the model's stream."""
    return torch.randperm(n, generator=torch.Generator().manual_seed((seed * 1_000_003 + epoch) % 2**63))


def shard(order: Tensor, rank: int, world: int) -> Tensor:
    """Process ``rank``'s part of ``order`` (n,) among ``world`` processes, as torch's DistributedSampler
    takes it: the order padded with its own start to a multiple of ``world``, then every world-th index
    from ``rank``. Shards are disjoint (but for the padding), of equal length ceil(n / world), and
    together cover the order: batch i of every rank together is batch i of a one-process run with a
    world times larger batch."""
    if world == 1:
        return order
    total = math.ceil(len(order) / world) * world
    if total > len(order):
        order = torch.cat([order, order.repeat(math.ceil(total / len(order)))[: total - len(order)]])
    return order[rank:total:world]


class TensorLoader:
    """Yields dict batches by indexing whole tensors: no per-item __getitem__ or collate.

    Shuffled orders come from ``epoch_order(n, seed, epoch)``; ``epoch`` gives the epoch being
    started (the trainer's), else the loader counts its own passes. Under data parallelism each
    process iterates its shard (``rank`` of ``world``, see ``shard``) of the same order.
    """

    def __init__(
        self, split: Split, batch_size: int, shuffle: bool, drop_last: bool = False, seed: int = 0,
        epoch: Callable[[], int] | None = None, rank: int = 0, world: int = 1,
        source: Callable[[Iterable[Tensor]], Iterator[Batch]] | None = None,
    ) -> None:
        """``source``: reads the batches of a list of index tensors from elsewhere than ``split``'s tensors
        (``genlab.data.stream``: from an array file, in worker processes); None indexes the tensors."""
        if not 0 <= rank < world:
            raise ValueError(f"rank {rank} is not one of the {world} processes")
        self.tensors = split.as_batch()
        self.n = len(split)
        self.rank, self.world = rank, world
        self.per_rank = math.ceil(self.n / world)  # samples each process iterates per epoch
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.drop_last = drop_last and self.per_rank > batch_size
        self.seed = seed
        self.epoch_of = epoch
        self.passes = 0  # passes started, the epoch when no epoch source is given
        self.epoch = 0  # the epoch of the current pass
        self.skip: dict[int, int] = {}  # epoch -> batches already trained on (a restored mid-epoch state)
        self.source = source

    def __len__(self) -> int:
        if self.drop_last:
            return self.per_rank // self.batch_size
        return math.ceil(self.per_rank / self.batch_size)

    def order(self, epoch: int) -> Tensor | None:
        """This process's sample indices (per_rank,) for ``epoch``; None for all samples in stored order."""
        if self.shuffle:
            return shard(epoch_order(self.n, self.seed, epoch), self.rank, self.world)
        if self.world > 1 or self.source is not None:
            return shard(torch.arange(self.n), self.rank, self.world)
        return None

    def __iter__(self) -> Iterator[Batch]:
        bs = self.batch_size
        self.epoch = self.epoch_of() if self.epoch_of is not None else self.passes
        self.passes += 1
        start = self.skip.pop(self.epoch, 0)
        self.skip.clear()
        order = self.order(self.epoch)
        device = next(iter(self.tensors.values())).device
        if order is not None and device.type != "cpu":  # data kept on the GPU: index it there
            order = order.to(device, non_blocking=True)
        if self.source is not None:
            yield from self.source(order[i * bs : (i + 1) * bs] for i in range(start, len(self)))
        elif order is not None:
            for i in range(start, len(self)):
                idx = order[i * bs : (i + 1) * bs]
                # index_select copies whole rows: faster than v[idx] on a CPU (docs/speed.md), the same values
                yield {k: v.index_select(0, idx) for k, v in self.tensors.items()}
        else:  # contiguous slices are views: no copy at all
            for i in range(start, len(self)):
                yield {k: v[i * bs : (i + 1) * bs] for k, v in self.tensors.items()}


class TrainLoader(TensorLoader):
    """The training loader: a stateful one for Lightning, so a checkpoint taken in the middle of an
    epoch (at a signal) resumes at the next batch of the same order. ``trained`` counts the batches
    of the current epoch that reached a training step (the datamodule counts them: Lightning fetches
    a batch ahead, so the loader's own position would be one too far)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.trained = 0

    def __iter__(self) -> Iterator[Batch]:
        epoch = self.epoch_of() if self.epoch_of is not None else self.passes
        self.trained = self.skip.get(epoch, 0)
        yield from super().__iter__()

    def count_trained(self) -> None:
        """One more batch of this pass reached a training step."""
        self.trained += 1

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "trained": self.trained}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.skip = {int(state["epoch"]): int(state["trained"])}


class TensorDataModule(pl.LightningDataModule):
    """Base datamodule. Subclasses implement ``info`` (cheap, no loading) and ``load``."""

    def __init__(self, **options: Any) -> None:
        """``options``: the fields of DataOptions (batch_size, eval_batch_size, val_fraction, seed,
        binarize, holdout_class, root, download, max_train); subclasses add their own arguments."""
        super().__init__()
        self.options = DataOptions(**options)
        self.splits: dict[str, Split] = {}
        self.splits_b: dict[str, Split] = {}  # domain B of two-domain datasets; empty otherwise
        self.train_loader: Any = None  # the loader of the current fit
        self.unbinarised: dict[str, Tensor] = {}  # evaluation splits' images before binarisation
        self.arrays: dict[str, Path] = {}  # data.in_memory=false: the array file each split is read from
        self.on_device: dict[str, Split] = {}  # splits copied to the GPU being trained on (where_trained)

    # ---- what subclasses provide -------------------------------------------------
    @property
    def info(self) -> DataInfo:
        raise NotImplementedError

    def load(self) -> Splits:
        raise NotImplementedError

    # ---- checks ------------------------------------------------------------------
    def check(self) -> None:
        """Option checks that need the dataset's info; raised before any loading."""
        if self.options.holdout_class is not None:
            info = self.info
            if not info.has_labels:
                raise UserError(f"data.holdout_class needs labelled data; '{info.name}' has no labels.")
            if not 0 <= self.options.holdout_class < (info.num_classes or 0):
                raise UserError(
                    f"data.holdout_class={self.options.holdout_class} is out of range: "
                    f"'{info.name}' has classes 0..{(info.num_classes or 1) - 1}."
                )
        if self.options.binarize and not self.info.bounded:
            raise UserError(f"data.binarize=true needs values in [0, 1]; '{self.info.name}' holds unbounded points.")

    # ---- Lightning hooks ---------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        if not self.splits:  # loaded once, reused by fit, test and evaluation
            self.check()
            self.splits = self.arrange(self.load(), self.options.seed)

    def arrange(self, s: Splits, seed: int) -> dict[str, Split]:
        """Loaded splits -> the named splits: val carved from train by seed (when not given),
        max_train, the hold-out class removed from train/val, evaluation splits binarised."""
        gen = torch.Generator().manual_seed(seed)
        train, val = s.train, s.val
        if val is None:
            perm = torch.randperm(len(train), generator=gen)
            n_val = int(round(self.options.val_fraction * len(train)))
            val, train = train.subset(perm[:n_val]), train.subset(perm[n_val:])
        if self.options.max_train is not None:
            train = train.subset(torch.arange(min(self.options.max_train, len(train))))
        # class K never seen in training: a novelty to detect
        k = self.options.holdout_class
        n = len(train) + len(val)
        train, val = train.without_class(k), val.without_class(k)
        if len(train) == 0:  # nothing to train on: Lightning would stop at once and the test fail
            why = f"data.val_fraction={self.options.val_fraction} puts {len(val)} of {n} samples in validation"
            if k is not None:
                why += f" and data.holdout_class={k} removes its class"
            raise UserError(f"Dataset '{self.info.name}' leaves no training sample: {why}. Lower data.val_fraction.")
        if len(s.test) == 0:
            raise UserError(f"Dataset '{self.info.name}' has no test sample: give it more data (data.n_samples, "
                            "or more files).")
        splits = {"train": train, "val": val, "test": s.test, **s.extra}
        if not self.options.in_memory:
            self.to_arrays(splits)
        if self.options.binarize:  # evaluation splits binarised once with a fixed seed; train per batch
            for name in splits:
                if name != "train":
                    self.unbinarised[name] = splits[name].x
                    splits[name].x = torch.bernoulli(self.scale(splits[name].x), generator=gen)
        return splits

    def to_arrays(self, splits: dict[str, Split]) -> None:
        """data.in_memory=false: every split's images as a memory-mapped array file (decoded once, reused by
        later runs); training and evaluation batches are then read from the files by worker processes."""
        from genlab.data.stream import to_array

        folder = Path(self.options.array_cache or Path(self.options.root) / "genlab_arrays").expanduser()
        for name, split in splits.items():
            split.x, self.arrays[name] = to_array(split.x, folder, self.options.num_workers)

    def as_stored(self, split: str) -> Split:
        """The split as the dataset holds it, never binarised: what samples are compared with, so
        that sample-quality figures of models trained with and without data.binarize (a VAE's
        Bernoulli likelihood, a GAN) are measured against the same real images."""
        s = self.splits[split]
        x = self.unbinarised.get(split)
        return s if x is None else Split(x, s.y, s.factors)

    def make_loader(self, split: str, batch_size: int, shuffle: bool) -> TensorLoader:
        """The batches of a named split (two-domain datasets add domain B's to each); the shuffled
        training loader is stateful and follows the trainer's epochs."""
        rank, world = self.process()
        source = self.stream(split)
        data = self.splits[split] if source is not None else self.where_trained(split)
        if not shuffle:
            return TensorLoader(data, batch_size, shuffle=False, rank=rank, world=world, source=source)
        return TrainLoader(data, batch_size, shuffle=True, seed=self.options.seed,
                           epoch=self.current_epoch, rank=rank, world=world, source=source)

    def where_trained(self, split: str) -> Split:
        """The split on the GPU the trainer trains on when it takes at most a quarter of the GPU's free
        memory (copied there once: batches are then cut on the device, with no copy from the host per
        step); else as loaded."""
        s = self.splits[split]
        device = self.trainer.strategy.root_device if self.trainer is not None else None
        if device is None or device.type != "cuda":
            return s
        if split not in self.on_device:
            size = sum(t.numel() * t.element_size() for t in s.as_batch().values())
            if size > torch.cuda.mem_get_info(device)[0] // 4:
                return s
            moved = {k: v.to(device) for k, v in s.as_batch().items()}
            self.on_device[split] = Split(moved["x"], moved.get("y"), moved.get("factors"))
        return self.on_device[split]

    def stream(self, split: str) -> Callable[[Iterable[Tensor]], Iterator[Batch]] | None:
        """Where a split's batches are read from its array file (data.in_memory=false); None: from memory.
        A split binarised for evaluation is held in memory (as floats) and read from there."""
        if split not in self.arrays or split in self.unbinarised:
            return None
        from genlab.data.stream import ArrayStream

        others = {k: v for k, v in self.splits[split].as_batch().items() if k != "x"}
        return ArrayStream(self.arrays[split], others, self.options.num_workers)

    def current_epoch(self) -> int:
        return self.trainer.current_epoch if self.trainer is not None else 0

    def process(self) -> tuple[int, int]:
        """(global rank, world size) of this process in the trainer's data parallelism; (0, 1) alone."""
        if self.trainer is None:
            return 0, 1
        return self.trainer.global_rank, self.trainer.world_size

    def train_dataloader(self) -> TensorLoader:
        self.train_loader = self.make_loader("train", self.options.batch_size, shuffle=True)
        return self.train_loader

    def val_dataloader(self) -> TensorLoader:
        return self.make_loader("val", self.options.eval_batch_size, shuffle=False)

    def test_dataloader(self) -> TensorLoader:
        return self.make_loader("test", self.options.eval_batch_size, shuffle=False)

    @staticmethod
    def scale(x: Tensor) -> Tensor:
        """uint8 pixels -> float in [0, 1]; float data passes through."""
        return x.float().div_(255.0) if x.dtype == torch.uint8 else x

    def on_after_batch_transfer(self, batch: Batch, dataloader_idx: int) -> Batch:
        # Runs on the model's device: scaling and dynamic binarisation are per batch, for the
        # images of every domain (x, and x_b of two-domain datasets).
        training = self.trainer is not None and self.trainer.training
        if training and self.train_loader is not None:
            self.train_loader.count_trained()  # this batch reaches a training step
        binarize = self.options.binarize and training
        for key in ("x", "x_b"):
            if key in batch:
                x = self.scale(batch[key])
                # a Bernoulli(p) draw in x's dtype, four to a 64-bit random word on a CPU (genlab.draws)
                batch[key] = bernoulli16(x) if binarize else x
        n_views = self.views_needed()
        if n_views > 1 and "x" in batch:  # contrastive models: disturbed views of each image, drawn here
            from genlab.data.augment import views

            batch["views"] = views(self.trainer.lightning_module.disturb, batch["x"], n_views)  # (n, B, *shape)
        return batch

    def views_needed(self) -> int:
        """How many disturbed views of each image the trained model declares it needs (``Needs.views``, with
        its ``disturb``); 1: none beyond the image."""
        model = getattr(self.trainer, "lightning_module", None)
        needs = getattr(type(model), "needs", None)
        views = getattr(needs, "views", 1)
        return views if views > 1 and callable(getattr(model, "disturb", None)) else 1

    def tensors(self, split: str) -> Split:
        """A whole split, scaled to float (for closed-form fits such as PCA and probes)."""
        s = self.splits[split]
        return Split(self.scale(s.x), s.y, s.factors)


def map_batches(
    fn: Callable[..., Tensor], x: Tensor, device: torch.device, batch_size: int, y: Tensor | None = None
) -> Tensor:
    """fn over x (N, *shape) in batches on device, inputs scaled to float; outputs (N, ...) on CPU.

    With labels y (N,), each batch's labels are passed too, as ``fn(x_batch, y=y_batch)``.
    """
    outs = []
    for i in range(0, x.shape[0], batch_size):
        xb = TensorDataModule.scale(x[i : i + batch_size].to(device))
        out = fn(xb) if y is None else fn(xb, y=y[i : i + batch_size].to(device))
        outs.append(out.float().cpu())
    return torch.cat(outs)
