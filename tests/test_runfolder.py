"""A run folder has one process at a time: a second genlab-train in it (two resume= of one run, a resume while
the run still trains) is refused in one line, and a killed holder leaves no stale lock."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import FAST, TINY, run_cli
from omegaconf import OmegaConf

from genlab.errors import UserError
from genlab.runfolder import RunFolder
from genlab.train import train


def hold(folder: Path) -> subprocess.Popen:
    """Another process holding the folder's lock until it is killed."""
    code = textwrap.dedent(f"""
        import sys, time
        from genlab.runfolder import RunFolder
        with RunFolder({str(folder)!r}).lock():
            print("held", flush=True)
            time.sleep(300)
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_folder_held_by_another_process_is_refused_and_freed_when_it_dies(tmp_path: Path) -> None:
    holder = hold(tmp_path / "run")
    try:
        with pytest.raises(UserError, match=rf"in use by another genlab-train \(process {holder.pid}\)"):
            with RunFolder(tmp_path / "run").lock():
                pass
    finally:
        holder.kill()
        holder.wait()
    with RunFolder(tmp_path / "run").lock():  # the killed holder's lock ended with it
        with pytest.raises(UserError, match="in use"):  # and this process's own second claim is refused too
            with RunFolder(tmp_path / "run").lock():
                pass


def test_two_resumes_of_one_run_do_not_race(make_cfg, tmp_path: Path) -> None:
    cfg = make_cfg("model=ae", "data=digits", *TINY["digits"], *FAST, "trainer.max_epochs=1",
                   "model.latent_dim=4", "model.net.hidden=[16]")
    OmegaConf.update(cfg, "paths.output_dir", str(tmp_path / "run"))
    train(cfg)
    run = tmp_path / "run"
    (run / ".hydra").mkdir(exist_ok=True)
    OmegaConf.save(cfg, run / ".hydra" / "config.yaml")  # what genlab-train's Hydra app writes
    (run / "interrupted.json").write_text('{"signal": "SIGTERM", "stage": "fit"}')  # a stopped run to continue
    before = sorted(p.name for p in (run / "checkpoints").iterdir())
    holder = hold(run)  # a resume of it already running
    try:
        r = run_cli(f"resume={run}", f"paths.log_dir={tmp_path / 'logs'}")
    finally:
        holder.kill()
        holder.wait()
    assert r.returncode == 2 and f"{run} is in use by another genlab-train (process {holder.pid})" in r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr[-1500:]
    assert run.is_dir() and sorted(p.name for p in (run / "checkpoints").iterdir()) == before  # nothing touched
