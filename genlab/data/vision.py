"""torchvision-backed image datasets, read once into in-memory uint8 tensors (N, C, H, W) (or, with
data.in_memory=false, into memory-mapped arrays: genlab.data.stream).

Files are checked before torchvision is called, and anything torchvision raises while reading
or downloading becomes a ``MissingDataError`` that names the dataset, the files it expected,
the absolute folder it looked in and the override that fetches them. MNIST-like IDX files are
checked against their headers and each other (sizes, counts, labels), and image files against PIL's
limit on pixels (decompression bombs): a bad file is a UserError that names it.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
import torchvision.datasets as tvd
from torch import Tensor

from genlab.data.base import DataInfo, Split, Splits, TensorDataModule
from genlab.data.builtin import resize_images, split_by_fraction
from genlab.data.decode import IMAGE_READ_ERRORS, image_problem, open_image, read_images
from genlab.data.stream import FileImages
from genlab.errors import MissingDataError, UserError, WriteFailed
from genlab.files import load_checked, save_checked

log = logging.getLogger(__name__)
T = TypeVar("T")

DIGIT_NAMES = tuple(str(i) for i in range(10))
CELEBA_ATTRIBUTES = (
    "5_o_Clock_Shadow Arched_Eyebrows Attractive Bags_Under_Eyes Bald Bangs Big_Lips Big_Nose Black_Hair "
    "Blond_Hair Blurry Brown_Hair Bushy_Eyebrows Chubby Double_Chin Eyeglasses Goatee Gray_Hair Heavy_Makeup "
    "High_Cheekbones Male Mouth_Slightly_Open Mustache Narrow_Eyes No_Beard Oval_Face Pale_Skin Pointy_Nose "
    "Receding_Hairline Rosy_Cheeks Sideburns Smiling Straight_Hair Wavy_Hair Wearing_Earrings Wearing_Hat "
    "Wearing_Lipstick Wearing_Necklace Wearing_Necktie Young"
).split()


IDX_MAGIC = {"images": 0x0803, "labels": 0x0801}  # unsigned bytes, 3 dims / 1 dim (big-endian header)


def idx_dims(path: Path, kind: str) -> tuple[int, ...]:
    """The dimensions an IDX file of ``kind`` ("images" or "labels") announces, after checking that its
    header says unsigned bytes with the right number of dimensions and that the file holds exactly the
    bytes the header announces. A MissingDataError naming the file otherwise (the file is there but
    unusable: the fix is the same, a good copy)."""
    data_len = path.stat().st_size
    with path.open("rb") as f:
        head = f.read(4)
        ndim = IDX_MAGIC[kind] & 0xFF
        if len(head) < 4 or int.from_bytes(head, "big") != IDX_MAGIC[kind]:
            raise MissingDataError(f"{path} is not an IDX file of {kind} (its first bytes are "
                                   f"{head.hex() or 'missing'}, not {IDX_MAGIC[kind]:08x}): the file is damaged "
                                   "or of another kind.")
        raw = f.read(4 * ndim)
    if len(raw) < 4 * ndim:
        raise MissingDataError(f"{path} is truncated: it ends inside its header ({data_len} bytes).")
    dims = tuple(int.from_bytes(raw[4 * i : 4 * i + 4], "big") for i in range(ndim))
    expected = 4 + 4 * ndim + math.prod(dims)
    if data_len != expected:
        state = "truncated" if data_len < expected else "damaged"
        raise MissingDataError(f"{path} holds {data_len} bytes, but its header announces {'x'.join(map(str, dims))} "
                               f"values ({expected} bytes): the file is {state}.")
    return dims


def check_idx_pair(images: Path, labels: Path, shape: tuple[int, int], num_classes: int) -> None:
    """An IDX image file and its label file as MNIST-like datasets have them: images of ``shape``, as many
    labels as images, each label one of the classes. MissingDataError naming the file otherwise."""
    n, *size = idx_dims(images, "images")
    (m,) = idx_dims(labels, "labels")
    if tuple(size) != shape:
        raise MissingDataError(f"{images} holds {size[0]}x{size[1]} images; this dataset's images are "
                               f"{shape[0]}x{shape[1]}.")
    if n != m:
        raise MissingDataError(f"{labels} holds {m} labels but {images.name} holds {n} images: the two files "
                               "must come from the same release.")
    values = np.fromfile(labels, dtype=np.uint8, offset=8)
    if values.size and int(values.max()) >= num_classes:
        raise MissingDataError(f"{labels} holds the label {int(values.max())}; this dataset's labels are "
                               f"0..{num_classes - 1}.")


class VisionDataModule(TensorDataModule):
    """Base for torchvision datasets: subclasses say where the files live and how to read a split."""

    name = ""
    native_shape: tuple[int, int, int] = (1, 28, 28)
    class_names: tuple[str, ...] = ()
    hint = ""  # an extra sentence for the missing-files message

    def __init__(
        self, image_size: int | None = None,
        **options: Any,
    ) -> None:
        super().__init__(**options)
        self.image_size = image_size

    @property
    def info(self) -> DataInfo:
        c, h, w = self.native_shape
        if self.image_size is not None:
            h = w = self.image_size
        return DataInfo(self.name, (c, h, w), len(self.class_names) or None, class_names=self.class_names)

    # ---- what subclasses provide ----------------------------------------------------
    def folder(self) -> Path:
        """The absolute folder torchvision reads the files from."""
        return Path(self.options.root).expanduser().resolve()

    def expected_files(self) -> list[str]:
        raise NotImplementedError

    def read(self, train: bool) -> Split:
        """One split straight from the torchvision dataset's arrays (no per-item access)."""
        raise NotImplementedError

    # ---- shared loading -------------------------------------------------------------
    def missing(self, problem: str) -> MissingDataError:
        """The error for absent or unreadable files: what, where, and the override that fixes it."""
        sub = self.folder().relative_to(Path(self.options.root).expanduser().resolve())
        where = f" (data.root is the folder that holds {sub}/)" if str(sub) != "." else ""
        fix = ("Without internet, copy them there by hand" if self.options.download
               else "Add data.download=true to fetch them")
        fix += f", or set data.root to where they are{where}."
        return MissingDataError(
            f"Dataset '{self.name}': {problem}. It expects {', '.join(self.expected_files())} "
            f"in {self.folder()}. {fix} {self.hint}".strip()
        )

    def failed(self, e: Exception) -> MissingDataError:
        what = "downloading or reading" if self.options.download else "reading"
        detail = " ".join(f"{type(e).__name__}: {e}".split()).rstrip(":")
        return self.missing(f"torchvision failed {what} the files ({detail})")

    def check_files(self) -> None:
        if self.options.download:  # torchvision fetches what is missing; its errors are wrapped by guarded()
            return
        expected = self.expected_files()
        absent = [f for f in expected if not (self.folder() / f).exists()]
        if absent:
            raise self.missing("no data files found" if absent == expected else f"{', '.join(absent)} not found")

    def guarded(self, read: Callable[[], T]) -> T:
        """Check the files, then read(); whatever torchvision raises becomes a MissingDataError."""
        self.check_files()
        try:
            return read()
        except UserError:
            raise
        except Exception as e:  # corrupt files, a failed download: never a torchvision traceback
            raise self.failed(e) from None

    def load(self) -> Splits:
        train, test = self.guarded(lambda: (self.read(True), self.read(False)))
        if self.image_size is not None:
            train.x, test.x = resize_images(train.x, self.image_size), resize_images(test.x, self.image_size)
        return Splits(train=train, test=test)


