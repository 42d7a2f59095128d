"""Crafted run folders for the safety tests and scripts/payload_matrix.py: a genlab run folder given to every
way a folder enters genlab (resume=, genlab-eval, genlab-sample, model.autoencoder=, model.clip=), with a
config naming a dangerous callable under several spellings. Each payload only writes a marker file, so
whether code ran is a file that exists or not.

Uses only what every genlab entry point offers (their mains and the frozen-component loaders), so the same
matrix runs against older genlab code for a before/after table.
"""

from __future__ import annotations

import os
import pickle
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf


class Exec:
    """Pickles as a call of exec writing ``marker``: any unpickling of it runs code."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self) -> tuple:
        return exec, (f"open({self.marker!r}, 'w').write('code ran')",)


def tiny_run(logs: Path) -> Path:
    """One finished genlab-train run (a tiny autoencoder on digits) under ``logs``, as a user makes it."""
    from conftest import FAST, TINY, run_cli

    r = run_cli("model=ae", "data=digits", *TINY["digits"], *FAST, f"paths.log_dir={logs}")
    assert r.returncode == 0, r.stderr[-2000:]
    (run,) = (logs / "train" / "runs").iterdir()
    return run


def write_code(marker: Path) -> str:
    return f"open({str(marker)!r}, 'w').write('code ran')"


# spelling -> the node that runs the payload (given the folder's own payload file and the marker)
SPELLINGS: dict[str, Callable[[Path, Path], dict[str, Any]]] = {
    "torch.load": lambda f, m: {"_target_": "torch.load", "f": str(f), "weights_only": False},
    "torch.serialization.load": lambda f, m: {"_target_": "torch.serialization.load", "f": str(f),
                                              "weights_only": False},
    "re-export in genlab": lambda f, m: {"_target_": "genlab.checkpoints.torch.load", "f": str(f),
                                         "weights_only": False},
    "alias under torch.nn": lambda f, m: {"_target_": "torch.nn.modules.module.torch.serialization.load",
                                          "f": str(f), "weights_only": False},
    "genlab loader, trust=true": lambda f, m: {"_target_": "genlab.checkpoints.read_checkpoint", "path": str(f),
                                               "trust": True},
    "numpy.load": lambda f, m: {"_target_": "numpy.load", "file": str(f), "allow_pickle": True},
    "joblib.load": lambda f, m: {"_target_": "joblib.load", "filename": str(f)},
    "builtins.exec": lambda f, m: {"_target_": "builtins.exec", "_args_": [write_code(m)]},
    "os.system via genlab": lambda f, m: {"_target_": "genlab.files.os.system", "_args_": [f"touch {m}"]},
    "target from env": lambda f, m: {"_target_": "${oc.env:GENLAB_PAYLOAD_TARGET}", "f": str(f),
                                     "weights_only": False},
}
ENTRIES = ("resume=", "genlab-eval", "genlab-sample", "model.autoencoder=", "model.clip=")


def plant(run: Path, spelling: str, marker: Path) -> None:
    """Put the payload into a copy of a finished run folder: its own pickle file, named by a node that replaces
    the encoder in the folder's config (.hydra/config.yaml) and in the config its checkpoints carry."""
    payload = run / "payload.pkl"
    payload.write_bytes(pickle.dumps(Exec(marker)))
    node = SPELLINGS[spelling](payload, marker)
    os.environ["GENLAB_PAYLOAD_TARGET"] = "torch.load"
    config = run / ".hydra" / "config.yaml"
    cfg = OmegaConf.load(config)
    cfg.model.encoder = node
    OmegaConf.save(cfg, config)
    for ckpt in (run / "checkpoints").glob("*.ckpt"):
        state = torch.load(ckpt, weights_only=True)
        state["genlab"]["model_config"]["encoder"] = node
        torch.save(state, ckpt)


def _trust(flag: bool) -> None:
    try:
        from genlab.safety import set_user_trust
    except ImportError:  # older genlab: frozen components had no notion of the user's trust
        return
    set_user_trust(flag)


def load_component(key: str, run: Path) -> None:
    """Load ``run`` as the frozen component ``key`` (model.autoencoder, model.clip) as the recipe does."""
    try:
        from genlab.checkpoints import frozen_component
    except ImportError:  # older genlab: the models loaded their components themselves
        if key == "model.autoencoder":
            from genlab.models.latent_diffusion import load_autoencoder

            load_autoencoder(str(run))
        else:
            from genlab.models.caption_diffusion import CaptionDDPM

            CaptionDDPM(clip=str(run), data_info=None)
        return
    from omegaconf import OmegaConf

    from genlab.models.caption_diffusion import CaptionDDPM
    from genlab.models.latent_diffusion import LatentDDPM

    name = key.split(".")[1]
    spec = {**LatentDDPM.frozen_runs, **CaptionDDPM.frozen_runs}[name]
    frozen_component(OmegaConf.create({name: str(run)}), name, key, spec, None)


def enter(entry: str, run: Path, trust: bool, logs: Path) -> str:
    """Give the folder to genlab by ``entry``; returns how it ended: "refused: <message>", "exit <code>",
    "error: <exception>" or "ok"."""
    from genlab.errors import UserError

    try:
        if entry == "genlab-eval":
            from genlab.evaluate import main

            main([str(run), *(["--trust"] if trust else [])])
        elif entry == "genlab-sample":
            from genlab.sample import main

            main([str(run), "-n", "2", "--out", str(logs / "s.png"), *(["--trust"] if trust else [])])
        elif entry == "resume=":
            from hydra import compose, initialize_config_dir

            from genlab.config import conf_dir
            from genlab.train import train

            # a stopped run, as a colleague's run to continue would be: resume= builds its model
            (run / "interrupted.json").write_text('{"signal": "SIGTERM", "stage": "fit"}')
            with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
                cfg = compose("train", overrides=[f"resume={run}", f"trust={str(trust).lower()}",
                                                  f"paths.log_dir={logs}", f"paths.output_dir={logs / 'new'}"])
            train(cfg)
        elif entry in ("model.autoencoder=", "model.clip="):
            _trust(trust)
            load_component(entry.strip("="), run)
        else:
            raise ValueError(entry)
    except SystemExit as e:
        return f"exit {e.code}"
    except UserError as e:
        return f"refused: {e}"
    except Exception as e:
        return f"error: {type(e).__name__}: {str(e)[:200]}"
    finally:
        _trust(False)
    return "ok"


def copy_run(run: Path, where: Path) -> Path:
    if where.exists():
        shutil.rmtree(where)
    shutil.copytree(run, where)
    return where
