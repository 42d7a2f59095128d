"""genlab-train as a user runs it: the default job, Hydra's conveniences, multirun, and
bad input (a short message, a non-zero exit, no traceback, no existing run touched)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import run_cli

QUIET = ["trainer.enable_progress_bar=false", "trainer.enable_model_summary=false"]


@pytest.mark.slow
def test_default_job_trains_tests_and_says_where_everything_is(tmp_path: Path) -> None:
    # the default job (ae on digits), shortened to two batches per stage
    res = run_cli(f"paths.log_dir={tmp_path}", "trainer=debug", *QUIET)
    assert res.returncode == 0, res.stderr[-2000:]
    (run,) = (tmp_path / "train" / "runs").iterdir()
    tail = res.stdout.strip().splitlines()[-8:]
    assert any(line.startswith("run directory") and str(run) in line for line in tail)
    assert any(f"tensorboard --logdir {run / 'tensorboard'}" in line for line in tail)
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["model"] == "ae" and metrics["data"] == "digits"
    assert "test/sq_err_per_image" in metrics["metrics"]
    (board,) = (run / "tensorboard").iterdir()  # the run under its name: model, data, overrides
    assert board.name == "ae-digits-trainer=debug" and list(board.glob("events.out.tfevents.*"))
    assert (run / "images" / "reconstructions.png").is_file() and (run / "images" / "codes.png").is_file()
    assert (run / ".hydra" / "config.yaml").is_file()


def test_help_lists_groups_and_cfg_prints_the_composed_config() -> None:
    res = run_cli("--help")
    assert res.returncode == 0
    for word in ("model:", "data:", "trainer:", "conv_ae", "stacked_ae", "toy2d", "mnist"):
        assert word in res.stdout, word
    res = run_cli("--cfg", "job", "model=cae")
    assert res.returncode == 0
    assert "genlab.models.autoencoder.ContractiveAutoencoder" in res.stdout


@pytest.mark.slow
def test_multirun_gives_each_job_its_own_directory_and_metrics(tmp_path: Path) -> None:
    res = run_cli("-m", f"paths.log_dir={tmp_path}", "model=ae,pca", "seed=0,1", "trainer=debug", "logger=csv", *QUIET)
    assert res.returncode == 0, res.stderr[-2000:]
    (sweep,) = (tmp_path / "train" / "multiruns").iterdir()
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir() and p.name.isdigit())
    assert len(jobs) == 4
    seen = {(m["model"], m["seed"]) for m in (json.loads((j / "metrics.json").read_text()) for j in jobs)}
    assert seen == {("ae", 0), ("ae", 1), ("pca", 0), ("pca", 1)}


@pytest.mark.parametrize(
    "args,expected",
    [
        (["model=nope"], ["model=nope: model has no config 'nope'; choose one of ", "conv_ae", "stacked_ae"]),
        (["data=nope"], ["data=nope: data has no config 'nope'", "toy2d", "mnist"]),
        (["hydra/launcher=nope"], ["hydra/launcher has no config 'nope'", "basic", "joblib", "submitit_slurm"]),
        (["model.latent_dim=abc"], ["model.latent_dim", "could not be converted to Integer"]),
        (["trainer.max_epochs=-3"], ["trainer.max_epochs=-3 is out of range"]),
        (["data=toy2d", "data.kind=spiral"], ["data.kind='spiral' is not one of"]),
        (["data=mnist", "data.root={tmp}/nowhere"], ["train-images-idx3-ubyte", "data.download=true"]),
        (["model=conv_ae", "data=toy2d"], ["model=conv_ae cannot run on data=toy2d", "image data"]),
    ],
)
@pytest.mark.slow
def test_bad_input_is_a_clear_error_and_touches_no_run(tmp_path: Path, args: list[str], expected: list[str]) -> None:
    existing = tmp_path / "train" / "runs" / "2026-01-01_00-00-00-000000"
    existing.mkdir(parents=True)
    (existing / "metrics.json").write_text("{}")
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    res = run_cli(f"paths.log_dir={tmp_path}", "trainer=debug", *args)
    out = res.stdout + res.stderr
    assert res.returncode != 0
    assert "Traceback" not in out
    for text in expected:
        assert text in out, (text, out[-1500:])
    assert [p.name for p in (tmp_path / "train" / "runs").iterdir()] == [existing.name]
    assert (existing / "metrics.json").read_text() == "{}"


@pytest.mark.slow
def test_optuna_search_runs_trials_with_their_own_directories(tmp_path: Path) -> None:
    res = run_cli(
        f"paths.log_dir={tmp_path}", "hparams_search=ae_optuna", "hydra.sweeper.n_trials=2",
        f"hydra.sweeper.storage=sqlite:///{tmp_path}/study.db",  # a study kept in a database, as on a cluster
        "trainer=debug", "logger=csv", "callbacks=model_checkpoint", *QUIET,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    assert (tmp_path / "study.db").stat().st_size > 0
    (sweep,) = (tmp_path / "train" / "multiruns").iterdir()
    assert (sweep / "optimization_results.yaml").is_file()
    jobs = [p for p in sweep.iterdir() if (p / "metrics.json").is_file()]
    assert len(jobs) == 2
    losses = {p: json.loads((p / "metrics.json").read_text())["metrics"]["val/loss"] for p in jobs}
    best = min(losses, key=losses.get)  # the study minimises val/loss
    assert f"best job      : {best}" in res.stdout and (sweep / "summary.csv").is_file()


def test_an_optuna_trial_without_the_optimised_metric_ends_the_search_in_one_line(tmp_path: Path) -> None:
    """A metric of the right form that no run logs is known only once the first trial has finished: the search
    ends there with one line naming what the run did log, and the finished trial is kept (not a traceback of
    the sweeper's None)."""
    res = run_cli(f"paths.log_dir={tmp_path}", "hparams_search=ae_optuna", "hydra.sweeper.n_trials=2",
                  "optimized_metric=test/nope", "trainer=debug", "logger=csv", *QUIET)
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr[-2000:]
    [line] = [ln for ln in res.stderr.splitlines() if ln.startswith("genlab-train: error:")]
    assert "optimized_metric=test/nope: the run logged no such metric" in line and "val/loss" in line
    (sweep,) = (tmp_path / "train" / "multiruns").iterdir()
    assert [p.name for p in sweep.iterdir() if (p / "metrics.json").is_file()] == ["0"]


@pytest.mark.parametrize("args,needs", [
    (["-m", "hparams_search=ae_optuna"], "hparams_search=ae_optuna needs Hydra's Optuna sweeper"),
    (["-m", "hydra/sweeper=optuna", "seed=0,1"], "hydra/sweeper=optuna needs Hydra's Optuna sweeper"),
    (["-m", "hydra/launcher=joblib", "seed=0,1"], "hydra/launcher=joblib needs Hydra's joblib launcher"),
    (["-m", "hydra/launcher=submitit_local", "seed=0,1"], "hydra/launcher=submitit_local needs Hydra's submitit"),
    (["-m", "hydra/launcher=slurm", "seed=0,1"], "hydra/launcher=slurm needs Hydra's submitit launcher"),
])
def test_a_sweep_without_the_sweep_extra_says_what_to_install(tmp_path: Path, args: list[str], needs: str) -> None:
    """genlab installed without [sweep]: an empty package hydra_plugins first on the path hides the installed
    plugins, as Hydra's plugin scan sees them when they were never installed."""
    import os
    import subprocess
    import sys

    (tmp_path / "hydra_plugins").mkdir()
    (tmp_path / "hydra_plugins" / "__init__.py").write_text("")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]),
           "HYDRA_FULL_ERROR": "0"}
    res = subprocess.run([sys.executable, "-m", "genlab.train", *args, f"paths.log_dir={tmp_path / 'logs'}"],
                         capture_output=True, text=True, env=env, timeout=120)
    assert res.returncode == 2
    (line,) = res.stderr.strip().splitlines()  # one line, no traceback
    assert line.startswith(f"genlab-train: error: {needs}")
    assert line.endswith('which is not installed: pip install "genlab[sweep]"')
    assert not (tmp_path / "logs").exists()


def test_installed_sweep_plugins_pass_the_check() -> None:
    from genlab.config.preflight import missing_plugin

    for group, name in [("hparams_search", "ae_optuna"), ("hydra/launcher", "joblib"), ("hydra/launcher", "slurm"),
                        ("hydra/launcher", "basic"), ("model", "vae")]:
        assert missing_plugin(group, name) is None, (group, name)
