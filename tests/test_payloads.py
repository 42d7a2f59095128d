"""A run folder from someone else runs no code: every way a folder enters genlab (resume=, genlab-eval,
genlab-sample, model.autoencoder=, model.clip=) against configs naming a dangerous callable under many
spellings (the function itself, its defining module, a re-export in genlab, an alias under torch.nn, a genlab
loader told to trust, numpy's and joblib's loaders, builtins, a shell call through a genlab module, a target
read from the environment). Without trust no marker is written and the answer is a one-line refusal naming
the key and how to vouch; with trust the payload provably runs; genlab's own folders load without trust."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import run_cli
from payloads import ENTRIES, SPELLINGS, copy_run, enter, plant, tiny_run

from genlab.errors import UserError
from genlab.safety import check_config, problems

pytestmark = pytest.mark.slow  # the payload matrix enters finished runs through genlab's entry points

@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_run(tmp_path_factory.mktemp("logs"))


@pytest.mark.parametrize("spelling", list(SPELLINGS))
def test_no_entry_point_runs_a_payload_without_trust(finished_run: Path, tmp_path: Path, spelling: str,
                                                     capsys: pytest.CaptureFixture) -> None:
    for entry in ENTRIES:
        run = copy_run(finished_run, tmp_path / "someone_elses_run")
        marker = tmp_path / "marker"
        plant(run, spelling, marker)
        outcome = enter(entry, run, trust=False, logs=tmp_path / "logs")
        err = capsys.readouterr().err
        assert not marker.exists(), (entry, spelling, outcome)
        message = err if outcome.startswith("exit") else outcome
        assert outcome == "exit 2" or outcome.startswith("refused: "), (entry, spelling, outcome)
        assert "encoder" in message and "trust=true" in message and "--trust" in message, (entry, message)
        assert len(message.strip().splitlines()) == 1 and "Traceback" not in message, message
    assert not (tmp_path / "logs" / "train").exists() or not any((tmp_path / "logs" / "train").rglob("*.ckpt"))


@pytest.mark.parametrize("entry", ["genlab-eval", "model.autoencoder="])
@pytest.mark.parametrize("spelling", ["re-export in genlab", "genlab loader, trust=true", "numpy.load",
                                      "alias under torch.nn", "target from env"])
def test_the_payloads_are_real_and_run_when_the_user_vouches(finished_run: Path, tmp_path: Path, spelling: str,
                                                             entry: str) -> None:
    run = copy_run(finished_run, tmp_path / "someone_elses_run")
    marker = tmp_path / "marker"
    plant(run, spelling, marker)
    enter(entry, run, trust=True, logs=tmp_path / "logs")
    assert marker.exists(), (entry, spelling)


@pytest.mark.parametrize("entry", ["genlab-eval", "genlab-sample", "model.autoencoder=", "resume="])
def test_genlab_s_own_folder_enters_without_trust(finished_run: Path, tmp_path: Path, entry: str,
                                                 capsys: pytest.CaptureFixture) -> None:
    run = copy_run(finished_run, tmp_path / "my_run")
    outcome = enter(entry, run, trust=False, logs=tmp_path / "logs")
    if entry == "genlab-sample":  # an autoencoder draws no samples: refused for that, not for trust
        assert outcome == "exit 2" and "cannot sample" in capsys.readouterr().err
    else:
        assert outcome == "ok", outcome


def test_the_check_follows_names_to_the_objects_they_reach() -> None:
    ok = {"model": {"_target_": "genlab.models.vae.VAE", "net": {"_target_": "genlab.nets.autoencoder.mlp_pair"},
                    "optimizer": {"_target_": "torch.optim.Adam", "_partial_": True},
                    "act": {"_target_": "torch.nn.modules.activation.GELU"},  # torch.nn.GELU where it is defined
                    "scheduler": {"_target_": "torch.optim.lr_scheduler.CosineAnnealingLR"}},
          "trainer": {"_target_": "pytorch_lightning.Trainer",
                      "plugins": [{"_target_": "genlab.checkpoints.AtomicCheckpointIO"}]},
          "logger": {"tb": {"_target_": "pytorch_lightning.loggers.TensorBoardLogger",
                            "save_dir": "${paths.output_dir}", "name": "${genlab_run_name:}"}},
          "paths": {"output_dir": "${hydra:runtime.output_dir}", "root": "${genlab_cwd:}"}}
    assert problems(ok) == []
    bad = {
        "genlab.checkpoints.torch.load": "torch.serialization.load",  # a re-export: the object it is
        "genlab.runfolder.json.loads": "not a class",  # a function of another module, through a genlab one
        "genlab.data.base.DataInfo.from_dict": "not a class",  # a genlab classmethod is not a class
        "genlab.checkpoints.read_checkpoint": "not a class",  # a genlab function outside genlab.nets
        "torch.hub.load": "not a class", "torch.utils.data.Dataset": "not a class",
        "torch.optim.Adam.step": "not a class", "os.system": "outside", "pickle.loads": "outside",
        # loggers that send the run to a server the folder names, and the callback made of callables
        "pytorch_lightning.loggers.MLFlowLogger": "", "pytorch_lightning.loggers.WandbLogger": "",
        "pytorch_lightning.callbacks.LambdaCallback": "",
    }
    for target, why in bad.items():
        found = problems({"model": {"x": {"_target_": target}}})
        assert len(found) == 1 and "model.x._target_" in found[0], (target, found)
        assert why in found[0] or "genlab puts in configs" in found[0], (target, found)
    for value in ("${oc.env:HOME}", "${oc.decode:'{a: 1}'}", "a${oc.create:{}}", "${oc.select:x,${oc.env:Y}}"):
        (found,) = problems({"data": {"root": value}})
        assert "data.root" in found and "resolver" in found
    assert problems({"data": {"root": "${paths.root}/x", "seed": "${seed}"}}) == []  # plain references
    with pytest.raises(UserError, match="trust=true"):
        check_config({"model": {"_target_": "os.system"}}, "a folder")
    check_config({"model": {"_target_": "os.system"}}, "a folder", trust=True)  # the user vouches


def test_a_trust_key_in_a_folder_s_config_vouches_for_nothing(finished_run: Path, tmp_path: Path) -> None:
    from omegaconf import OmegaConf

    run = copy_run(finished_run, tmp_path / "someone_elses_run")
    plant(run, "builtins.exec", tmp_path / "marker")
    config = run / ".hydra" / "config.yaml"
    cfg = OmegaConf.load(config)
    cfg.trust, cfg.trusted_modules = True, ["builtins", "os"]
    OmegaConf.save(cfg, config)
    for entry in ("resume=", "genlab-eval"):
        outcome = enter(entry, run, trust=False, logs=tmp_path / "logs")
        assert outcome == "exit 2" or outcome.startswith("refused: "), (entry, outcome)
        assert not (tmp_path / "marker").exists(), entry
    r = run_cli(f"resume={run}", f"paths.log_dir={tmp_path / 'logs'}")  # as a user types it
    assert r.returncode == 2 and "trust=true" in r.stderr and "Traceback" not in r.stderr, r.stderr[-1500:]
    assert not (tmp_path / "marker").exists()
