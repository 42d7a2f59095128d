"""Two unpaired image domains for translation models (CycleGAN): batches carry domain A as
``x`` (``y``) and domain B as ``x_b`` (``y_b``), each in its own random order.

Single-domain models see ``x`` (and ``y``) only, so they train on domain A as on any dataset;
``DataInfo.domains`` names the two domains, so a model that needs both can check for them.
Built-in pairs use disjoint random halves of one dataset for the two domains, so no image of
A has its counterpart in B: the data are truly unpaired.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from genlab.data.base import Batch, DataInfo, Split, Splits, TensorDataModule, TensorLoader, TrainLoader, epoch_order
from genlab.data.builtin import SALT, SHAPES, DigitsDataModule, ShapesDataModule, render_sprites
from genlab.errors import MissingDataError, UserError

DIGIT_NAMES = tuple(str(i) for i in range(10))
FOLDER_LAYOUT = ("trainA", "trainB", "testA", "testB")  # the layout of CycleGAN's own datasets


def halves(split: Split, seed: int) -> tuple[Split, Split]:
    """Two disjoint random halves of a split, drawn from the seed (a stream of their own)."""
    perm = torch.randperm(len(split), generator=torch.Generator().manual_seed(seed + SALT + 1))
    n = len(split) // 2
    return split.subset(perm[:n]), split.subset(perm[n:])


def colourise(x: Tensor, colour: Sequence[float], background: Sequence[float] = (0.0, 0.0, 0.0)) -> Tensor:
    """Greyscale uint8 (N, 1, H, W) -> colour uint8 (N, 3, H, W): x·colour + (1 − x)·background."""
    a = x.float().div(255.0)  # (N, 1, H, W) in [0, 1]
    fg = torch.tensor(colour, dtype=torch.float32).view(1, 3, 1, 1)
    bg = torch.tensor(background, dtype=torch.float32).view(1, 3, 1, 1)
    return (a * fg + (1 - a) * bg).mul_(255.0).round_().clamp_(0, 255).to(torch.uint8)


def _colour(name: str, value: Sequence[float]) -> tuple[float, float, float]:
    if len(value) != 3 or not all(0.0 <= float(c) <= 1.0 for c in value):
        raise UserError(f"data.{name}={list(value)} is invalid: give three values in [0, 1] (red, green, blue).")
    return tuple(float(c) for c in value)  # type: ignore[return-value]


class UnpairedLoader:
    """Batches of domain A as a ``TensorLoader`` yields them, each joined by as many domain-B
    samples (keys ``x_b``, ``y_b``, ...) taken from B's own order.

    B's order is an endless stream of permutations of B, the j-th drawn from (seed + 1, j), read on
    across batches and epochs: epoch e of A takes the stream from position e·(A's samples per epoch),
    so the domains may differ in size, the pairing of A and B images changes from epoch to epoch,
    and every position is a function of (seed, epoch, batch) — a resumed run pairs as the
    uninterrupted one did. Without shuffling B is read in order, wrapping around, from position 0.
    Under data parallelism A is sharded (``rank`` of ``world``) and each step of the ``world`` processes
    reads world x batch positions of B's stream, process ``rank`` the rank-th run of them.
    """

    def __init__(self, a: Split, b: Split, batch_size: int, shuffle: bool, seed: int = 0,
                 epoch: Callable[[], int] | None = None, rank: int = 0, world: int = 1) -> None:
        loader = TrainLoader if shuffle else TensorLoader
        # A batched as single-domain data
        self.a = loader(a, batch_size, shuffle, seed=seed, epoch=epoch, rank=rank, world=world)
        self.rank, self.world = rank, world
        self.b = {f"{k}_b": v for k, v in b.as_batch().items()}
        self.nb = len(b)
        self.shuffle = shuffle
        self.seed = seed
        self.per_epoch = min(len(self.a) * batch_size * world, len(a))  # A's samples per epoch, all processes

    def __len__(self) -> int:
        return len(self.a)

    def b_indices(self, start: int, n: int) -> Tensor:
        """Positions start .. start + n − 1 of B's stream, as indices into B (n,)."""
        first, last = start // self.nb, (start + n - 1) // self.nb
        if self.shuffle:
            stream = torch.cat([epoch_order(self.nb, self.seed + 1, j) for j in range(first, last + 1)])
        else:
            stream = torch.arange(self.nb).repeat(last - first + 1)
        return stream[start - first * self.nb : start - first * self.nb + n]

    def __iter__(self) -> Iterator[Batch]:
        position = None
        for batch in self.a:
            if position is None:  # the first batch of this pass, after any batches skipped on a resume
                done = self.a.trained if isinstance(self.a, TrainLoader) else 0
                position = (self.a.epoch * self.per_epoch if self.shuffle else 0) \
                    + done * self.a.batch_size * self.world
            n = batch["x"].shape[0]
            idx = self.b_indices(position + self.rank * n, n)
            position += n * self.world
            batch.update({k: v[idx] for k, v in self.b.items()})
            yield batch

    # a stateful training loader, as TrainLoader (see there)
    def count_trained(self) -> None:
        if isinstance(self.a, TrainLoader):
            self.a.count_trained()

    def state_dict(self) -> dict[str, int]:
        return self.a.state_dict() if isinstance(self.a, TrainLoader) else {}

    def load_state_dict(self, state: dict[str, int]) -> None:
        if isinstance(self.a, TrainLoader):
            self.a.load_state_dict(state)


class UnpairedDataModule(TensorDataModule):
    """Base of two-domain datasets. ``splits`` hold domain A (what every model and metric reads),
    ``splits_b`` domain B, each arranged by the base class (val carved from train by its own seed).

    Subclasses implement ``info`` (with ``domains``) and ``load_domains``; the keyword arguments
    are TensorDataModule's (batch_size, seed, binarize, ...).
    """

    def load_domains(self) -> tuple[Splits, Splits]:
        """(domain A, domain B) as loaded; both with the same sample shape."""
        raise NotImplementedError

    def setup(self, stage: str | None = None) -> None:
        if not self.splits:
            self.check()
            a, b = self.load_domains()
            self.splits_b = self.arrange(b, self.options.seed + 1)
            self.splits = self.arrange(a, self.options.seed)

    def make_loader(self, split: str, batch_size: int, shuffle: bool) -> UnpairedLoader:  # type: ignore[override]
        rank, world = self.process()
        return UnpairedLoader(self.splits[split], self.splits_b[split], batch_size, shuffle, self.options.seed,
                              epoch=self.current_epoch if shuffle else None, rank=rank, world=world)


class DigitsInvertedDataModule(UnpairedDataModule):
    """scikit-learn's digits (A) and the same kind of digits inverted, 1 − x (B); the domains are
    disjoint random halves of each of the 80/20 train/test splits. Labels: the digit."""

    def __init__(self, image_size: int = 16, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.image_size = image_size

    @property
    def info(self) -> DataInfo:
        s = self.image_size
        return DataInfo("digits_inverted", (1, s, s), 10, class_names=DIGIT_NAMES, domains=("digits", "inverted"))

    def load_domains(self) -> tuple[Splits, Splits]:
        digits = DigitsDataModule(image_size=self.image_size, seed=self.options.seed).load()  # floats in [0, 1]
        seed = self.options.seed
        (train_a, train_b), (test_a, test_b) = halves(digits.train, seed), halves(digits.test, seed)
        for b in (train_b, test_b):
            b.x = 1.0 - b.x
        return Splits(train=train_a, test=test_a), Splits(train=train_b, test=test_b)


class MNISTColourDataModule(UnpairedDataModule):
    """MNIST as white-on-black colour images (A) and recoloured, x·colour + (1 − x)·background (B),
    3 channels, from disjoint halves of the train and test sets (needs the MNIST files)."""

    def __init__(self, image_size: int | None = None, colour: Sequence[float] = (1.0, 0.55, 0.1),
                 background: Sequence[float] = (0.05, 0.1, 0.35), **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.image_size = image_size
        self.colour, self.background = _colour("colour", colour), _colour("background", background)

    @property
    def info(self) -> DataInfo:
        s = self.image_size or 28
        return DataInfo("mnist_colour", (3, s, s), 10, class_names=DIGIT_NAMES, domains=("mnist", "recoloured"))

    def load_domains(self) -> tuple[Splits, Splits]:
        from genlab.data.vision import MNISTDataModule

        opts = self.options
        mnist = MNISTDataModule(image_size=self.image_size, root=opts.root, download=opts.download).load()
        out: dict[str, tuple[Split, Split]] = {}
        for name, split in (("train", mnist.train), ("test", mnist.test)):
            a, b = halves(split, self.options.seed)
            a.x, b.x = colourise(a.x, (1.0, 1.0, 1.0)), colourise(b.x, self.colour, self.background)
            out[name] = (a, b)
        return (Splits(train=out["train"][0], test=out["test"][0]),
                Splits(train=out["train"][1], test=out["test"][1]))


class ShapesColourDataModule(UnpairedDataModule):
    """Rendered sprites (square, ellipse, heart) in ``colour_a`` (A) and in ``colour_b`` (B) on black,
    3 channels; each domain renders its own random factors. Labels: the shape; factors are kept (``fixed``: as
    ShapesDataModule's, the factors held for every image)."""

    def __init__(self, image_size: int = 32, n_samples: int = 10000, shapes: Sequence[str] = SHAPES,
                 colour_a: Sequence[float] = (1.0, 0.25, 0.2), colour_b: Sequence[float] = (0.2, 0.8, 1.0),
                 fixed: Mapping[str, float] | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.sprites = ShapesDataModule(image_size=image_size, n_samples=n_samples, shapes=shapes, fixed=fixed,
                                        seed=self.options.seed)
        self.colour_a, self.colour_b = _colour("colour_a", colour_a), _colour("colour_b", colour_b)

    @property
    def info(self) -> DataInfo:
        s = self.sprites
        return DataInfo("shapes_colour", (3, s.image_size, s.image_size), len(s.shapes), s.info.factor_names,
                        class_names=s.shapes, domains=("colour_a", "colour_b"))

    def load_domains(self) -> tuple[Splits, Splits]:
        s = self.sprites
        factors = s.sample_factors()  # i.i.d. draws: halves of them are independent sprite sets
        data = Split(render_sprites(factors, s.shapes, s.image_size), factors[:, 0].long(), factors[:, list(s.varying)])
        domains = []
        for part, colour in zip(halves(data, self.options.seed), (self.colour_a, self.colour_b)):
            part.x = colourise(part.x, colour)
            n_train = int(round(0.85 * len(part)))
            idx = torch.arange(len(part))
            domains.append(Splits(train=part.subset(idx[:n_train]), test=part.subset(idx[n_train:])))
        return domains[0], domains[1]


class UnpairedFolderDataModule(UnpairedDataModule):
    """The user's unpaired images in CycleGAN's layout: ``path/trainA``, ``trainB``, ``testA``,
    ``testB``, resized to image_size and converted to ``channels``. No labels."""

    def __init__(self, path: str, channels: int = 3, image_size: int = 64, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.path = Path(path).expanduser().resolve()
        self.channels = channels
        self.image_size = image_size

    @property
    def info(self) -> DataInfo:
        s = self.image_size
        return DataInfo("unpaired_folder", (self.channels, s, s), None, domains=("A", "B"))

    def files(self, sub: str) -> list[str]:
        """The image files directly under path/sub, sorted."""
        from torchvision.datasets.folder import IMG_EXTENSIONS, has_file_allowed_extension

        return sorted(str(p) for p in (self.path / sub).iterdir()
                      if p.is_file() and has_file_allowed_extension(p.name, IMG_EXTENSIONS))

    def load_domains(self) -> tuple[Splits, Splits]:
        from genlab.data.decode import read_images

        layout = "/, ".join(FOLDER_LAYOUT) + "/"
        if not self.path.is_dir():
            raise MissingDataError(f"Dataset 'unpaired_folder': there is no folder {self.path}. "
                                   f"Set data.path to a folder with the subfolders {layout}")
        missing = [d for d in FOLDER_LAYOUT if not (self.path / d).is_dir()]
        empty = [d for d in FOLDER_LAYOUT if d not in missing and not self.files(d)]
        if missing or empty:
            problem = (f"lacks the subfolders {', '.join(missing)}" if missing else "") + (
                "; " if missing and empty else "") + (f"has no images in {', '.join(empty)}" if empty else "")
            raise MissingDataError(f"Dataset 'unpaired_folder': {self.path} {problem}. It expects {layout} "
                                   "(the images of domains A and B, unpaired, as in CycleGAN's datasets).")
        size = (self.image_size, self.image_size)
        x = {d: read_images(self.files(d), self.channels, size) for d in FOLDER_LAYOUT}
        return (Splits(train=Split(x["trainA"]), test=Split(x["testA"])),
                Splits(train=Split(x["trainB"]), test=Split(x["testB"])))
