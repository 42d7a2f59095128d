"""genlab-eval on a run directory written by genlab.train.train: the sample-quality metrics of a
VAE run, reproduced from its checkpoint through the same Evaluator; clear errors for other folders."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from conftest import FAST, TINY
from omegaconf import OmegaConf

from genlab.evaluate import find_checkpoint, load_run, main
from genlab.train import train


def test_vae_run_reports_sample_quality_and_genlab_eval_reproduces_it(make_cfg, capsys, tmp_path) -> None:
    cfg = make_cfg("model=vae", "data=digits", *TINY["digits"], *FAST)
    metrics = train(cfg)
    for name in ("fid", "fid_floor", "kid", "kid_floor", "mmd2", "mmd2_floor", "precision", "recall"):
        assert f"test/{name}" in metrics
    assert 0 <= metrics["test/precision"] <= 1 and 0 <= metrics["test/recall"] <= 1
    assert metrics["test/fid"] > metrics["test/fid_floor"]  # two training batches: far from real digits
    run = Path(cfg.paths.output_dir)
    (run / ".hydra").mkdir()
    OmegaConf.save(cfg, run / ".hydra" / "config.yaml")  # what Hydra writes into every run directory
    capsys.readouterr()
    main([str(run), "--out", str(tmp_path / "table.csv")])
    out = capsys.readouterr().out
    assert "fid" in out and "neg_elbo" in out and run.name in out and "VAE" in out, out[-4000:]
    with (tmp_path / "table.csv").open() as f:
        (row,) = list(csv.DictReader(f))
    for name in ("test/fid", "test/fid_floor", "test/kid", "test/precision", "test/neg_elbo"):  # the same path
        assert float(row[name]) == pytest.approx(metrics[name], rel=1e-6, abs=1e-9)


def test_checkpoint_lookup_best_moved_and_last(tmp_path) -> None:
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "last.ckpt").touch()
    assert find_checkpoint(run) == run / "checkpoints" / "last.ckpt"
    (run / "checkpoints" / "epoch_003.ckpt").touch()  # metrics.json names it where the run was written
    (run / "metrics.json").write_text(json.dumps({"best_checkpoint": "/elsewhere/checkpoints/epoch_003.ckpt"}))
    assert find_checkpoint(run) == run / "checkpoints" / "epoch_003.ckpt"


def test_folders_that_are_not_runs_exit_with_a_message(tmp_path, capsys) -> None:
    with pytest.raises(SystemExit) as e:
        main([str(tmp_path)])
    err = capsys.readouterr().err
    assert e.value.code == 2 and f"no genlab run in {tmp_path}" in err and "Traceback" not in err
    (tmp_path / ".hydra").mkdir()
    OmegaConf.save(OmegaConf.create({"model": {"_target_": "x.Y"}, "data": {"_target_": "x.Z"}}),
                   tmp_path / ".hydra" / "config.yaml")
    with pytest.raises(SystemExit) as e:  # a config naming code outside genlab: not run without --trust
        main([str(tmp_path)])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "model._target_=x.Y names nothing genlab may build" in err and "--trust" in err
    OmegaConf.save(OmegaConf.create({"model": {"_target_": "genlab.models.pca.PCA"},
                                     "data": {"_target_": "genlab.data.builtin.DigitsDataModule"}}),
                   tmp_path / ".hydra" / "config.yaml")
    with pytest.raises(SystemExit) as e:
        main([str(tmp_path)])
    assert e.value.code == 2 and "has no checkpoint" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main([str(tmp_path / "missing")])
    assert e.value.code == 2 and "missing does not exist" in capsys.readouterr().err


def test_relative_data_paths_are_read_from_where_the_run_was_started(tmp_path, monkeypatch) -> None:
    run = tmp_path / "outputs" / "run"
    (run / ".hydra").mkdir(parents=True)
    (run / "checkpoints").mkdir()
    (run / "checkpoints" / "last.ckpt").touch()
    data = {"_target_": "x.Z", "root": "../shared/data/mnist10k", "path": "/abs/folder"}
    OmegaConf.save(OmegaConf.create({"model": {"_target_": "x.Y"}, "data": data}), run / ".hydra" / "config.yaml")
    OmegaConf.save(OmegaConf.create({"hydra": {"runtime": {"cwd": "/work/project"}}}), run / ".hydra" / "hydra.yaml")
    monkeypatch.chdir(tmp_path)  # genlab-eval run from somewhere else
    cfg, _ = load_run(run, trust=True)  # its stand-in targets are not genlab's
    assert cfg.data.root == "/work/project/../shared/data/mnist10k"
    assert cfg.data.path == "/abs/folder"  # absolute paths stay


def test_help_and_a_wrong_path_are_answered_without_torch(tmp_path: Path) -> None:
    """genlab-eval and genlab-sample say --help and refuse a missing or foreign folder before torch is imported."""
    import subprocess
    import sys

    script = f"""
import sys
from genlab import evaluate, sample
for main, args in ((evaluate.main, ["--help"]), (evaluate.main, ["{tmp_path}/nope"]),
                   (sample.main, ["--help"]), (sample.main, ["{tmp_path}/nope"]), (sample.main, ["{tmp_path}"])):
    try:
        main(args)
    except SystemExit as e:
        print("exit", e.code)
print("imported:", sorted(m for m in ("torch", "pytorch_lightning") if m in sys.modules))
"""
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    assert [line for line in res.stdout.splitlines() if line.startswith("exit")] == [
        "exit 0", "exit 2", "exit 0", "exit 2", "exit 2"]
    assert "imported: []" in res.stdout
    assert "usage: genlab-eval" in res.stdout and "usage: genlab-sample" in res.stdout
    errors = res.stderr.splitlines()
    assert f"genlab-eval: error: {tmp_path}/nope does not exist." in errors
    assert f"genlab-sample: error: {tmp_path}/nope is not a folder." in errors
    assert any(e.startswith(f"genlab-sample: error: {tmp_path} is not a genlab run") for e in errors)
