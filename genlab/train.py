"""genlab-train: compose the config, train, test the best checkpoint (the latest for models whose
val/loss cannot rank them), write the metrics.

    genlab-train                                   # the default: an MLP autoencoder on digits
    genlab-train model=conv_ae data=mnist data.root=/path/to/mnist
    genlab-train -m model=ae,dae seed=0,1           # one directory and metrics.json per job

Only Hydra and the config schemas are imported at start: ``--help`` and shell completion never
load torch or Lightning, which ``train`` imports when a run really starts.
"""

from __future__ import annotations

import sys
from typing import Any

import hydra
from omegaconf import DictConfig

from genlab.config import CONFIG_PATH, setup_hydra, validate
from genlab.errors import IncompatibleError, UserError

setup_hydra()


def train(cfg: DictConfig) -> dict[str, Any]:
    """The recipe. Returns the metrics written to ``metrics.json``."""
    import pytorch_lightning as pl
    import torch

    from genlab import run
    from genlab.callbacks.evaluator import Evaluator

    validate(cfg)  # types were checked while composing; ranges and choices here
    run.route_framework_logs()
    torch.set_float32_matmul_precision(cfg.float32_matmul_precision)
    pl.seed_everything(cfg.seed, workers=True, verbose=False)

    datamodule = run.build(cfg.data)
    model = run.build(cfg.model, data_info=datamodule.info)  # checks the model/data pair
    datamodule.prepare_data()
    datamodule.setup("fit")  # missing files fail here, before any training
    run.log.info("data %s | model %s", datamodule.info.describe(), type(model).__name__)

    callbacks = run.checkpoint_policy(run.build_group(cfg.get("callbacks")), model)
    loggers = run.build_group(cfg.get("logger"))
    trainer: pl.Trainer = run.build(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    run.log_config(loggers, cfg)

    metrics: dict[str, float] = {}
    if cfg.train:
        trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.ckpt_path, weights_only=False)
        metrics.update({k: float(v) for k, v in trainer.callback_metrics.items()})
    tested = run.checkpoint_to_test(trainer) if cfg.train else cfg.ckpt_path
    if cfg.test:
        # weights_only=False: this run wrote the checkpoint itself (it holds the net builders)
        trainer.test(model, datamodule=datamodule, ckpt_path=tested, weights_only=False, verbose=False)
        metrics.update({k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("test/")})
    run.finish(cfg, loggers, metrics, tested, [cb.last for cb in trainer.callbacks if isinstance(cb, Evaluator)])
    return metrics


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="train")
def _main(cfg: DictConfig) -> float | None:
    from genlab.run import choice, discard_failed_run

    try:
        metrics = train(cfg)
    except UserError as e:
        msg = str(e)
        if isinstance(e, IncompatibleError):
            msg = f"model={choice('model')} cannot run on data={choice('data')}: {e.reason}"
        print(f"genlab-train: error: {msg}", file=sys.stderr)
        discard_failed_run()
        sys.exit(e.exit_code)
    name = cfg.get("optimized_metric")
    return metrics.get(name) if name else None


def main() -> None:
    """Console-script entry point (``genlab-train``)."""
    _main()


if __name__ == "__main__":
    main()
