"""Faults a user meets that are not bad options: a diverged state the loss never shows, stale temporary files
of a checkpoint write, an edited run folder."""

from __future__ import annotations

import functools
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from conftest import run_cli

from genlab.data.base import DataInfo
from genlab.errors import NonFiniteLoss


def tiny_simclr() -> pl.LightningModule:
    from genlab.data.augment import Disturbances
    from genlab.models.contrastive import SimCLR
    from genlab.nets.autoencoder import mlp_pair

    return SimCLR(data_info=DataInfo("tiny", (1, 8, 8)), net=functools.partial(mlp_pair, hidden=[16]),
                  rep_dim=4, proj_hidden=8, proj_dim=4, views=Disturbances(),
                  optimizer=functools.partial(torch.optim.Adam, lr=1e-3))


def test_a_state_with_nan_or_inf_is_never_saved(tmp_path: Path) -> None:
    """The loss check sees the loss terms only; a batch-norm statistic (here the projection head's running
    variance) can turn inf while every loss stays finite. Saving such a state is refused before the file is
    written, naming the tensor."""
    model = tiny_simclr()
    trainer = pl.Trainer(max_epochs=0, logger=False, enable_progress_bar=False, enable_model_summary=False,
                         default_root_dir=tmp_path)
    trainer.strategy.connect(model)
    trainer.save_checkpoint(tmp_path / "good.ckpt")  # a finite state is saved
    assert (tmp_path / "good.ckpt").is_file()
    name, buffer = next((k, v) for k, v in model.state_dict().items() if k.endswith("running_var"))
    buffer[3] = float("inf")
    with pytest.raises(NonFiniteLoss, match=rf"saved state '{name}' is not finite \(\d+% of its \d+ values"):
        trainer.save_checkpoint(tmp_path / "bad.ckpt")
    assert not (tmp_path / "bad.ckpt").exists()


def test_a_run_whose_batch_norm_statistics_diverge_fails_and_leaves_no_folder(tmp_path: Path) -> None:
    """SimCLR at a learning rate of 1e6 keeps a finite loss while a running variance becomes inf: exit 3 (a
    diverged run), the tensor named, and no checkpoint, metrics or folder left behind."""
    done = run_cli("model=simclr", "model.optimizer.lr=1e6", "data=digits", "data.max_train=256",
                   "data.batch_size=64", "trainer.max_epochs=2", "trainer.enable_progress_bar=false", "logger=csv",
                   f"paths.log_dir={tmp_path}")
    assert done.returncode == 3, done.stderr[-2000:]
    assert "saved state 'head." in done.stderr and "running_var' is not finite" in done.stderr
    assert "Traceback" not in done.stderr
    assert not list(tmp_path.glob("train/runs/*"))


def test_resume_refuses_an_edited_config_and_removes_stale_temporaries(tmp_path: Path) -> None:
    """The checkpoint keeps the config the run was started with; a resume compares the folder's file with it.
    An edited learning rate or seed is refused with the keys named (the run would otherwise ignore one and
    change the data split with the other); trainer.max_epochs is what resume= may change. A temporary file a
    killed checkpoint write left behind is removed when the run takes its folder again."""
    args = ["model=ae", "data=digits", "data.max_train=96", "trainer.enable_progress_bar=false", "logger=csv"]
    first = run_cli(*args, "trainer.max_epochs=1", f"paths.log_dir={tmp_path}")
    assert first.returncode == 0, first.stderr[-2000:]
    [run] = list(tmp_path.glob("train/runs/*"))
    config = run / ".hydra" / "config.yaml"
    original = config.read_text()
    assert "seed: 0\n" in original and "lr: 0.001\n" in original
    config.write_text(original.replace("seed: 0\n", "seed: 7\n").replace("lr: 0.001\n", "lr: 0.1\n", 1))
    stale = run / "checkpoints" / ".last.ckpt.k2j4h1.tmp"
    stale.write_bytes(b"half a checkpoint")
    edited = run_cli(f"resume={run}", "trainer.max_epochs=2")
    assert edited.returncode == 2, edited.stderr[-2000:]
    assert "no longer matches the run its checkpoint holds" in edited.stderr
    assert "model.optimizer.lr: 0.001 in the checkpoint, 0.1 in the file" in edited.stderr
    assert "seed: 0 in the checkpoint, 7 in the file" in edited.stderr and "Traceback" not in edited.stderr
    assert not (run / "checkpoints" / "epoch_001.ckpt").exists()  # nothing trained
    config.write_text(original)
    resumed = run_cli(f"resume={run}", "trainer.max_epochs=2")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert (run / "checkpoints" / "epoch_001.ckpt").is_file() and not stale.exists()


