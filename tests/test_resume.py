"""A run stopped at any moment and resumed is the run that would have finished: SIGTERM and SIGKILL
in the middle of a run, ``resume=`` until it ends, metrics.json equal to the uninterrupted run's bit
for bit; mid-epoch loader state; what resume= refuses. Non-finite losses stop every family at their
step with exit code 3, and ``trainer.nan_retries`` rolls back with halved learning rates."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import CACHE, FAST, TINY, run_cli
from omegaconf import open_dict

from genlab.data.base import Split, TrainLoader, epoch_order
from genlab.errors import NonFiniteLoss
from genlab.models.autoencoder import Autoencoder
from genlab.train import train

# 3 training batches an epoch, so that a signal lands in the middle of an epoch as often as not
RUN = ["model=ae", "data=digits", "data.max_train=96", "data.batch_size=32", "trainer.max_epochs=25",
       "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false", "logger=csv",
       "callbacks.evaluator.metrics.sample_quality.n_samples=100"]


def test_an_epoch_order_is_a_function_of_seed_and_epoch() -> None:
    assert torch.equal(epoch_order(50, 3, 7), epoch_order(50, 3, 7))
    assert not torch.equal(epoch_order(50, 3, 7), epoch_order(50, 3, 8))
    assert not torch.equal(epoch_order(50, 3, 7), epoch_order(50, 4, 7))
    assert sorted(epoch_order(50, 3, 7).tolist()) == list(range(50))


def test_the_train_loader_resumes_at_the_next_batch_of_the_same_order() -> None:
    split = Split(torch.arange(10).float()[:, None])
    epoch = {"now": 4}
    whole = [b["x"][:, 0].tolist() for b in TrainLoader(split, 3, shuffle=True, seed=1, epoch=lambda: epoch["now"])]
    assert [i for b in whole for i in b] == epoch_order(10, 1, 4).float().tolist()
    first = TrainLoader(split, 3, shuffle=True, seed=1, epoch=lambda: epoch["now"])
    for _ in zip(range(2), first):
        first.count_trained()  # two batches reached a training step, then the run was stopped
    state = first.state_dict()
    assert state == {"epoch": 4, "trained": 2}
    again = TrainLoader(split, 3, shuffle=True, seed=1, epoch=lambda: epoch["now"])
    again.load_state_dict(state)
    assert [b["x"][:, 0].tolist() for b in again] == whole[2:]  # the rest of the same epoch
    epoch["now"] = 5
    assert len(list(again)) == 4  # the next epoch is whole


def start(log_dir: Path, *args: str) -> subprocess.Popen:
    env = {**os.environ, "HYDRA_FULL_ERROR": "0", "PYTHONWARNINGS": "ignore"}
    return subprocess.Popen([sys.executable, "-m", "genlab.train", *args, f"paths.log_dir={log_dir}",
                             f"paths.cache_dir={CACHE}"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)


def the_run(log_dir: Path) -> Path:
    (run,) = (log_dir / "train" / "runs").iterdir()
    return run


def metrics_of(run: Path) -> dict[str, Any]:
    return json.loads((run / "metrics.json").read_text())


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    logs = tmp_path_factory.mktemp("whole")
    out, err = start(logs, *RUN).communicate()
    assert (run := the_run(logs)) and (run / "metrics.json").is_file(), err[-2000:]
    return run


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_a_run_stopped_in_the_middle_and_resumed_ends_bit_identical(uninterrupted: Path, tmp_path: Path,
                                                                    sig: signal.Signals) -> None:
    proc = start(tmp_path, *RUN)
    deadline = time.time() + 240
    while not list((tmp_path / "train" / "runs").glob("*/checkpoints/epoch_004.ckpt")):  # a few epochs in
        assert proc.poll() is None and time.time() < deadline, proc.communicate()[1][-2000:]
        time.sleep(0.01)
    proc.send_signal(sig)
    _, err = proc.communicate()
    run = the_run(tmp_path)
    assert not (run / "metrics.json").exists()
    if sig == signal.SIGTERM:  # the scheduler's requeue code, a checkpoint at the step, the record
        assert proc.returncode == 143 and "Traceback" not in err, err[-2000:]
        record = json.loads((run / "interrupted.json").read_text())
        assert record["signal"] == "SIGTERM" and record["checkpoint"] == "checkpoints/last.ckpt"
        state = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
        assert state["global_step"] == record["global_step"] >= 5 * 3
        assert f"resume={run}" in err
    else:
        assert proc.returncode == -signal.SIGKILL
    r = run_cli(f"resume={run}", f"paths.log_dir={tmp_path}")
    assert r.returncode == 0, r.stderr[-2000:]
    assert list((tmp_path / "train" / "runs").iterdir()) == [run]  # in its own folder
    assert not (run / "interrupted.json").exists()
    whole, resumed = metrics_of(uninterrupted), metrics_of(run)
    assert resumed["metrics"] == whole["metrics"]  # every value, bit for bit
    assert resumed["best_checkpoint"] == whole["best_checkpoint"]
    # what the CSV logger wrote before the stop is kept; the resumed part is beside it
    first, rest = (run / "csv" / "metrics.csv").read_text(), (run / "csv" / "resumed-1" / "metrics.csv").read_text()
    assert "train/loss" in first and "test/loss" in rest and "test/loss" not in first


@pytest.mark.slow
def test_a_signal_during_the_test_stops_at_once_and_resume_runs_the_test(tmp_path: Path) -> None:
    """The test of a diffusion model sampling 1000 steps would run for minutes after a SIGTERM: it stops at
    once, with the scheduler's code, the record and the resume= command."""
    proc = start(tmp_path, "model=ddpm", "data=digits", "data.max_train=64", "trainer.max_epochs=1", "logger=csv",
                 "trainer.enable_progress_bar=false", "model.sample_steps=1000")
    deadline = time.time() + 120
    while not any("Restoring states" in f.read_text() for f in (tmp_path / "train" / "runs").glob("*/*.log")):
        assert proc.poll() is None and time.time() < deadline, proc.communicate()[1][-2000:]
        time.sleep(0.05)
    time.sleep(3)  # into the test's first batches (the test's own handler is set at its start); it samples for minutes
    signalled = time.time()
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    run = the_run(tmp_path)
    assert proc.returncode == 143 and "Traceback" not in err, err[-2000:]
    assert time.time() - signalled < 30  # not the rest of the test
    assert "during the test" in err and f"resume={run}" in err
    record = json.loads((run / "interrupted.json").read_text())
    assert record["stage"] == "test" and record["signal"] == "SIGTERM"
    assert record["checkpoint"] == "checkpoints/last.ckpt" and not (run / "metrics.json").exists()


