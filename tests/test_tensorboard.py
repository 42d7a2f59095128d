"""What TensorBoard shows of a run: one TensorBoard run per run folder (a resumed run writes on in it), the test
scalars at the training step they were measured at, and the HParams row holding the settings a user chose."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import TINY, run_cli
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import metadata

CHOSEN = ["model=vae", *TINY["digits"], "trainer=debug", "model.optimizer.lr=0.002"]


@pytest.fixture(scope="module")
def resumed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A VAE run of one epoch (two steps) with the TensorBoard logger, then resumed for a second epoch."""
    logs = tmp_path_factory.mktemp("tb")
    first = run_cli(*CHOSEN, "trainer.enable_progress_bar=false", f"paths.log_dir={logs}")
    assert first.returncode == 0, first.stderr[-2000:]
    (run,) = (logs / "train" / "runs").iterdir()
    again = run_cli(f"resume={run}", "trainer.max_epochs=2", "trainer.enable_progress_bar=false",
                    f"paths.log_dir={logs}")
    assert again.returncode == 0, again.stderr[-2000:]
    return run


def board(run: Path) -> EventAccumulator:
    """The events of the run's TensorBoard run (the one named at its start)."""
    (folder,) = (run / "tensorboard").glob("vae-digits-*")
    events = EventAccumulator(str(folder), size_guidance={"scalars": 0})
    events.Reload()
    return events


@pytest.mark.slow
def test_a_resumed_run_writes_on_in_its_own_tensorboard_run(resumed: Path) -> None:
    names = [p.name for p in (resumed / "tensorboard").iterdir()]
    assert names == ["vae-digits-data.max_train=96-data.batch_size=32-trainer=debug-model.optimizer.lr=0.002"]
    assert [e.step for e in board(resumed).Scalars("train/loss_step")] == [0, 1, 2, 3]  # one curve, both epochs


def test_test_scalars_sit_at_the_last_training_step(resumed: Path) -> None:
    events = board(resumed)
    tests = [t for t in events.Tags()["scalars"] if t.startswith("test/")]
    assert "test/loss" in tests and "test/fid" in tests
    for tag in tests:  # after 2 steps, and after 4 once resumed; none at step 0
        assert [e.step for e in events.Scalars(tag)] == [2, 4], tag
    recorded = json.loads((resumed / "metrics.json").read_text())["metrics"]
    assert events.Scalars("test/loss")[-1].value == pytest.approx(recorded["test/loss"], rel=1e-6)


def test_hparams_hold_the_keys_the_user_chose(resumed: Path) -> None:
    content = board(resumed).PluginTagToContent(metadata.PLUGIN_NAME)
    # no experiment summary: TensorBoard builds it from all the runs it shows, marking the keys that differ
    assert metadata.EXPERIMENT_TAG not in content
    start = metadata.parse_session_start_info_plugin_data(content[metadata.SESSION_START_INFO_TAG])
    values = {k: v.WhichOneof("kind") and getattr(v, v.WhichOneof("kind")) for k, v in start.hparams.items()}
    assert values == {"model": "vae", "data": "digits", "seed": 0, "data.max_train": 96, "data.batch_size": 32,
                      "trainer": "debug", "model.optimizer.lr": 0.002}


def test_a_resumed_run_without_its_tensorboard_folder_gets_its_first_name(resumed: Path, tmp_path: Path) -> None:
    import shutil

    from omegaconf import OmegaConf

    from genlab.run import resumed_config

    copy = tmp_path / "run"
    shutil.copytree(resumed, copy, ignore=shutil.ignore_patterns("tensorboard"))
    (copy / "metrics.json").unlink()  # a run stopped before its test: there is something left to do
    stored = resumed_config(OmegaConf.create({"resume": str(copy), "trust": False}))
    assert stored.logger.tensorboard.version == [p.name for p in (resumed / "tensorboard").iterdir()][0]