def test_config_edits_leave_out_what_resume_may_change(tmp_path: Path) -> None:
    from genlab.runfolder import RunFolder

    (tmp_path / ".hydra").mkdir()
    (tmp_path / ".hydra" / "config.yaml").write_text(
        "seed: 1\ntrainer:\n  max_epochs: 9\n  devices: 1\nmodel:\n  net:\n    hidden: [8, 4]\n  new: 1\n")
    recorded = {"seed": 1, "trainer": {"max_epochs": 3, "devices": 1}, "model": {"net": {"hidden": [8]}}}
    edits = RunFolder(tmp_path).config_edits(recorded, ("trainer.max_epochs",))
    assert edits == ["model.net.hidden: [8] in the checkpoint, [8, 4] in the file",
                     "model.new: '(absent)' in the checkpoint, 1 in the file"]
    assert RunFolder(tmp_path).config_edits(recorded, ("trainer.max_epochs", "model")) == []


def test_a_run_folder_is_a_closed_box(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """resume=, genlab-eval and genlab-sample refuse a run folder that holds symbolic links (they would write or
    read through them, outside the folder), and a resume refuses a config whose outputs lie elsewhere."""
    import os
    import shutil

    from omegaconf import OmegaConf

    from genlab.evaluate import main as eval_main
    from genlab.sample import main as sample_main

    outside = tmp_path / "elsewhere"
    outside.mkdir()
    args = ["model=ae", "data=digits", "data.max_train=96", "trainer.enable_progress_bar=false", "logger=csv",
            "trainer.max_epochs=1"]
    first = run_cli(*args, f"paths.log_dir={tmp_path / 'a'}")
    assert first.returncode == 0, first.stderr[-2000:]
    [run] = list((tmp_path / "a").glob("train/runs/*"))
    carried = shutil.copytree(run, tmp_path / "carried")  # a folder from elsewhere, for the second half
    images = run / "images"
    images.rename(outside / "images")
    os.symlink(outside / "images", images)
    before = sorted(p.name for p in (outside / "images").iterdir())
    resumed = run_cli(f"resume={run}", "trainer.max_epochs=2")
    assert resumed.returncode == 2 and "holds symbolic links (images -> " in resumed.stderr, resumed.stderr[-2000:]
    for command in (eval_main, sample_main):
        with pytest.raises(SystemExit) as stop:
            command([str(run)])
        stderr = capsys.readouterr().err
        assert stop.value.code == 2 and "holds symbolic links" in stderr, (command, stderr[-2000:])
    assert sorted(p.name for p in (outside / "images").iterdir()) == before  # nothing written through the link
    assert not (run / "checkpoints" / "epoch_001.ckpt").exists() and not (run / "samples").exists()
    # a folder whose config writes its checkpoints elsewhere: resume= does not follow it there
    config = OmegaConf.load(carried / ".hydra" / "config.yaml")
    config.callbacks.model_checkpoint.dirpath = str(outside)
    OmegaConf.save(config, carried / ".hydra" / "config.yaml")
    resumed = run_cli(f"resume={carried}", "trainer.max_epochs=2")
    assert resumed.returncode == 2, resumed.stderr[-2000:]
    assert f"writes outside the run's folder (callbacks.model_checkpoint.dirpath={outside})" in resumed.stderr
    assert sorted(p.name for p in outside.iterdir()) == ["images"]


def test_checkpoints_are_read_only_from_inside_the_folder(tmp_path: Path) -> None:
    import os

    from genlab.errors import UserError
    from genlab.runfolder import RunFolder

    folder = RunFolder(tmp_path / "run")
    folder.checkpoints.mkdir(parents=True)
    (tmp_path / "other.ckpt").write_bytes(b"x")
    os.symlink(tmp_path / "other.ckpt", folder.last_checkpoint)
    with pytest.raises(UserError, match="reached through a symbolic link"):
        folder.tested_checkpoint()
    assert folder.links() == [f"checkpoints/last.ckpt -> {tmp_path / 'other.ckpt'}"]
    folder.last_checkpoint.unlink()
    folder.last_checkpoint.write_bytes(b"y")
    assert folder.tested_checkpoint() == folder.last_checkpoint and folder.links() == []


# ---- a full disk ---------------------------------------------------------------------------------------
def test_a_write_the_disk_refuses_is_one_error_and_leaves_no_temporary(tmp_path: Path) -> None:
    import errno

    from genlab.errors import WriteFailed
    from genlab.files import write_atomically

    def full(f: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(WriteFailed, match=r"^.*a\.bin could not be written: No space left on device; .* free there"):
        write_atomically(tmp_path / "a.bin", full)
    with pytest.raises(WriteFailed, match=r"not enough space left on the device; .* free there, about .* needed"):
        write_atomically(tmp_path / "b.bin", lambda f: f.write(b"x"), need=1 << 62)
    assert list(tmp_path.iterdir()) == []  # neither the files nor their temporaries
    with pytest.raises(ZeroDivisionError):  # anything else is not a write failure
        write_atomically(tmp_path / "c.bin", lambda f: 1 / 0)
    assert list(tmp_path.iterdir()) == []


def test_a_checkpoint_is_checked_against_the_free_space_before_it_is_written(tmp_path: Path,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    import genlab.files
    from genlab.checkpoints import AtomicCheckpointIO, tensor_bytes
    from genlab.errors import WriteFailed

    state = {"state_dict": {"w": torch.zeros(1000)}, "optimizer_states": [{"m": torch.zeros(1000)}], "epoch": 1}
    assert tensor_bytes(state) == 8000
    monkeypatch.setattr(genlab.files, "free_bytes", lambda path: 5000)
    with pytest.raises(WriteFailed, match=r"last\.ckpt could not be written: not enough space .* 5 KiB free there, "
                                          r"about 72 KiB needed"):  # 8000 B + 64 KiB
        AtomicCheckpointIO().save_checkpoint(state, tmp_path / "last.ckpt")
    assert list(tmp_path.iterdir()) == []


def small_file_system(path: Path, size: str) -> bool:
    """A tmpfs of ``size`` mounted at ``path`` (root only); False where it cannot be made."""
    import subprocess

    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True)
    return done.returncode == 0


def test_a_full_disk_ends_in_one_line_and_the_run_resumes_once_space_is_freed(tmp_path: Path) -> None:
    """On a 9 MiB file system an autoencoder of 337 K parameters writes its first two checkpoints (4 MiB each with
    Adam's state), then cannot write the third: one line naming the file and the space, exit 2, no zero-byte or
    temporary file; after the file system grows, resume= ends where a run with room to spare does."""
    import subprocess

    disk = tmp_path / "disk"
    if not small_file_system(disk, "9m"):
        pytest.skip("mounting a small tmpfs needs root")
    try:
        args = ["model=ae", "data=digits", "data.max_train=96", "trainer.max_epochs=3", "logger=csv",
                "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false"]
        full = run_cli(*args, f"paths.log_dir={disk}")
        assert full.returncode == 2, full.stderr[-2000:]
        [line] = [ln for ln in full.stderr.splitlines() if ln.startswith("genlab-train: error:")]
        assert "checkpoints/epoch_001.ckpt could not be written: not enough space left on the device" in line
        assert "free there, about" in line and "Traceback" not in full.stderr
        [run] = list(disk.glob("train/runs/*"))
        files = [p for p in run.rglob("*") if p.is_file()]
        assert not [p for p in files if p.stat().st_size == 0 or p.name.endswith(".tmp")]
        subprocess.run(["mount", "-o", "remount,size=60m", str(disk)], check=True)
        resumed = run_cli(f"resume={run}")
        assert resumed.returncode == 0, resumed.stderr[-2000:]
        room = run_cli(*args, f"paths.log_dir={tmp_path / 'room'}")
        assert room.returncode == 0, room.stderr[-2000:]
        import json

        ends = [json.loads(next(d.glob("train/runs/*/metrics.json")).read_text())["metrics"]["test/loss"]
                for d in (disk, tmp_path / "room")]
        assert ends[0] == ends[1]
    finally:
        subprocess.run(["umount", str(disk)], capture_output=True)


def test_an_array_cache_that_cannot_fit_is_refused_and_its_space_is_reserved_before_writing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """data.in_memory=false writes the data into a memory-mapped file; a disk that fills while its pages are
    written kills the process (SIGBUS). The array's size is checked against the free space, and its blocks are
    reserved (posix_fallocate) before any is written, so a full disk is one WriteFailed naming the setting."""
    import errno
    import os

    import genlab.files
    from genlab.data.stream import build_array
    from genlab.errors import WriteFailed

    x = torch.zeros(64, 1, 16, 16, dtype=torch.uint8)
    monkeypatch.setattr(genlab.files, "free_bytes", lambda path: 1000)
    with pytest.raises(WriteFailed, match=r"a\.npy could not be written: not enough space .* about 20 KiB needed"):
        build_array(x, tmp_path / "a.npy", workers=0)
    monkeypatch.setattr(genlab.files, "free_bytes", lambda path: None)  # unknown: the reservation answers

    def no_room(fd: int, offset: int, length: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "posix_fallocate", no_room, raising=False)
    with pytest.raises(WriteFailed, match=r"No space left on device") as caught:
        build_array(x, tmp_path / "a.npy", workers=0)
    assert "write elsewhere: paths.cache_dir" in caught.value.advice("paths.log_dir")
    assert list(tmp_path.iterdir()) == []  # no temporary array left


def test_sample_grids_and_eval_tables_on_a_full_disk_leave_nothing_half_written(tmp_path: Path) -> None:
    import subprocess

    from genlab.errors import WriteFailed
    from genlab.evaluate import write_csv
    from genlab.sample import write_grid

    disk = tmp_path / "disk"
    if not small_file_system(disk, "64k"):
        pytest.skip("mounting a small tmpfs needs root")
    try:
        subprocess.run(["dd", "if=/dev/zero", f"of={disk / 'fill'}", "bs=4k"], capture_output=True)
        info = DataInfo("tiny", (1, 8, 8))
        with pytest.raises(WriteFailed, match=r"grid\.png could not be written") as caught:
            write_grid(torch.rand(16, 1, 8, 8), [], 16, info, disk / "grid.png", "last.ckpt")
        assert "write elsewhere: --out FILE.png" in caught.value.advice("--out FILE.png")
        with pytest.raises(WriteFailed, match=r"table\.csv could not be written"):
            write_csv([], disk / "table.csv")
        assert sorted(p.name for p in disk.iterdir()) == ["fill"]
    finally:
        subprocess.run(["umount", str(disk)], capture_output=True)


def test_too_little_space_for_a_run_is_refused_before_its_folder_is_made(tmp_path: Path) -> None:
    import subprocess

    disk = tmp_path / "disk"
    if not small_file_system(disk, "12k"):
        pytest.skip("mounting a small tmpfs needs root")
    try:
        done = run_cli("model=ae", "data=digits", f"paths.log_dir={disk}")
        assert done.returncode == 2 and "its file system has 12 KiB free" in done.stderr, done.stderr[-2000:]
        assert list(disk.iterdir()) == []
    finally:
        subprocess.run(["umount", str(disk)], capture_output=True)


# ---- signals at the edges of the test stage -------------------------------------------------------------
def test_a_stop_in_the_test_whose_raise_python_drops_is_raised_again(tmp_path: Path) -> None:
    """Python drops an exception a signal handler raises while a finalizer runs ("Exception ignored in ..."):
    the test would then run on and finish over the stop. The stop is kept and raised again at the next batch,
    metric and before the run's records."""
    import gc
    import signal
    import weakref
    from types import SimpleNamespace

    from genlab.callbacks.interrupt import PENDING, GracefulStop, Interrupted, raise_pending

    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "last.ckpt").write_bytes(b"x")
    trainer = SimpleNamespace(checkpoint_callbacks=[], default_root_dir=str(tmp_path), current_epoch=2,
                              global_step=7, is_global_zero=True)
    handler = GracefulStop.test_handler(trainer)

    class Garbage:
        pass

    thing = Garbage()
    weakref.finalize(thing, handler, signal.SIGTERM, None)  # the handler runs inside a finalizer
    del thing
    gc.collect()
    assert (tmp_path / "interrupted.json").is_file() and len(PENDING) == 1
    with pytest.raises(Interrupted, match="stopped by SIGTERM during the test"):
        raise_pending()
    raise_pending()  # raised once


def test_sigterm_as_the_test_begins_ends_with_143_and_interrupted_json(tmp_path: Path) -> None:
    """The test stage's stop is installed as soon as fit returns, before Lightning loads the checkpoint to test."""
    import json
    import os
    import signal
    import subprocess
    import sys

    env = {**os.environ, "PYTHONWARNINGS": "ignore", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "genlab.train", "model=ae", "data=digits", "data.max_train=96",
                             "trainer.max_epochs=1", "logger=csv", "trainer.enable_progress_bar=false",
                             f"paths.log_dir={tmp_path}"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env=env)
    assert proc.stdout is not None
    for line in proc.stdout:
        if "Restoring states from the checkpoint path" in line:  # Lightning, as trainer.test begins
            proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == 143
    [run] = list(tmp_path.glob("train/runs/*"))
    assert json.loads((run / "interrupted.json").read_text())["stage"] == "test"
    assert not (run / "metrics.json").exists()


def test_a_network_larger_than_the_machine_is_refused_in_one_line(make_cfg) -> None:
    from genlab.errors import UserError
    from genlab.train import train

    cfg = make_cfg("model=ae", "data=digits", "data.max_train=96", "model.latent_dim=1000000000")
    with pytest.raises(UserError, match=r"networks need more memory than this machine can give \([\d,.]+ GiB for one "
                                        r"tensor\): lower the sizes in model"):
        train(cfg)