@pytest.mark.slow
def test_a_run_stopped_in_its_test_resumes_to_the_same_metrics(uninterrupted: Path, tmp_path: Path) -> None:
    """What a stop during the test leaves (training done, no metrics.json, the record): resume= tests the
    same checkpoint under the same seed, so the metrics are those of the run that was never stopped."""
    run = tmp_path / "run"
    shutil.copytree(uninterrupted, run)
    (run / "metrics.json").unlink()
    (run / "interrupted.json").write_text(json.dumps({"signal": "SIGTERM", "stage": "test"}))
    r = run_cli(f"resume={run}", f"paths.log_dir={tmp_path}")
    assert r.returncode == 0, r.stderr[-2000:]
    assert not (run / "interrupted.json").exists()
    assert metrics_of(run)["metrics"] == metrics_of(uninterrupted)["metrics"]


@pytest.mark.slow
def test_resume_of_a_finished_run_says_so_and_changes_nothing(uninterrupted: Path, tmp_path: Path) -> None:
    before = (uninterrupted / "metrics.json").read_bytes()
    r = run_cli(f"resume={uninterrupted}", f"paths.log_dir={tmp_path}")
    assert r.returncode == 0 and "has finished" in r.stderr and "trainer.max_epochs" in r.stderr
    assert (uninterrupted / "metrics.json").read_bytes() == before


@pytest.mark.slow
def test_resume_refuses_what_would_change_the_run(uninterrupted: Path, tmp_path: Path) -> None:
    r = run_cli(f"resume={uninterrupted}", "model.latent_dim=3", f"paths.log_dir={tmp_path}")
    assert r.returncode == 2 and "model.latent_dim" in r.stderr and "trainer.max_epochs" in r.stderr
    empty = tmp_path / "not_a_run"
    empty.mkdir()
    r = run_cli(f"resume={empty}", f"paths.log_dir={tmp_path}")
    assert r.returncode == 2 and "not a genlab run" in r.stderr and "Traceback" not in r.stderr
    assert list(empty.iterdir()) == []  # a folder the user named is never removed nor written


# ---- non-finite losses ---------------------------------------------------------------------------
FAMILIES = {  # one model of each family, on small data
    "ae": ["model=ae", "data=digits", *TINY["digits"]],
    "vae": ["model=vae", "data=digits", *TINY["digits"]],
    "rbm": ["model=rbm", "data=digits", *TINY["digits"]],
    "gan": ["model=gan", "data=digits", *TINY["digits"]],
    "wgan_gp": ["model=wgan_gp", "data=toy2d", *TINY["toy2d"]],
    "toy_gan": ["model=toy_gan", "data=toy2d", *TINY["toy2d"]],
    "cyclegan": ["experiment=cyclegan_digits", "data.max_train=64"],
}


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_a_non_finite_loss_stops_every_family_naming_model_term_and_step(make_cfg, monkeypatch, name: str) -> None:
    """Training images that turn NaN at step 1 (a corrupt batch): the run stops at that step."""
    from genlab.data.base import TensorDataModule

    scaled = TensorDataModule.on_after_batch_transfer

    def corrupt(self: TensorDataModule, batch: dict, idx: int) -> dict:
        batch = scaled(self, batch, idx)
        if self.trainer.training and self.trainer.global_step >= 1:
            batch = {k: v * float("nan") if k in ("x", "x_b") else v for k, v in batch.items()}
        return batch

    monkeypatch.setattr(TensorDataModule, "on_after_batch_transfer", corrupt)
    cfg = make_cfg(*FAMILIES[name], *FAST, "trainer.max_epochs=2")
    with pytest.raises(NonFiniteLoss) as e:
        train(cfg)
    assert e.value.exit_code == 3  # the model (and player), the term, the step
    assert re.match(r"the \w+('s| generator's| discriminator's) loss term '\w+' is nan at global step \d+: ",
                    str(e.value)), str(e.value)
    assert not (Path(cfg.paths.output_dir) / "metrics.json").exists()


