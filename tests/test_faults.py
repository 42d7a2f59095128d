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
