"""genlab-train: compose the config, train, test the best checkpoint (the latest for models whose
val/loss cannot rank them), write the metrics.

    genlab-train                                   # the default: an MLP autoencoder on digits
    genlab-train model=conv_ae data=mnist data.root=../shared/data/mnist10k
    genlab-train -m model=ae,dae seed=0,1           # one directory and metrics.json per job
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
from pathlib import Path
from typing import Any

import hydra
import pytorch_lightning as pl
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig
from pytorch_lightning.callbacks import ModelCheckpoint

from genlab.callbacks.evaluator import Evaluator
from genlab.config import project_root, setup_hydra, validate
from genlab.errors import IncompatibleError, UserError
from genlab.run import build, build_group, log_config, print_summary, quiet_framework_noise

log = logging.getLogger("genlab")
setup_hydra()


def train(cfg: DictConfig) -> dict[str, Any]:
    """The recipe. Returns the metrics written to ``metrics.json``."""
    validate(cfg)  # types were checked while composing; ranges and choices here
    quiet_framework_noise()
    torch.set_float32_matmul_precision(cfg.float32_matmul_precision)
    pl.seed_everything(cfg.seed, workers=True, verbose=False)

    datamodule = build(cfg.data)
    model = build(cfg.model, data_info=datamodule.info)  # checks the model/data pair
    datamodule.prepare_data()
    datamodule.setup("fit")  # missing files fail here, before any training
    log.info("data %s | model %s", datamodule.info.describe(), type(model).__name__)

    callbacks = build_group(cfg.get("callbacks"))
    if not model.ranks_checkpoints:  # its val/loss cannot pick a "best" epoch: the latest is tested
        callbacks = [cb for cb in callbacks if not (isinstance(cb, ModelCheckpoint) and cb.monitor)]
    loggers = build_group(cfg.get("logger"))
    trainer: pl.Trainer = build(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    log_config(loggers, cfg)

    metrics: dict[str, float] = {}
    if cfg.train:
        trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.ckpt_path, weights_only=False)
        metrics.update({k: float(v) for k, v in trainer.callback_metrics.items()})
    tested = checkpoint_to_test(trainer) if cfg.train else cfg.ckpt_path
    if cfg.test:
        # weights_only=False: this run wrote the checkpoint itself (it holds the net builders)
        trainer.test(model, datamodule=datamodule, ckpt_path=tested, weights_only=False, verbose=False)
        metrics.update({k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("test/")})

    out_dir = Path(cfg.paths.output_dir)
    units = {k: u for cb in trainer.callbacks if isinstance(cb, Evaluator) for k, u in cb.last.units.items()}
    result = {
        "model": _choice("model"), "data": _choice("data"), "seed": cfg.seed,
        "best_checkpoint": tested,
        "metrics": dict(sorted(metrics.items())),
        "units": dict(sorted(units.items())),
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "metrics.json").write_text(json.dumps(result, indent=2))
    print_summary(result, out_dir, loggers)
    return metrics


def checkpoint_to_test(trainer: pl.Trainer) -> str | None:
    """The checkpoint a finished fit is tested on: the best by a monitored metric when a checkpoint
    callback ranks them, else the newest one. Lightning saves only after an optimiser step, so a
    model fitted in closed form (pca) gets its last.ckpt written here. None without checkpointing."""
    callbacks = [cb for cb in trainer.checkpoint_callbacks if isinstance(cb, ModelCheckpoint)]
    ranked = [cb.best_model_path for cb in callbacks if cb.monitor]
    latest = [cb.best_model_path for cb in callbacks if not cb.monitor] + [cb.last_model_path for cb in callbacks]
    path = next((p for p in [*ranked, *latest] if p), None)
    if path is None and callbacks and callbacks[0].dirpath and trainer.global_step == 0:
        path = str(Path(callbacks[0].dirpath) / "last.ckpt")
        trainer.save_checkpoint(path)
    return path


def _choice(group: str) -> str | None:
    return HydraConfig.get().runtime.choices.get(group) if HydraConfig.initialized() else None


def _discard_failed_run(cfg: DictConfig) -> None:
    """Remove this process's fresh run directory if the run stopped before writing anything.

    Run directories are unique to the microsecond, so the directory is this run's own;
    anything with a checkpoint or metrics is kept.
    """
    try:
        out = Path(HydraConfig.get().runtime.output_dir)
    except ValueError:
        return
    if out.is_dir() and not (out / "checkpoints").exists() and not (out / "metrics.json").exists():
        shutil.rmtree(out, ignore_errors=True)


@hydra.main(version_base="1.3", config_path=os.path.join(project_root(), "conf"), config_name="train")
def _main(cfg: DictConfig) -> float | None:
    try:
        metrics = train(cfg)
    except UserError as e:
        msg = str(e)
        if isinstance(e, IncompatibleError):
            msg = f"model={_choice('model')} cannot run on data={_choice('data')}: {e.reason}"
        print(f"genlab-train: error: {msg}", file=sys.stderr)
        _discard_failed_run(cfg)
        sys.exit(e.exit_code)
    name = cfg.get("optimized_metric")
    return metrics.get(name) if name else None


def main() -> None:
    """Console-script entry point (``genlab-train``)."""
    _main()


if __name__ == "__main__":
    main()
