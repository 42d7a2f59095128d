"""Datamodules: shapes and info, seeded splits, hold-out and binarisation, batching, the
generating factors of the synthetic sets, real file formats, missing-file messages, and
that every conf/data/*.yaml composes and instantiates."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import hydra
import numpy as np
import pytest
import torch
from conftest import write_idx
from hydra.utils import instantiate
from PIL import Image

from genlab.config import setup_hydra
from genlab.data.base import DataInfo, Split, TensorDataModule, TensorLoader
from genlab.data.builtin import (
    LINE_DIRECTION,
    SHAPES,
    DigitsDataModule,
    ShapesDataModule,
    Toy2dDataModule,
    render_sprites,
)
from genlab.data.vision import (
    CELEBA_ATTRIBUTES,
    CelebADataModule,
    CIFAR10DataModule,
    FashionMNISTDataModule,
    ImageFolderDataModule,
    KMNISTDataModule,
    MNISTDataModule,
    read_images,
)
from genlab.errors import MissingDataError, UserError
from genlab.files import save_checked

PROJECT = Path(__file__).resolve().parents[1]
CONF = PROJECT / "conf"
SHARED_MNIST = PROJECT.parent / "shared" / "data" / "mnist10k"

# tiny instances of every built-in dataset: (factory, expected name, x dtype, total size)
BUILTINS = {
    "digits": (lambda **kw: DigitsDataModule(**kw), "digits", torch.float32, 1797),
    "shapes": (lambda **kw: ShapesDataModule(image_size=16, n_samples=200, **kw), "shapes", torch.uint8, 200),
    **{
        f"toy2d-{k}": (lambda k=k, **kw: Toy2dDataModule(kind=k, n_samples=200, **kw), "toy2d", torch.float32, 200)
        for k in ("line", "swiss_roll", "moons", "ring8", "grid25")
    },
}


def ready(dm: TensorDataModule) -> TensorDataModule:
    dm.setup()
    return dm


@pytest.mark.parametrize("key", BUILTINS)
def test_builtin_shapes_dtypes_and_info(key: str) -> None:
    make, name, dtype, total = BUILTINS[key]
    dm = ready(make(val_fraction=0.25))
    info = dm.info
    assert isinstance(info, DataInfo) and info.name == name
    assert sum(len(s) for s in dm.splits.values()) == total
    n_train_val = len(dm.splits["train"]) + len(dm.splits["val"])
    assert len(dm.splits["val"]) == round(0.25 * n_train_val)
    for s in dm.splits.values():
        assert tuple(s.x.shape[1:]) == info.shape and s.x.dtype == dtype
        assert (s.y is not None) == info.has_labels
        if s.y is not None:
            assert s.y.dtype == torch.int64 and 0 <= s.y.min() and s.y.max() < info.num_classes
        assert (s.factors is not None) == info.has_factors
        if s.factors is not None:
            assert s.factors.shape == (len(s), len(info.factor_names))
    assert info.bounded == (name != "toy2d")


def test_digits_scaled_and_resized() -> None:
    dm = ready(DigitsDataModule(image_size=16))
    x = dm.splits["test"].x
    assert x.shape[1:] == (1, 16, 16) and x.min() >= 0 and x.max() <= 1 and x.max() > 0.9
    assert len(dm.splits["test"]) == round(0.2 * 1797)


@pytest.mark.parametrize("key", ["digits", "shapes", "toy2d-ring8"])
def test_splits_are_fixed_by_seed(key: str) -> None:
    make = BUILTINS[key][0]
    a, b, c = ready(make(seed=1)), ready(make(seed=1)), ready(make(seed=2))
    for split in ("train", "val", "test"):
        assert torch.equal(a.splits[split].x, b.splits[split].x)
        assert not torch.equal(a.splits[split].x[:20], c.splits[split].x[:20])


def test_holdout_class_leaves_test_untouched() -> None:
    dm = ready(DigitsDataModule(holdout_class=3))
    assert (dm.splits["train"].y != 3).all() and (dm.splits["val"].y != 3).all()
    assert (dm.splits["test"].y == 3).any()
    with pytest.raises(UserError, match="out of range"):
        ready(DigitsDataModule(holdout_class=10))


def test_binarize_fixed_on_eval_splits_and_per_batch_on_train() -> None:
    dm = ready(ShapesDataModule(image_size=16, n_samples=100, binarize=True))
    assert set(dm.splits["test"].x.unique().tolist()) <= {0.0, 1.0}
    dm = ready(DigitsDataModule(binarize=True))
    assert set(dm.splits["test"].x.unique().tolist()) <= {0.0, 1.0}
    batch = next(iter(dm.train_dataloader()))
    assert ((batch["x"] > 0) & (batch["x"] < 1)).any()  # train keeps grey levels until the batch
    dm.trainer = SimpleNamespace(training=True)
    out = dm.on_after_batch_transfer(batch, 0)["x"]
    assert set(out.unique().tolist()) <= {0.0, 1.0}
    with pytest.raises(UserError, match="binarize"):
        ready(Toy2dDataModule(binarize=True, n_samples=50))


def test_training_binarisation_draws_four_pixels_from_each_random_word() -> None:
    """The per-batch binarisation (genlab.draws.bernoulli16) written out by hand: pixel i is 1 when the i-th
    16-bit lane k of the generator's 64-bit words satisfies (k + 2^15 + 1/2) / 2^16 < p."""
    dm = ready(DigitsDataModule(binarize=True, batch_size=64))
    batch = next(iter(dm.train_dataloader()))
    dm.trainer = SimpleNamespace(training=True)
    p = dm.scale(batch["x"].clone())
    assert p.numel() >= 4096  # the 16-bit path (smaller tensors take U < p)
    torch.manual_seed(11)
    out = dm.on_after_batch_transfer({"x": batch["x"].clone()}, 0)["x"]
    torch.manual_seed(11)
    words = torch.empty((p.numel() + 3) // 4, dtype=torch.int64).random_(-(2**63), 2**63 - 1)
    lanes = [(int(w) >> (16 * j)) & 0xFFFF for w in words.tolist() for j in range(4)]  # little-endian lanes
    u = (torch.tensor(lanes[: p.numel()], dtype=torch.float64).view(p.shape) + 0.5) / 65536  # lane + 2^15, as unsigned
    u = (u + 0.5) % 1.0  # the signed lane k is the unsigned one less 2^15
    assert out.dtype == p.dtype and torch.equal(out, (u < p.double()).to(p.dtype))


def test_shuffled_loader_covers_every_index_once() -> None:
    loader = TensorLoader(Split(torch.arange(103)), batch_size=10, shuffle=True, seed=0)
    assert len(loader) == 11
    epochs = [torch.cat([b["x"] for b in loader]) for _ in range(2)]
    for order in epochs:
        assert torch.equal(order.sort().values, torch.arange(103))
    assert not torch.equal(epochs[0], epochs[1])


def test_shapes_factors_match_the_rendering() -> None:
    size = 32
    dm = ready(ShapesDataModule(image_size=size, n_samples=300))
    s = dm.splits["train"]
    x, f = s.x[:, 0].float() / 255, s.factors
    assert torch.equal(s.y, f[:, 0].long())
    assert x[:, 0].sum() == 0 and x[:, -1].sum() == 0 and x[:, :, 0].sum() == 0 and x[:, :, -1].sum() == 0
    centres = (torch.arange(size) + 0.5) / size
    mass = x.sum((1, 2))
    cx = (x * centres).sum((1, 2)) / mass  # columns
    cy = (x * centres[:, None]).sum((1, 2)) / mass  # rows
    assert ((cx - f[:, 3]).abs().max() * size) < 1.0 and ((cy - f[:, 4]).abs().max() * size) < 1.0
    for k in range(len(SHAPES)):  # pixel count grows with the area, scale²
        sel = f[:, 0] == k
        r = torch.corrcoef(torch.stack([mass[sel], f[sel, 1] ** 2]))[0, 1]
        assert r > 0.95
    big = torch.tensor([[k, s, 0.7, 0.5, 0.5] for k in range(3) for s in (0.5, 0.75, 1.0)])
    counts = render_sprites(big, SHAPES, size).flatten(1).count_nonzero(1).view(3, 3)
    assert (counts.diff(dim=1) > 0).all()


def test_shapes_subset_and_bad_names() -> None:
    info = ShapesDataModule(shapes=["heart", "square"]).info
    assert info.num_classes == 2 and info.class_names == ("heart", "square")
    with pytest.raises(UserError, match="data.shapes"):
        ShapesDataModule(shapes=["triangle"])


def test_shapes_fixed_factors_leave_a_manifold_of_the_others() -> None:
    """Fixed factors are the same for every image (one image per position here), the data reports only the
    factors that vary, and those equal the free draws of the unfixed dataset (fixing one keeps the others)."""
    free = ready(ShapesDataModule(n_samples=200, shapes=["ellipse"])).splits["train"]
    dm = ready(ShapesDataModule(n_samples=200, shapes=["ellipse"], fixed={"scale": 1.0, "rotation": 0.0}))
    s = dm.splits["train"]
    assert dm.info.factor_names == ("x", "y") and s.factors.shape == (len(s.x), 2)
    assert free.factors.shape[1] == 4  # one shape: scale, rotation, x, y vary
    assert torch.equal(s.factors, free.factors[:, 2:])
    area, free_area = (split.x.flatten(1).count_nonzero(1).float() for split in (s, free))
    assert area.max() - area.min() <= 0.25 * area.mean()  # the same sprite moved: pixel rounding only
    assert free_area.max() - free_area.min() >= free_area.mean()  # scales 0.5..1: areas over a factor of 3
    full = torch.tensor([[0.0, 1.0, 0.0, *xy] for xy in s.factors[:3].tolist()])
    assert torch.equal(render_sprites(full, ("ellipse",), 32), s.x[:3])
    with pytest.raises(UserError, match=r"data.fixed.shape .*scale, rotation, x, y"):
        ShapesDataModule(fixed={"shape": 1})
    with pytest.raises(UserError, match=r"data.fixed.x=0.01 is out of range"):
        ShapesDataModule(fixed={"x": 0.01})


def test_toy2d_line_points_lie_near_the_line() -> None:
    dm = ready(Toy2dDataModule(kind="line", n_samples=2000, noise=0.05))
    s = dm.splits["train"]
    w = torch.tensor(LINE_DIRECTION)
    normal = torch.tensor([-w[1], w[0]]) / w.norm()
    off_line = s.x @ normal  # noise only: std ≈ 0.05
    assert off_line.std() < 0.07 and (s.x - s.factors * w).norm(dim=1).mean() < 0.1
    assert s.x.norm(dim=1).std() > 0.5  # spread along the line


def test_toy2d_mixtures_expose_their_modes() -> None:
    for kind, k in (("ring8", 8), ("grid25", 25)):
        dm = ready(Toy2dDataModule(kind=kind, n_samples=500, noise=0.05))
        assert dm.modes.shape == (k, 2) and dm.info.num_classes == k
        s = dm.splits["test"]
        assert (s.x - dm.modes[s.y]).norm(dim=1).max() < 0.5
    assert torch.allclose(Toy2dDataModule(kind="ring8").modes.norm(dim=1), torch.full((8,), 2.0))
    assert Toy2dDataModule(kind="moons").modes is None
    with pytest.raises(UserError, match="data.kind"):
        Toy2dDataModule(kind="spiral")


@pytest.mark.parametrize("cls,folder", [(MNISTDataModule, "MNIST"), (FashionMNISTDataModule, "FashionMNIST"),
                                        (KMNISTDataModule, "KMNIST")])
def test_mnist_like_read_idx_files_through_torchvision(tmp_path: Path, cls: type, folder: str) -> None:
    rng = np.random.default_rng(0)
    images = {p: rng.integers(0, 256, (n, 28, 28), dtype=np.uint8) for p, n in (("train", 12), ("t10k", 5))}
    labels = {p: rng.integers(0, 10, len(images[p]), dtype=np.uint8) for p in images}
    for p in images:
        write_idx(tmp_path / folder / "raw", p, images[p], labels[p])
    dm = ready(cls(root=str(tmp_path), val_fraction=0.25))
    assert len(dm.splits["train"]) == 9 and len(dm.splits["val"]) == 3
    test = dm.splits["test"]
    assert torch.equal(test.x[:, 0], torch.from_numpy(images["t10k"])) and test.y.tolist() == labels["t10k"].tolist()
    small = ready(cls(root=str(tmp_path), image_size=14))
    assert small.info.shape == (1, 14, 14) and small.splits["test"].x.shape == (5, 1, 14, 14)


def test_missing_files_say_what_where_and_how(tmp_path: Path) -> None:
    with pytest.raises(MissingDataError) as e:
        ready(MNISTDataModule(root=str(tmp_path)))
    msg = str(e.value)
    for part in ("data.download=true", "train-images-idx3-ubyte", "t10k-labels-idx1-ubyte",
                 str(tmp_path / "MNIST" / "raw"), "data.root is the folder that holds MNIST/raw/"):
        assert part in msg
    with pytest.raises(MissingDataError, match="data_batch_1.*data.download=true"):
        ready(CIFAR10DataModule(root=str(tmp_path)))
    with pytest.raises(MissingDataError, match="list_attr_celeba.txt"):
        ready(CelebADataModule(root=str(tmp_path)))


def test_corrupt_files_are_a_missing_data_error(tmp_path: Path) -> None:
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in MNISTDataModule().expected_files():
        (raw / name).write_bytes(b"junk")
    with pytest.raises(MissingDataError, match="train-images-idx3-ubyte is not an IDX file of images"):
        ready(MNISTDataModule(root=str(tmp_path)))


def test_celeba_reads_its_cache_and_labels_by_attribute(tmp_path: Path) -> None:
    gen = torch.Generator().manual_seed(0)
    data = {s: {"x": torch.randint(0, 256, (n, 3, 8, 8), dtype=torch.uint8, generator=gen),
                "attr": torch.randint(0, 2, (n, 40), dtype=torch.uint8, generator=gen)}
            for s, n in (("train", 6), ("valid", 2), ("test", 3))}
    dm = CelebADataModule(root=str(tmp_path), image_size=8, attribute="Smiling")
    dm.cache_file().parent.mkdir()
    torch.save(data, dm.cache_file())  # not written by genlab (no digest): not used, so the images are needed
    with pytest.raises(MissingDataError, match="img_align_celeba"):
        ready(CelebADataModule(root=str(tmp_path), image_size=8, attribute="Smiling"))
    save_checked(dm.cache_file(), data)
    ready(dm)
    assert dm.info.shape == (3, 8, 8) and dm.info.class_names == ("not Smiling", "Smiling")
    assert [len(dm.splits[s]) for s in ("train", "val", "test")] == [6, 2, 3]  # the official val split
    assert dm.splits["test"].y.tolist() == data["test"]["attr"][:, CELEBA_ATTRIBUTES.index("Smiling")].tolist()
    assert ready(CelebADataModule(root=str(tmp_path), image_size=8)).splits["train"].y is None
    with pytest.raises(UserError, match="data.attribute"):
        CelebADataModule(attribute="Smiley")
    tall = np.zeros((20, 10, 3), dtype=np.uint8)
    tall[5:15] = 255  # the central square of a portrait image
    Image.fromarray(tall).save(tmp_path / "tall.png")
    assert (read_images([str(tmp_path / "tall.png")], 3, (4, 4), square_crop=True) == 255).all()


def write_pngs(folder: Path, n: int, size: tuple[int, int], seed: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(folder / f"{i}.png")


def test_image_folder_with_classes_split_by_seed(tmp_path: Path) -> None:
    write_pngs(tmp_path / "cat", 6, (12, 10), 0)
    write_pngs(tmp_path / "dog", 4, (9, 9), 1)
    dm = ready(ImageFolderDataModule(path=str(tmp_path), channels=1, image_size=8, val_fraction=0.0))
    assert dm.info.class_names == ("cat", "dog") and dm.info.shape == (1, 8, 8)
    assert len(dm.splits["train"]) == 8 and len(dm.splits["test"]) == 2
    assert dm.splits["train"].x.dtype == torch.uint8
    assert torch.cat([dm.splits["train"].y, dm.splits["test"].y]).bincount().tolist() == [6, 4]


def test_image_folder_train_test_layout_and_unlabelled(tmp_path: Path) -> None:
    write_pngs(tmp_path / "train", 5, (6, 6), 0)
    write_pngs(tmp_path / "test", 3, (6, 6), 1)
    dm = ready(ImageFolderDataModule(path=str(tmp_path), channels=3, val_fraction=0.2))
    assert dm.info.shape == (3, 6, 6) and not dm.info.has_labels  # native size read from the first image
    assert len(dm.splits["test"]) == 3 and dm.splits["test"].y is None
    with pytest.raises(MissingDataError, match="data.path"):
        _ = ImageFolderDataModule(path=str(tmp_path / "nowhere")).info


def mnist_root(tmp_path: Path, n: int = 12, size: int = 28, n_labels: int | None = None,
               label: int | None = None) -> Path:
    """A data.root with MNIST IDX files whose train split may be inconsistent (as the arguments say)."""
    rng = np.random.default_rng(0)
    for prefix in ("train", "t10k"):
        y = rng.integers(0, 10, n_labels if prefix == "train" and n_labels else n, dtype=np.uint8)
        if label is not None and prefix == "train":
            y[0] = label
        write_idx(tmp_path / "MNIST" / "raw", prefix, rng.integers(0, 256, (n, size, size), dtype=np.uint8), y)
    return tmp_path


@pytest.mark.parametrize("make,problem", [
    (lambda p: mnist_root(p, n_labels=11), "train-labels-idx1-ubyte holds 11 labels but train-images"),
    (lambda p: mnist_root(p, size=20), "train-images-idx3-ubyte holds 20x20 images"),
    (lambda p: mnist_root(p, label=200), "train-labels-idx1-ubyte holds the label 200"),
    (lambda p: truncate(mnist_root(p) / "MNIST/raw/t10k-images-idx3-ubyte", -9), "t10k-images-idx3-ubyte holds"),
    (lambda p: truncate(mnist_root(p) / "MNIST/raw/train-labels-idx1-ubyte", 6), "ends inside its header"),
])
def test_inconsistent_idx_files_are_named(tmp_path: Path, make, problem: str) -> None:
    root = make(tmp_path)
    with pytest.raises(MissingDataError, match=problem):
        ready(MNISTDataModule(root=str(root)))


def truncate(path: Path, keep: int) -> Path:
    path.write_bytes(path.read_bytes()[:keep])
    return path.parents[2]


def test_half_a_fixed_split_and_decompression_bombs_are_refused(tmp_path: Path) -> None:
    write_pngs(tmp_path / "half" / "train", 2, (6, 6), 0)
    with pytest.raises(MissingDataError, match="has train/ but no test/"):
        _ = ImageFolderDataModule(path=str(tmp_path / "half")).info
    write_pngs(tmp_path / "bomb", 2, (4, 4), 0)
    for side in (6, 9):  # over the limit of 30 pixels (PIL warns) and over twice it (PIL refuses): both refused
        Image.new("L", (side, side)).save(tmp_path / "bomb" / "big.png")
        with monkeypatch_pixels(30), pytest.raises(UserError, match="big.png.*decompression bomb"):
            ready(ImageFolderDataModule(path=str(tmp_path / "bomb"), image_size=4))


@contextlib.contextmanager
def monkeypatch_pixels(limit: int) -> Iterator[None]:
    """PIL's MAX_IMAGE_PIXELS lowered for the block (a real bomb would be a large file to write)."""
    old, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, limit
    try:
        yield
    finally:
        Image.MAX_IMAGE_PIXELS = old


def test_a_split_left_without_training_samples_is_refused() -> None:
    with pytest.raises(UserError, match="data.val_fraction=0.9999"):
        ready(DigitsDataModule(val_fraction=0.9999))
    with pytest.raises(UserError, match="no test sample"):
        ready(Toy2dDataModule(n_samples=1))


@pytest.fixture(scope="module")
def compose():
    setup_hydra()

    def _compose(*overrides: str):
        with hydra.initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            return hydra.compose("train", overrides=list(overrides))

    return _compose


@pytest.mark.parametrize("name", sorted(p.stem for p in (CONF / "data").glob("*.yaml")))
def test_every_data_config_instantiates(compose, name: str, tmp_path: Path) -> None:
    extra = []
    if name == "image_folder":
        write_pngs(tmp_path / "a", 1, (4, 4), 0)
        extra = [f"data.path={tmp_path}"]
    cfg = compose(f"data={name}", *extra)
    dm = instantiate(cfg.data)  # no loading: only the cheap info
    assert isinstance(dm, TensorDataModule) and isinstance(dm.info, DataInfo) and dm.info.name == name


@pytest.mark.skipif(not SHARED_MNIST.is_dir(), reason="needs the MNIST copy kept beside the project")
def test_shared_mnist_copy_loads(compose, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(PROJECT)  # the override is relative to the project root, as a user types it
    dm = ready(instantiate(compose("data=mnist", "data.root=../shared/data/mnist10k").data))
    assert len(dm.splits["train"]) + len(dm.splits["val"]) == 8000 and len(dm.splits["test"]) == 2000
    assert dm.splits["test"].x.shape[1:] == (1, 28, 28) and dm.splits["test"].y.bincount().numel() == 10
