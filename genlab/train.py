"""genlab-train: compose the config, train, test on the best checkpoint, write the metrics.

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
    loggers = build_group(cfg.get("logger"))
    trainer: pl.Trainer = build(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    log_config(loggers, cfg)

    metrics: dict[str, float] = {}
    if cfg.train:
        trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.ckpt_path, weights_only=False)
        metrics.update({k: float(v) for k, v in trainer.callback_metrics.items()})
    if cfg.test:
        ckpt = cfg.ckpt_path if not cfg.train else None
        ckpt_cb = trainer.checkpoint_callback
        if cfg.train and ckpt_cb is not None and getattr(ckpt_cb, "best_model_path", ""):
            ckpt = ckpt_cb.best_model_path  # test the best model, not the last one
        # weights_only=False: this run wrote the checkpoint itself (it holds the net builders)
        trainer.test(model, datamodule=datamodule, ckpt_path=ckpt, weights_only=False, verbose=False)
        metrics.update({k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("test/")})

    out_dir = Path(cfg.paths.output_dir)
    ckpt_cb = trainer.checkpoint_callback
    result = {
        "model": _choice("model"), "data": _choice("data"), "seed": cfg.seed,
        "best_checkpoint": getattr(ckpt_cb, "best_model_path", None) or None,
        "metrics": dict(sorted(metrics.items())),
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "metrics.json").write_text(json.dumps(result, indent=2))
    print_summary(result, out_dir, loggers)
    return metrics


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
            msg = f"model={_choice('model')} cannot run on data={_choice('data')}: {msg}"
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
