"""Opening someone else's run must not run their code: a crafted checkpoint (a pickle payload) and a
crafted config go through every load path — genlab-eval RUN_DIR (last.ckpt, metrics.json's
best_checkpoint), ckpt_path=, train=false ckpt_path=, resume= — and each is refused with a message
naming the file and how to vouch for it, while the payload provably runs under a plain torch.load.
Older checkpoints that need unpickling are converted with ``genlab-eval --trust --convert``."""

from __future__ import annotations

import functools
import json
import shutil
from pathlib import Path

import pytest
import torch
from conftest import FAST, TINY, run_cli
from omegaconf import OmegaConf
from payloads import Exec, tiny_run

from genlab.evaluate import find_checkpoint, main

pytestmark = pytest.mark.slow  # crafted folders entered through genlab's entry points, most in subprocesses

@pytest.fixture(scope="module")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One finished genlab-train run (tiny AE on digits), copied by each test before it is tampered with."""
    return tiny_run(tmp_path_factory.mktemp("logs"))


@pytest.fixture
def run_copy(trained_run: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "someone_elses_run"
    shutil.copytree(trained_run, copy)
    return copy


def plant_payload(checkpoint: Path, marker: Path) -> None:
    """The real checkpoint, with one extra entry that runs code when unpickled."""
    state = torch.load(checkpoint, weights_only=True)
    state["extra"] = Exec(marker)
    torch.save(state, checkpoint)
    torch.load(checkpoint, weights_only=False)  # the payload is real: a plain load runs it
    assert marker.read_text() == "code ran"
    marker.unlink()


def eval_cli(*argv: str, capsys: pytest.CaptureFixture) -> tuple[int, str]:
    with pytest.raises(SystemExit) as e:
        main(list(argv))
    return int(e.value.code), capsys.readouterr().err


def test_crafted_checkpoint_is_refused_by_every_load_path(run_copy: Path, tmp_path: Path, capsys) -> None:
    marker = tmp_path / "pwned"
    last = run_copy / "checkpoints" / "last.ckpt"
    plant_payload(last, marker)
    (run_copy / "metrics.json").write_text(json.dumps({"best_checkpoint": "checkpoints/last.ckpt"}))

    code, err = eval_cli(str(run_copy), capsys=capsys)  # genlab-eval RUN_DIR
    assert code == 2 and str(last) in err and "--trust" in err and "Traceback" not in err
    logs = tmp_path / "logs"
    for args in ([f"ckpt_path={last}"], ["train=false", f"ckpt_path={last}"], [f"resume={run_copy}"]):
        extra = [] if args[0].startswith("resume") else ["model=ae", "data=digits", *TINY["digits"], *FAST]
        r = run_cli(*extra, *args, f"paths.log_dir={logs}")
        assert r.returncode == 2, (args, r.stderr[-1500:])
        assert str(last) in r.stderr and "--trust" in r.stderr and "Traceback" not in r.stderr, args
        assert not (logs / "train" / "runs").exists() or not any((logs / "train" / "runs").iterdir()), args
    assert not marker.exists()


def test_best_checkpoint_outside_the_run_folder_is_never_opened(run_copy: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere" / "checkpoints" / "evil.ckpt"
    elsewhere.parent.mkdir(parents=True)
    shutil.copy(run_copy / "checkpoints" / "last.ckpt", elsewhere)
    plant_payload(elsewhere, tmp_path / "pwned")
    (run_copy / "metrics.json").write_text(json.dumps({"best_checkpoint": str(elsewhere)}))
    assert find_checkpoint(run_copy) == run_copy / "checkpoints" / "last.ckpt"  # the run's own file
    (run_copy / "metrics.json").write_text(json.dumps({"best_checkpoint": "../../elsewhere/checkpoints/x.ckpt"}))
    assert find_checkpoint(run_copy) == run_copy / "checkpoints" / "last.ckpt"


@pytest.mark.parametrize("target", ["torch.load", "joblib.load", "numpy.load", "builtins.exec", "os.system"])
def test_crafted_config_is_refused_by_genlab_eval_and_resume(run_copy: Path, tmp_path: Path, capsys,
                                                              target: str) -> None:
    config = run_copy / ".hydra" / "config.yaml"
    cfg = OmegaConf.load(config)
    cfg.model.encoder = {"_target_": target, "_args_": [str(tmp_path / "x")]}
    OmegaConf.save(cfg, config)
    code, err = eval_cli(str(run_copy), capsys=capsys)
    assert code == 2 and str(config) in err and target in err and "--trust" in err
    if target == "torch.load":  # the slow path once: genlab-train resume= refuses it too
        r = run_cli(f"resume={run_copy}", f"paths.log_dir={tmp_path / 'logs'}")
        assert r.returncode == 2 and str(config) in r.stderr and "trust=true" in r.stderr, r.stderr[-1500:]
    assert not (tmp_path / "x").exists()


def test_checkpoint_carrying_foreign_code_in_its_config_is_refused(run_copy: Path, tmp_path: Path) -> None:
    last = run_copy / "checkpoints" / "last.ckpt"
    state = torch.load(last, weights_only=True)
    state["genlab"]["model_config"]["_target_"] = "os.system"  # plain strings: loads weights-only
    torch.save(state, last)
    r = run_cli("model=ae", "data=digits", *TINY["digits"], *FAST, f"ckpt_path={last}",
                f"paths.log_dir={tmp_path / 'logs'}")
    assert r.returncode == 2 and f"checkpoint {last}" in r.stderr and "os.system" in r.stderr, r.stderr[-1500:]
    assert "trust=true" in r.stderr


def test_older_pickled_checkpoints_are_refused_then_converted(run_copy: Path, capsys) -> None:
    from genlab.data.base import DataInfo

    last = run_copy / "checkpoints" / "last.ckpt"
    state = torch.load(last, weights_only=True)
    info = DataInfo.from_dict(state.pop("genlab")["data_info"])
    # what older genlab wrote: hyperparameters holding Python objects (builders, the DataInfo)
    state["hyper_parameters"] = {"data_info": info, "encoder": functools.partial(torch.nn.Linear, 4, 2)}
    torch.save(state, last)
    for other in (run_copy / "checkpoints").glob("*.ckpt"):
        if other != last:
            other.unlink()
    (run_copy / "metrics.json").unlink()
    code, err = eval_cli(str(run_copy), capsys=capsys)
    assert code == 2 and str(last) in err and "--trust --convert" in err
    code, err = eval_cli(str(run_copy), "--convert", capsys=capsys)  # it unpickles: only with --trust
    assert code == 2 and "--trust" in err
    main([str(run_copy), "--trust", "--convert"])
    assert "converted" in capsys.readouterr().out
    assert (run_copy / "checkpoints" / "last.ckpt.pickled").is_file()  # the original is kept
    safe = torch.load(last, weights_only=True)
    assert "hyper_parameters" not in safe and DataInfo.from_dict(safe["genlab"]["data_info"]) == info
    assert torch.equal(next(iter(safe["state_dict"].values())), next(iter(state["state_dict"].values())))
    main([str(run_copy), "--n-samples", "50"])  # now an ordinary, safe run
    assert run_copy.name in capsys.readouterr().out
