"""data.in_memory=false: splits decoded once into memory-mapped arrays, batches read by DataLoader workers,
in the order of the in-memory path — so both train alike."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import run_cli
from PIL import Image

from genlab.data import stream
from genlab.data.vision import ImageFolderDataModule
from genlab.errors import UserError


@pytest.fixture(scope="module")
def pictures(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """90 noisy 10x10 colour images in three class folders."""
    root = tmp_path_factory.mktemp("pictures")
    rng = np.random.default_rng(0)
    for k, c in enumerate("abc"):
        (root / c).mkdir()
        for i in range(30):
            arr = (rng.random((10, 10, 3)) * 255).astype("uint8")
            arr[2:8, 2:8, k] = 255
            Image.fromarray(arr).save(root / c / f"{i}.png")
    return root


def datamodule(root: Path, cache: Path, in_memory: bool, **kw: object) -> ImageFolderDataModule:
    dm = ImageFolderDataModule(path=str(root), image_size=8, batch_size=16, seed=3, in_memory=in_memory,
                               array_cache=str(cache), num_workers=2, **kw)
    dm.setup("fit")
    return dm


def test_streamed_batches_equal_the_in_memory_ones_epoch_by_epoch(pictures: Path, tmp_path: Path) -> None:
    mem, disk = datamodule(pictures, tmp_path, True), datamodule(pictures, tmp_path, False)
    assert sorted(disk.arrays) == ["test", "train", "val"]
    for name in ("train", "val", "test"):  # the same samples in each split, now file-backed
        assert torch.equal(mem.splits[name].x, disk.splits[name].x)
        assert torch.equal(mem.splits[name].y, disk.splits[name].y)
    for epoch in range(2):
        a, b = mem.make_loader("train", 16, True), disk.make_loader("train", 16, True)
        a.epoch_of = b.epoch_of = lambda e=epoch: e
        got_a, got_b = list(a), list(b)
        assert len(got_a) == len(got_b) == len(a)
        for x, y in zip(got_a, got_b):
            assert torch.equal(x["x"], y["x"]) and torch.equal(x["y"], y["y"])
    a, b = list(mem.test_dataloader()), list(disk.test_dataloader())
    assert len(a) == len(b) == 1 and torch.equal(a[0]["x"], b[0]["x"])


def test_the_arrays_are_built_once_and_reused(pictures: Path, tmp_path: Path, monkeypatch) -> None:
    datamodule(pictures, tmp_path, False)
    files = {p: p.stat().st_mtime_ns for p in tmp_path.glob("*.npy")}
    assert len(files) == 3 and not list(tmp_path.glob("*.tmp*"))

    def no_decoding(*a: object, **k: object) -> None:
        raise AssertionError("decoded again")

    monkeypatch.setattr(stream.FileImages, "decode", no_decoding)
    again = datamodule(pictures, tmp_path, False)
    assert {p: p.stat().st_mtime_ns for p in tmp_path.glob("*.npy")} == files
    assert isinstance(np.load(again.arrays["train"], mmap_mode="r"), np.memmap)


def test_a_damaged_or_swapped_array_is_built_again(pictures: Path, tmp_path: Path) -> None:
    """An array file whose bytes no longer have the recorded sha256 (another array of the same shape, a
    truncated file, a missing digest) is rebuilt, and the batches are those of the images."""
    good = datamodule(pictures, tmp_path, False)
    train = good.arrays["train"]
    want = good.splits["train"].x.clone()
    arr = np.load(train)
    np.save(train, np.zeros_like(arr))  # the same shape and dtype, other content
    assert torch.equal(datamodule(pictures, tmp_path, False).splits["train"].x, want)
    train.write_bytes(train.read_bytes()[:100])  # truncated
    assert torch.equal(datamodule(pictures, tmp_path, False).splits["train"].x, want)
    stream.digest_file(train).unlink()  # written by a genlab that recorded no digest
    assert torch.equal(datamodule(pictures, tmp_path, False).splits["train"].x, want)
    assert stream.digest_file(train).is_file()


def test_a_resumed_epoch_streams_from_the_batch_it_stopped_at(pictures: Path, tmp_path: Path) -> None:
    dm = datamodule(pictures, tmp_path, False)
    whole = dm.make_loader("train", 16, True)
    rest = dm.make_loader("train", 16, True)
    rest.load_state_dict({"epoch": 0, "trained": 2})
    assert [b["x"].tolist() for b in rest] == [b["x"].tolist() for b in list(whole)[2:]]


def test_an_unreadable_image_names_its_file_and_leaves_no_array(pictures: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    for c in ("a", "b"):
        (broken / c).mkdir(parents=True)
        for i in range(3):
            (broken / c / f"{i}.png").write_bytes((pictures / c / f"{i}.png").read_bytes())
    (broken / "b" / "2.png").write_bytes(b"not a png")
    with pytest.raises(UserError, match=r"b/2\.png"):
        datamodule(broken, tmp_path / "cache", False)
    assert not list((tmp_path / "cache").glob("*"))


def test_generated_float_data_is_refused_with_the_reason(tmp_path: Path) -> None:
    done = run_cli("data=toy2d", "data.in_memory=false", "trainer=debug", f"paths.log_dir={tmp_path}")
    assert done.returncode != 0 and "data.in_memory=true" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.slow
def test_image_folder_trains_alike_in_memory_and_streamed(pictures: Path, tmp_path: Path) -> None:
    metrics = []
    for in_memory in ("true", "false"):
        done = run_cli("data=image_folder", f"data.path={pictures}", "data.image_size=8", "data.batch_size=16",
                       "model=ae", "trainer.max_epochs=2", "trainer.enable_progress_bar=false", "logger=csv",
                       f"data.in_memory={in_memory}", f"paths.log_dir={tmp_path / in_memory}")
        assert done.returncode == 0, done.stderr[-2000:]
        [run] = list((tmp_path / in_memory).glob("train/runs/*"))
        metrics.append(json.loads((run / "metrics.json").read_text())["metrics"])
    assert metrics[0] == metrics[1]  # the same batches in the same order: the same run


def test_streaming_leaves_the_runs_random_stream_alone(pictures: Path, tmp_path: Path) -> None:
    """The workers' seeds come from the loader's own generator: noise and binarisation draw as in memory."""
    draws = []
    for in_memory in (True, False):
        dm = datamodule(pictures, tmp_path, in_memory)
        torch.manual_seed(7)
        for loader in (dm.train_dataloader(), dm.val_dataloader(), dm.train_dataloader()):
            list(loader)
        draws.append(torch.rand(3))
    assert torch.equal(draws[0], draws[1])