@pytest.mark.slow
def test_the_command_line_exits_3_and_leaves_no_folder(tmp_path: Path) -> None:
    r = run_cli("model=ae", "model.optimizer.lr=1e6", "data=digits", *TINY["digits"], *FAST,
                f"paths.log_dir={tmp_path}")
    assert r.returncode == 3 and "the Autoencoder's loss term 'recon' is nan at global step" in r.stderr
    assert "Traceback" not in r.stderr and not list((tmp_path / "train" / "runs").glob("*"))


class FlakyAutoencoder(Autoencoder):
    """An autoencoder whose loss turns NaN from step 5 on while its learning rate is above 6e-4: it
    diverges at 1e-3 and trains at the halved rate — a model that nan_retries rescues."""

    def loss_terms(self, batch: Any, stage: str) -> dict[str, torch.Tensor]:
        terms = super().loss_terms(batch, stage)
        if stage == "train" and self.global_step >= 5 and self.optimizers().param_groups[0]["lr"] > 6e-4:
            terms = {k: v * float("nan") for k, v in terms.items()}
        return terms


def test_nan_retries_roll_back_to_the_last_checkpoint_with_the_learning_rate_halved(make_cfg, caplog) -> None:
    cfg = make_cfg("model=ae", "data=digits", *TINY["digits"], *FAST, "trainer.max_epochs=4",
                   "trainer.limit_train_batches=3", "trainer.nan_retries=1", "model.optimizer.lr=1e-3")
    with open_dict(cfg):
        cfg.model._target_ = f"{__name__}.FlakyAutoencoder"
    metrics = train(cfg)  # recovered: no exception
    assert all(v == v for v in metrics.values())  # no NaN anywhere
    retry = [r.getMessage() for r in caplog.records if "Retry 1 of 1" in r.getMessage()]
    assert len(retry) == 1 and "last.ckpt" in retry[0] and "x 0.5" in retry[0]  # from epoch 1's checkpoint
    written = json.loads((Path(cfg.paths.output_dir) / "metrics.json").read_text())
    assert written["metrics"]["test/loss"] == metrics["test/loss"]


@pytest.mark.slow
def test_a_resumed_run_keeps_its_model_and_data_names(tmp_path: Path) -> None:
    """metrics.json and the summary name the run's own model and data, not the defaults of the command line."""
    first = run_cli("model=linear_ae", "data=shapes", *TINY["shapes"], *FAST, f"paths.log_dir={tmp_path}")
    assert first.returncode == 0, first.stderr[-2000:]
    run = the_run(tmp_path)
    again = run_cli(f"resume={run}", "trainer.max_epochs=2", f"paths.log_dir={tmp_path}")
    assert again.returncode == 0, again.stderr[-2000:]
    written = metrics_of(run)
    assert (written["model"], written["data"]) == ("linear_ae", "shapes")
    assert "linear_ae on shapes" in again.stdout


@pytest.mark.slow
@pytest.mark.parametrize("sig,when", [(signal.SIGTERM, 0.2), (signal.SIGTERM, "folder"), (signal.SIGINT, "folder")])
def test_a_signal_before_training_starts_ends_the_run_cleanly(tmp_path: Path, sig: signal.Signals,
                                                               when: float | str) -> None:
    """In the first second (Hydra not yet imported) or once the run folder exists (torch and the data still
    loading): the documented exit code, one line, and no half-made folder."""
    env = {**os.environ, "HYDRA_FULL_ERROR": "0", "PYTHONWARNINGS": "ignore"}
    command = Path(sys.executable).parent / "genlab-train"  # as a user starts it (python -m imports Hydra first)
    proc = subprocess.Popen([str(command), "model=ae", "data=digits", *TINY["digits"], *FAST,
                             f"paths.log_dir={tmp_path}", f"paths.cache_dir={CACHE}"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    if when == "folder":  # Hydra has made the run folder; train() is importing torch or building the data
        deadline = time.time() + 60
        while not list(tmp_path.glob("train/runs/*/.hydra/config.yaml")) and time.time() < deadline:
            time.sleep(0.02)
    else:
        time.sleep(when)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == {signal.SIGTERM: 143, signal.SIGINT: 130}[sig], err[-2000:]
    assert "Traceback" not in err and f"stopped by {sig.name}" in err, err[-2000:]
    assert not list(tmp_path.glob("train/runs/*")), "a half-made run folder was left"