class MNISTDataModule(VisionDataModule):
    """MNIST handwritten digits, 28x28 greyscale, 10 classes."""

    name, tv_class, class_names = "mnist", tvd.MNIST, DIGIT_NAMES
    hint = "data.root is the folder that holds MNIST/raw/ (the files as torchvision writes them)."

    def folder(self) -> Path:
        return super().folder() / self.tv_class.__name__ / "raw"

    def expected_files(self) -> list[str]:
        return [os.path.splitext(os.path.basename(url))[0] for url, _ in self.tv_class.resources]

    def read(self, train: bool) -> Split:
        checked = self.check_idx(train)  # before torchvision reads them, when they are there already
        ds = self.tv_class(self.options.root, train=train, download=self.options.download)
        if not checked:  # fetched just now
            self.check_idx(train)
        return Split(ds.data.unsqueeze(1), ds.targets.long())  # (N, 28, 28) uint8 -> (N, 1, 28, 28)

    def check_idx(self, train: bool) -> bool:
        """The split's two IDX files agree with each other and with the dataset (28x28 images, as many
        labels as images, labels 0..9); False when they are not there yet. MissingDataError naming a bad file."""
        prefix = "train" if train else "t10k"
        images, labels = (self.folder() / f"{prefix}-{kind}" for kind in ("images-idx3-ubyte", "labels-idx1-ubyte"))
        if not (images.is_file() and labels.is_file()):
            return False
        check_idx_pair(images, labels, self.native_shape[1:], len(self.class_names))
        return True


class FashionMNISTDataModule(MNISTDataModule):
    """Zalando's Fashion-MNIST clothing images, 28x28 greyscale, 10 classes."""

    name, tv_class, class_names, hint = "fashion_mnist", tvd.FashionMNIST, tuple(tvd.FashionMNIST.classes), ""


