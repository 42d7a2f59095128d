"""Building objects from config and reporting a run: shared by train.py and the tests."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.loggers import Logger, TensorBoardLogger

from genlab.errors import UserError

log = logging.getLogger("genlab")


class _DropAdverts(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "Tip: For seamless" not in record.getMessage()


def quiet_framework_noise() -> None:
    """Keep the run's output about the run: drop Lightning's product tips and a
    deprecation warning raised inside Lightning itself on every fit."""
    import warnings

    logging.getLogger("pytorch_lightning.utilities.rank_zero").addFilter(_DropAdverts())
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")


def build(node: DictConfig, **kwargs: Any) -> Any:
    """Instantiate a config node, then call it with ``kwargs`` (live objects such as DataInfo).

    The node is instantiated as a partial first, so Hydra never turns the objects passed in
    into configs. A UserError raised inside a constructor reaches the user as its own
    one-line message instead of being wrapped in Hydra's InstantiationException.
    """
    try:
        if not kwargs:
            return instantiate(node)
        factory = instantiate(node, _partial_=True)
    except InstantiationException as e:
        cause = e.__cause__
        while cause is not None and not isinstance(cause, UserError):
            cause = cause.__cause__
        if cause is not None:
            raise cause from None
        raise
    return factory(**kwargs)


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


def build_group(node: DictConfig | None) -> list[Any]:
    """Instantiate every ``_target_`` entry of a group such as callbacks or logger."""
    if not node:
        return []
    return [build(v) for v in node.values() if isinstance(v, DictConfig) and "_target_" in v]


def log_config(loggers: list[Logger], cfg: DictConfig) -> None:
    """The composed config as hyperparameters and, in TensorBoard, as text."""
    text = OmegaConf.to_yaml(cfg, resolve=True)
    params = {k: OmegaConf.to_container(cfg[k], resolve=True) for k in ("model", "data", "trainer") if k in cfg}
    params["seed"] = cfg.get("seed")
    for lg in loggers:
        lg.log_hyperparams(params)
        if isinstance(lg, TensorBoardLogger):
            # four-space indentation renders as a code block in TensorBoard's markdown
            lg.experiment.add_text("config", "    " + text.replace("\n", "\n    "))


def tensorboard_dirs(loggers: list[Logger]) -> list[str]:
    return [lg.log_dir for lg in loggers if isinstance(lg, TensorBoardLogger)]


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
