"""The steps of a run that train.py names: building objects from config, the checkpoint policy,
and reporting (hyperparameters with the final metrics, metrics.json, the summary). Shared by
train.py, genlab-eval and the tests; imports Lightning, so train.py imports it only to run.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.loggers import Logger, TensorBoardLogger

from genlab.config.instantiation import build, build_group
from genlab.errors import UserError
from genlab.metrics.base import Scores

__all__ = ["build", "build_group", "checkpoint_policy", "checkpoint_to_test", "choice", "finish", "load_model"]

log = logging.getLogger("genlab")


class DropAdverts(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "Tip: For seamless" not in record.getMessage()


def route_framework_logs() -> None:
    """Keep the run's output about the run: drop Lightning's product tips and a deprecation warning
    raised inside Lightning itself on every fit; and send Lightning's own messages (devices,
    restored checkpoints, why fit stopped) to the run's log file as well as to the console."""
    import warnings

    logging.getLogger("pytorch_lightning.utilities.rank_zero").addFilter(DropAdverts())
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")
    lightning = logging.getLogger("pytorch_lightning")
    if not lightning.propagate:  # Lightning imported before Hydra set up logging keeps to its own handler
        for handler in logging.getLogger().handlers:  # Hydra's job logging: console and <run>/<task>.log
            if isinstance(handler, logging.FileHandler) and handler not in lightning.handlers:
                lightning.addHandler(handler)


def choice(group: str) -> str | None:
    """The option chosen for a config group in this Hydra run (model=vae -> "vae"); None outside one."""
    return HydraConfig.get().runtime.choices.get(group) if HydraConfig.initialized() else None


def discard_failed_run() -> None:
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


def load_model(model_cfg: DictConfig, checkpoint: str | Path, device: str = "cpu") -> Any:
    """The model class named by the model config's ``_target_``, restored from a checkpoint that genlab
    wrote: its hyperparameters hold the network builders and the DataInfo, so it rebuilds itself
    (which needs weights_only=False). An unreadable file is a UserError naming it."""
    from hydra.utils import get_class

    cls = get_class(model_cfg["_target_"])
    try:
        return cls.load_from_checkpoint(checkpoint, map_location=device, weights_only=False)
    except (OSError, RuntimeError, EOFError, KeyError) as e:
        raise UserError(f"could not load {cls.__name__} from {checkpoint}: {e}") from e


def checkpoint_policy(callbacks: list[Any], model: Any) -> list[Any]:
    """The callbacks a model trains with: a model whose val/loss cannot pick a "best" epoch
    (``ranks_checkpoints = False``) drops the checkpoint callbacks that rank by a monitored metric,
    so only the latest checkpoint is kept and tested."""
    if model.ranks_checkpoints:
        return callbacks
    return [cb for cb in callbacks if not (isinstance(cb, ModelCheckpoint) and cb.monitor)]


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


def hyperparameters(cfg: DictConfig) -> dict[str, Any]:
    """What a run's settings are, for the loggers: the model, data and trainer configs, the seed, the tags."""
    params = {k: OmegaConf.to_container(cfg[k], resolve=True) for k in ("model", "data", "trainer") if k in cfg}
    params["seed"] = cfg.get("seed")
    params["tags"] = ",".join(cfg.get("tags") or [])
    return params


def log_config(loggers: list[Logger], cfg: DictConfig) -> None:
    """The composed config as hyperparameters and, in TensorBoard, as text."""
    text = OmegaConf.to_yaml(cfg, resolve=True)
    for lg in loggers:
        lg.log_hyperparams(hyperparameters(cfg))
        if isinstance(lg, TensorBoardLogger):
            # four-space indentation renders as a code block in TensorBoard's markdown
            lg.experiment.add_text("config", "    " + text.replace("\n", "\n    "))


def finish(cfg: DictConfig, loggers: list[Logger], metrics: dict[str, float], tested: str | None,
           evaluations: list[Scores]) -> dict[str, Any]:
    """The end of a run: the hyperparameters beside the final test metrics in TensorBoard's HParams
    tab, metrics.json (metrics, the units and table columns of the ``evaluations``, the tested
    checkpoint, the tags), the summary printed and logged. Returns what metrics.json holds."""
    result = {
        "model": choice("model"), "data": choice("data"), "seed": cfg.seed, "tags": list(cfg.get("tags") or []),
        "best_checkpoint": tested,
        "metrics": dict(sorted(metrics.items())),
        "units": dict(sorted({k: u for ev in evaluations for k, u in ev.units.items()}.items())),
        "columns": list(dict.fromkeys(c for ev in evaluations for c in ev.columns)),
    }
    tests = {k: v for k, v in metrics.items() if k.startswith("test/")}
    for lg in loggers:
        if isinstance(lg, TensorBoardLogger) and tests:  # the HParams tab needs metrics beside the settings
            lg.log_hyperparams(hyperparameters(cfg), metrics=tests)
        lg.finalize("success")
    out_dir = Path(cfg.paths.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "metrics.json").write_text(json.dumps(result, indent=2))
    log.info("test metrics: %s", ", ".join(f"{k}={v:.6g}" for k, v in tests.items()))
    log.info("run directory: %s | tested checkpoint: %s", out_dir, tested)
    print_summary(result, out_dir, loggers)
    return result


def tensorboard_dirs(loggers: list[Logger]) -> list[str]:
    """The folders to open TensorBoard on: <run>/tensorboard, which holds the run under its name."""
    return [lg.root_dir for lg in loggers if isinstance(lg, TensorBoardLogger)]


def print_summary(result: dict[str, Any], out_dir: Path, loggers: list[Logger]) -> None:
    """The run's last lines: its test metrics, then where everything is."""
    from rich.console import Console
    from rich.table import Table

    console = Console(highlight=False)
    metrics, units = result["metrics"], result.get("units", {})
    table = Table(title=f"{result['model']} on {result['data']} (seed {result['seed']})", title_justify="left")
    table.add_column("metric")
    table.add_column("value", justify="right")
    if units:
        table.add_column("unit")
    for k, v in metrics.items():
        if k.startswith("test/"):
            table.add_row(k, f"{v:.4g}", *([units.get(k, "")] if units else []))
    console.print(table)
    if "test/sq_err_per_image" in metrics and "test/pca_sq_err_per_image" in metrics:
        m, p = metrics["test/sq_err_per_image"], metrics["test/pca_sq_err_per_image"]
        print(f"test squared error per image: {m:.2f} | PCA with the same code size: {p:.2f} "
              f"| {100 * (m - p) / p:+.1f}% vs PCA")
    # plain prints: paths must stay on one line whatever the terminal width
    print(f"run directory : {out_dir}")
    print(f"metrics       : {out_dir / 'metrics.json'}")
    if (out_dir / "images").is_dir():
        print(f"images        : {out_dir / 'images'}")
    if result.get("best_checkpoint"):
        print(f"checkpoint    : {result['best_checkpoint']}")
    for d in tensorboard_dirs(loggers):
        print(f"tensorboard   : {d}")
        print(f"open it with  : tensorboard --logdir {d}")