class KMNISTDataModule(MNISTDataModule):
    """Kuzushiji-MNIST cursive Japanese characters, 28x28 greyscale, 10 classes."""

    name, tv_class, class_names, hint = "kmnist", tvd.KMNIST, tuple(tvd.KMNIST.classes), ""


class CIFAR10DataModule(VisionDataModule):
    """CIFAR-10 natural images, 32x32 colour, 10 classes."""

    name, native_shape = "cifar10", (3, 32, 32)
    class_names = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")

    def folder(self) -> Path:
        return super().folder() / tvd.CIFAR10.base_folder

    def expected_files(self) -> list[str]:
        return [f for f, _ in tvd.CIFAR10.train_list + tvd.CIFAR10.test_list] + [tvd.CIFAR10.meta["filename"]]

    def read(self, train: bool) -> Split:
        ds = tvd.CIFAR10(self.options.root, train=train, download=self.options.download)
        x = torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous()  # NHWC numpy -> (N, 3, 32, 32)
        return Split(x, torch.tensor(ds.targets, dtype=torch.long))


class SVHNDataModule(VisionDataModule):
    """Street View House Numbers, 32x32 colour digits, 10 classes (the 'extra' set is not used)."""

    name, native_shape, class_names = "svhn", (3, 32, 32), DIGIT_NAMES

    def expected_files(self) -> list[str]:
        return [tvd.SVHN.split_list[s][1] for s in ("train", "test")]

    def read(self, train: bool) -> Split:
        ds = tvd.SVHN(self.options.root, split="train" if train else "test", download=self.options.download)
        return Split(torch.from_numpy(ds.data), torch.from_numpy(ds.labels).long())  # data already NCHW


class CelebADataModule(VisionDataModule):
    """CelebA faces: central square crops resized to image_size (64 when None), official splits.

    Labels are one binary ``attribute`` (e.g. "Smiling") or none. Decoding 200k JPEGs takes
    minutes, so the tensors of all three splits are cached once as a .pt file under root.
    """

    name, native_shape = "celeba", (3, 64, 64)

    def __init__(
        self, attribute: str | None = None, image_size: int | None = 64,
        **options: Any,
    ) -> None:
        super().__init__(image_size=image_size or 64, **options)
        if attribute is not None and attribute not in CELEBA_ATTRIBUTES:
            raise UserError(f"data.attribute={attribute!r} is not a CelebA attribute: one of {CELEBA_ATTRIBUTES}.")
        self.attribute = attribute
        self.class_names = (f"not {attribute}", attribute) if attribute else ()

    def folder(self) -> Path:
        return super().folder() / tvd.CelebA.base_folder

    def expected_files(self) -> list[str]:  # the extracted images; the zip itself may be gone
        return ["img_align_celeba", *(f for _, _, f in tvd.CelebA.file_list if not f.endswith(".zip"))]

    def cache_file(self) -> Path:
        return self.folder() / f"genlab_{self.image_size}px.pt"

    def load(self) -> Splits:
        if not self.options.in_memory:  # each split decoded once into its own array file (genlab.data.stream)
            return self.file_splits()
        cache = self.cache_file()
        data = load_checked(cache)  # None: absent, or damaged, swapped or older than its digest
        if data is None:
            if cache.is_file():
                log.warning("The CelebA tensor cache %s does not hold what genlab wrote there: decoding the "
                            "images again", cache)
            data = self.guarded(lambda: {s: self.read_split(s) for s in ("train", "valid", "test")})
            try:  # the root may be read-only: then the next run decodes again
                save_checked(cache, data)
            except (OSError, WriteFailed) as e:  # a full disk too: the run goes on without the cache
                log.warning("Could not cache CelebA tensors at %s: %s", cache, e)
        col = CELEBA_ATTRIBUTES.index(self.attribute) if self.attribute else None
        s = {k: Split(v["x"], None if col is None else v["attr"][:, col].long()) for k, v in data.items()}
        return Splits(train=s["train"], val=s["valid"], test=s["test"])

    def file_splits(self) -> Splits:
        """The official splits as FileImages (decoded only into their array files) and their labels."""
        size = (3, self.image_size, self.image_size)
        col = CELEBA_ATTRIBUTES.index(self.attribute) if self.attribute else None

        def split(name: str) -> Split:
            ds = tvd.CelebA(self.options.root, split=name, target_type="attr", download=self.options.download)
            files = tuple(str(self.folder() / "img_align_celeba" / f) for f in ds.filename)
            return Split(FileImages(files, size, square_crop=True),  # type: ignore[arg-type]
                         None if col is None else ds.attr[:, col].long())

        train, val, test = self.guarded(lambda: [split(s) for s in ("train", "valid", "test")])
        return Splits(train=train, val=val, test=test)

    def read_split(self, split: str) -> dict[str, Tensor]:
        """Decode one official split: x uint8 (N, 3, S, S) and the 40 attributes (N, 40) in {0, 1}."""
        ds = tvd.CelebA(self.options.root, split=split, target_type="attr", download=self.options.download)
        files = [str(self.folder() / "img_align_celeba" / f) for f in ds.filename]
        size = (self.image_size, self.image_size)
        return {"x": read_images(files, 3, size, square_crop=True), "attr": ds.attr.to(torch.uint8)}


