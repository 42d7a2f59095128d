"""Dataset schemas. ``DataOptions`` are the options every datamodule takes — declared here once,
read by ``genlab.data.base.TensorDataModule`` — and each dataset's schema adds its own."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from omegaconf import MISSING

from genlab.config.fields import opt


@dataclass
class DataOptions:
    batch_size: int = opt(128, gt=0)
    eval_batch_size: int = opt(512, gt=0)
    val_fraction: float = opt(0.1, ge=0, lt=1)  # the datamodule checks that training samples are left
    seed: int = opt(0, ge=0, lt=2**32)
    binarize: bool = False
    holdout_class: Optional[int] = opt(None, ge=0)
    root: str = "data"
    download: bool = False
    max_train: Optional[int] = opt(None, gt=0)
    # false: images decoded once into memory-mapped uint8 arrays in array_cache, batches read from them by
    # num_workers DataLoader processes (data larger than memory); true: tensors in memory, batched by indexing
    in_memory: bool = True
    num_workers: int = opt(2, ge=0)
    array_cache: Optional[str] = None  # None: <data.root>/genlab_arrays


@dataclass
class DataConfig(DataOptions):
    _target_: str = MISSING


@dataclass
class DigitsDataConfig(DataConfig):
    image_size: int = opt(8, ge=4)


@dataclass
class ShapesDataConfig(DataConfig):
    image_size: int = opt(32, ge=16)
    n_samples: int = opt(20000, gt=0)
    shapes: list[str] = opt(["square", "ellipse", "heart"])
    fixed: dict[str, float] = field(default_factory=dict)  # factor name -> the value every image gets


@dataclass
class Toy2dDataConfig(DataConfig):
    kind: str = opt("ring8", choices=("line", "swiss_roll", "moons", "ring8", "grid25"))
    n_samples: int = opt(10000, gt=0)
    noise: float = opt(0.05, ge=0)


@dataclass
class VisionDataConfig(DataConfig):
    image_size: Optional[int] = opt(None, ge=4)  # resize; None keeps the native size


@dataclass
class CelebADataConfig(VisionDataConfig):
    image_size: Optional[int] = opt(64, ge=4)
    attribute: Optional[str] = None  # one of the 40 attributes as a binary label; None: unlabelled


@dataclass
class ImageFolderDataConfig(VisionDataConfig):
    path: str = MISSING
    channels: int = opt(3, choices=(1, 3))


# two unpaired domains (genlab/data/unpaired.py)
@dataclass
class DigitsInvertedDataConfig(DataConfig):
    image_size: int = opt(16, ge=4)


@dataclass
class MNISTColourDataConfig(VisionDataConfig):
    colour: list[float] = opt([1.0, 0.55, 0.1], ge=0, le=1)  # domain B: x·colour + (1 − x)·background
    background: list[float] = opt([0.05, 0.1, 0.35], ge=0, le=1)


@dataclass
class ShapesColourDataConfig(ShapesDataConfig):
    n_samples: int = opt(10000, gt=0)  # split between the two domains
    colour_a: list[float] = opt([1.0, 0.25, 0.2], ge=0, le=1)
    colour_b: list[float] = opt([0.2, 0.8, 1.0], ge=0, le=1)


@dataclass
class UnpairedFolderDataConfig(DataConfig):
    path: str = MISSING  # with trainA/, trainB/, testA/, testB/
    channels: int = opt(3, choices=(1, 3))
    image_size: int = opt(64, ge=4)


SCHEMAS = {"data": {
    "base": DataConfig, "digits": DigitsDataConfig, "shapes": ShapesDataConfig, "toy2d": Toy2dDataConfig,
    "vision": VisionDataConfig, "celeba": CelebADataConfig, "image_folder": ImageFolderDataConfig,
    "digits_inverted": DigitsInvertedDataConfig, "mnist_colour": MNISTColourDataConfig,
    "shapes_colour": ShapesColourDataConfig, "unpaired_folder": UnpairedFolderDataConfig,
}}