class ImageFolderDataModule(TensorDataModule):
    """The user's own images under ``path``, resized to image_size and converted to ``channels``.

    Class subfolders give the labels (as in torchvision's ImageFolder); without them the images
    are unlabelled. ``path/train`` and ``path/test`` give a fixed split, otherwise 20% of the
    images, chosen by seed, are the test set.
    """

    def __init__(
        self, path: str, channels: int = 3, image_size: int | None = None,
        **options: Any,
    ) -> None:
        super().__init__(**options)
        self.path = Path(path).expanduser().resolve()
        self.channels = channels
        self.image_size = image_size
        self.cached_info: DataInfo | None = None

    def folders(self) -> tuple[Path, Path | None]:
        """(train folder, test folder or None when the split is drawn by seed)."""
        if not self.path.is_dir():
            raise MissingDataError(
                f"Dataset 'image_folder': there is no folder {self.path}. Set data.path to a folder of images "
                f"(one subfolder per class for labels; train/ and test/ subfolders for a fixed split)."
            )
        train, test = self.path / "train", self.path / "test"
        if train.is_dir() != test.is_dir():  # half a fixed split: the other half would be read as a class
            there, absent = ("train", "test") if train.is_dir() else ("test", "train")
            raise MissingDataError(
                f"Dataset 'image_folder': {self.path} has {there}/ but no {absent}/. Give both for a fixed split "
                f"(data.path=<folder with train/ and test/>), or neither: then 20% of the images, by seed, are tested."
            )
        return (train, test) if train.is_dir() else (self.path, None)

    def scan(self, folder: Path, classes: tuple[str, ...]) -> tuple[list[str], Tensor | None]:
        """Image files under folder, with their class indices when there are class subfolders."""
        if classes:
            index = {c: i for i, c in enumerate(classes)}
            samples = tvd.ImageFolder.make_dataset(str(folder), index, extensions=tvd.folder.IMG_EXTENSIONS,
                                                   allow_empty=True)
            return [p for p, _ in samples], torch.tensor([c for _, c in samples], dtype=torch.long)
        files = sorted(str(p) for p in folder.iterdir()
                       if p.is_file() and tvd.folder.has_file_allowed_extension(p.name, tvd.folder.IMG_EXTENSIONS))
        return files, None

    @property
    def info(self) -> DataInfo:
        if self.cached_info is None:  # lists folders (and reads one image header when image_size is None)
            train, _ = self.folders()
            classes = tuple(sorted(d.name for d in train.iterdir() if d.is_dir() and not d.name.startswith(".")))
            h = w = self.image_size
            if h is None:
                files, _ = self.scan(train, classes)
                if not files:
                    raise self.no_images(train)
                try:
                    with open_image(files[0]) as im:
                        w, h = im.size
                except IMAGE_READ_ERRORS as e:
                    raise UserError(f"Could not read the image {files[0]}: {image_problem(e)}") from None
            self.cached_info = DataInfo("image_folder", (self.channels, h, w), len(classes) or None,
                                        class_names=classes)
        return self.cached_info

    def no_images(self, folder: Path) -> MissingDataError:
        exts = " ".join(tvd.folder.IMG_EXTENSIONS)
        return MissingDataError(f"Dataset 'image_folder': no images ({exts}) found in {folder}.")

    def read(self, folder: Path) -> Split:
        c, h, w = self.info.shape
        files, y = self.scan(folder, self.info.class_names)
        if not files:
            raise self.no_images(folder)
        if not self.options.in_memory:  # decoded once into an array file, after the splits are drawn
            return Split(FileImages(tuple(files), (c, h, w)), y)  # type: ignore[arg-type]
        return Split(read_images(files, c, (h, w)), y)

    def load(self) -> Splits:
        train, test = self.folders()
        if test is None:
            return split_by_fraction(self.read(train), 0.2, self.options.seed)
        return Splits(train=self.read(train), test=self.read(test))
