"""The steps of a run that train.py names: building objects from config, the checkpoint policy,
and reporting (hyperparameters with the final metrics, metrics.json, the summary). Shared by
train.py, genlab-eval and the tests; imports Lightning, so train.py imports it only to run.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf, open_dict
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.loggers import Logger, TensorBoardLogger

from genlab.config.instantiation import build, build_group
from genlab.errors import UserError
from genlab.files import write_json
from genlab.metrics.base import Scores
from genlab.runfolder import RunFolder

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
    # torch.compile (model.compile=true) on a machine without CUDA says so at every start
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")
    # frozen parts (latent_ddpm's autoencoder, caption_ddpm's CLIP) stay in eval mode by design
    warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode at the start of training")
    lightning = logging.getLogger("pytorch_lightning")
    if not lightning.propagate:  # Lightning imported before Hydra set up logging keeps to its own handler
        for handler in logging.getLogger().handlers:  # Hydra's job logging: console and <run>/<task>.log
            if isinstance(handler, logging.FileHandler) and handler not in lightning.handlers:
                lightning.addHandler(handler)


RESUMED_CHOICES: dict[str, str] = {}  # resume=: the group choices of the run being continued


def choice(group: str) -> str | None:
    """The option chosen for a config group in this Hydra run (model=vae -> "vae"), or in the run that
    resume= continues; None outside one."""
    if group in RESUMED_CHOICES:
        return RESUMED_CHOICES[group]
    return HydraConfig.get().runtime.choices.get(group) if HydraConfig.initialized() else None


def is_main_process() -> bool:
    """False in the processes a data-parallel run adds (global rank > 0): they leave the run folder alone."""
    from lightning_fabric.utilities.rank_zero import rank_zero_only

    return getattr(rank_zero_only, "rank", 0) == 0


def pin_run_dir() -> None:
    """Lightning starts the other processes of a data-parallel run as ``<command> hydra.run.dir=<run.dir>``:
    run.dir set to this job's folder, so they join it even in a sweep (where run.dir is not the job's
    folder) or when run.dir holds a time stamp they would take anew."""
    from omegaconf import open_dict, read_write

    if HydraConfig.initialized():
        hc = HydraConfig.get()
        with read_write(hc), open_dict(hc):
            hc.run.dir = hc.runtime.output_dir


def load_model(model_cfg: DictConfig | None, checkpoint: str | Path, device: str = "cpu",
               trusted: tuple[str, ...] = (), trust: bool = False, data_info: Any = None) -> Any:
    """A model restored from a checkpoint: read weights-only (no code runs; ``trust`` unpickles), rebuilt
    from the run's model config (or, with None, from the config the checkpoint carries), which may name
    only what genlab builds (``genlab.safety``) unless ``trust``. Any problem is a UserError naming the file."""
    from genlab.checkpoints import model_from_checkpoint, read_checkpoint

    state = read_checkpoint(checkpoint, device, trust=trust)
    source = f"checkpoint {checkpoint}"
    return model_from_checkpoint(state, source, model_cfg, trusted, trust, data_info).to(device)


def stored_config(run_dir: str | Path, trust: bool = False, trusted: tuple[str, ...] = ()) -> DictConfig:
    """A run folder's composed config, checked as data (``RunFolder.config``)."""
    return RunFolder(run_dir).config(trust, trusted)


# what resume= may change: how long to train, and nothing of what the run computes
RESUMABLE = ("trainer.max_epochs", "trainer.max_steps", "trainer.max_time", "trainer.enable_progress_bar",
             "trainer.enable_model_summary", "paths.log_dir", "paths.cache_dir", "trust", "trusted_modules")


RESUME_KEYS = ("resume", "ckpt_path")  # how the run was started, not what it computes


def outputs_outside(cfg: DictConfig, run_dir: Path) -> list[str]:
    """The folders the callbacks and loggers of ``cfg`` would write to that lie outside ``run_dir``, as
    "key=folder" (a config carried in from elsewhere may name any folder; a relative one is the working
    folder's, as Lightning reads it)."""
    from genlab.config.checks import written_folders

    return [f"{key}={value}" for key, value in written_folders(cfg)
            if not Path(value).expanduser().resolve().is_relative_to(run_dir)]


def resumed_config(cfg: DictConfig) -> DictConfig:
    """The config of ``resume=RUN_DIR``: the run's own, with ckpt_path its last.ckpt, and of the command
    line only what extends a run (RESUMABLE). UserError when the folder is not a run, has no checkpoint,
    or its config names code outside genlab (unless trust=true); RunFinished when there is nothing left."""
    from genlab.checkpoints import read_checkpoint

    run_dir = Path(cfg.resume).expanduser().resolve()
    stored = stored_config(run_dir, bool(cfg.trust), tuple(cfg.get("trusted_modules") or ()))
    folder = RunFolder(run_dir)
    folder.check_closed("resume=")
    outside = outputs_outside(stored, run_dir)
    if outside:
        raise UserError(f"{folder.config_file} writes outside the run's folder ({'; '.join(outside)}): resume= "
                        "writes only inside it. Start a new run instead.")
    last = folder.last_checkpoint
    if not last.is_file():
        raise UserError(f"{run_dir} has no checkpoints/last.ckpt to resume from (the run stopped before its "
                        "first epoch ended): start it again.")
    given = [o.split("=", 1)[0] for o in HydraConfig.get().overrides.task] if HydraConfig.initialized() else []
    refused = [k for k in given if k.lstrip("+~") not in ("resume", *RESUMABLE)]
    if refused:
        raise UserError(f"resume= continues a run with its own config; only {', '.join(RESUMABLE)} may be "
                        f"changed, not {', '.join(refused)}.")
    for key in RESUMABLE:
        if key in given:
            OmegaConf.update(stored, key, OmegaConf.select(cfg, key), force_add=True)
    state = read_checkpoint(last, trust=bool(cfg.trust))
    recorded = (state.get("genlab") or {}).get("run_config")
    edits = folder.config_edits(recorded, (*RESUMABLE, *RESUME_KEYS)) if isinstance(recorded, dict) else []
    if edits:
        raise UserError(f"{folder.config_file} no longer matches the run its checkpoint holds ("
                        f"{'; '.join(edits[:5])}{'; ...' if len(edits) > 5 else ''}): resume= continues a run as it "
                        "was. Restore the file, or start a new run with the new settings.")
    epochs = OmegaConf.select(stored, "trainer.max_epochs")
    done = folder.metrics_file.is_file() and not folder.interrupted_file.is_file()
    if done and epochs is not None and epochs >= 0 and int(state.get("epoch", -1)) + 1 >= epochs:
        raise RunFinished(f"{run_dir} has finished ({epochs} of {epochs} epochs, test metrics in metrics.json): "
                          "nothing to resume. Raise trainer.max_epochs to train it further.")
    stored.ckpt_path, stored.resume = str(last), str(run_dir)
    keep_csv_logs(stored, run_dir)
    choices = folder.hydra_setting("runtime.choices")
    RESUMED_CHOICES.clear()
    RESUMED_CHOICES.update({str(k): str(v) for k, v in (choices or {}).items() if v is not None})
    keep_tensorboard_run(stored, run_dir)
    return stored


def keep_tensorboard_run(cfg: DictConfig, run_dir: Path) -> None:
    """A resumed run's TensorBoard loggers write on in the run's own TensorBoard run, so its curves stay one:
    the one run folder their <save_dir>/<name>/ holds, else the name the run got at its start (its model,
    data and overrides: ``genlab.config.run_name``), not one made of the resume= command line."""
    from genlab.config import run_name

    file = RunFolder(run_dir).overrides_file
    try:
        overrides = [str(o) for o in OmegaConf.load(file)] if file.is_file() else []
    except Exception:  # a damaged record: the name is made of the model and data alone
        overrides = []
    for node in (cfg.get("logger") or {}).values():
        if not (isinstance(node, DictConfig) and str(node.get("_target_", "")).endswith("TensorBoardLogger")):
            continue
        version = OmegaConf.to_container(node, resolve=False).get("version")
        if version != "${genlab_run_name:}":  # a name the user gave stays as it is
            continue
        try:
            folder = Path(str(node.save_dir)) / str(node.get("name") or "lightning_logs")
        except Exception:  # an interpolation only a run resolves: the run folder, as conf/logger/tensorboard.yaml has
            folder = run_dir / str(node.get("name") or "lightning_logs")
        runs = [d.name for d in folder.iterdir() if d.is_dir()] if folder.is_dir() else []
        node.version = runs[0] if len(runs) == 1 else run_name(RESUMED_CHOICES, overrides)


def keep_csv_logs(cfg: DictConfig, run_dir: Path) -> None:
    """Lightning's CSV writer deletes a metrics.csv it finds in its folder: a resumed run's CSV loggers
    write beside it, to <name>/resumed-<k>/metrics.csv, so no value logged before the stop is lost."""
    for node in (cfg.get("logger") or {}).values():
        if not (isinstance(node, DictConfig) and str(node.get("_target_", "")).endswith("CSVLogger")):
            continue
        try:
            save_dir = Path(str(node.save_dir))
        except Exception:  # an interpolation only a run resolves: the run folder, as conf/logger/csv.yaml has
            save_dir = run_dir
        folder = save_dir / str(node.get("name") or "lightning_logs")
        node.version = f"resumed-{1 + len(list(folder.glob('resumed-*')))}"


class RunFinished(UserError):
    """resume= of a run that has nothing left to do: said, and not an error."""

    exit_code = 0


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
        trainer.save_checkpoint(path, weights_only=False)
    return path


def hyperparameters(cfg: DictConfig) -> dict[str, Any]:
    """What a run's settings are, for the loggers: the model, data and trainer configs, the seed, the tags."""
    params = {k: OmegaConf.to_container(cfg[k], resolve=True) for k in ("model", "data", "trainer") if k in cfg}
    params["seed"] = cfg.get("seed")
    params["tags"] = ",".join(cfg.get("tags") or [])
    return params


NOT_IN_HPARAMS = ("hydra/", "logger", "resume", "trust", "trusted_modules", "ckpt_path")  # where, not what


def chosen_hyperparameters(cfg: DictConfig) -> dict[str, Any]:
    """The settings a user chose, for TensorBoard's HParams tab: the model, the data, the seed and every key
    of the command line, which in a sweep's job holds the swept keys, each with its value in the run (a number,
    bool or string; a config group's: the name of its config); a resumed run's from its own command line.
    Keys of where a run writes and reads (paths, logging, checkpoints) and values that are absolute paths
    are left out: they tell machines apart, not runs."""
    import json

    from genlab.config import NOT_IN_RUN_NAMES

    if cfg.get("resume"):
        given = [f"{k}={v}" for k, v in RunFolder(str(cfg.resume)).overrides().items()]
    else:
        given = [str(o) for o in HydraConfig.get().overrides.task] if HydraConfig.initialized() else []
    params: dict[str, Any] = {"model": choice("model"), "data": choice("data"), "seed": cfg.get("seed")}
    for override in given:
        key = override.split("=", 1)[0]
        if key.startswith("~"):
            continue
        key = key.lstrip("+")
        if key.startswith((*NOT_IN_RUN_NAMES, *NOT_IN_HPARAMS)):
            continue
        value = choice(key) if "." not in key else None  # a config group (trainer=debug)
        if value is None:
            value = OmegaConf.select(cfg, key, default=None)
        if isinstance(value, (DictConfig, list)) or OmegaConf.is_list(value):
            value = json.dumps(OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value)
        elif value is None:
            value = "null"
        if isinstance(value, str) and value.startswith(("/", "~")):
            continue
        params[key] = value
    return {k: v for k, v in params.items() if v is not None}


def write_hparams(lg: TensorBoardLogger, params: dict[str, Any], metrics: dict[str, float]) -> None:
    """The run's row of TensorBoard's HParams tab: its settings (``params``) and that it ended. The metric
    values there are the run's own test scalars, which the test logged at the last training step: nothing is
    logged again (Lightning's ``log_hyperparams(..., metrics=)`` would add them at step 0). No experiment
    summary either: without one, TensorBoard builds the table from all the runs it shows and marks the
    settings whose values differ between them, which it shows first; one written by a run would hold that
    run's settings alone, each marked as differing nowhere."""
    from torch.utils.tensorboard.summary import hparams

    _, start, end = hparams(params, metrics)
    writer = lg.experiment._get_file_writer()
    writer.add_summary(start)
    writer.add_summary(end)
    writer.flush()


def log_config(loggers: list[Logger], cfg: DictConfig) -> None:
    """The composed config as hyperparameters and, in TensorBoard, as text."""
    text = OmegaConf.to_yaml(cfg, resolve=True)
    for lg in loggers:
        lg.log_hyperparams(hyperparameters(cfg))
        if isinstance(lg, TensorBoardLogger):
            # four-space indentation renders as a code block in TensorBoard's markdown
            lg.experiment.add_text("config", "    " + text.replace("\n", "\n    "))


def finish(cfg: DictConfig, loggers: list[Logger], metrics: dict[str, float], tested: str | None,
           evaluations: list[Scores], val_loss: dict[str, Any] | None = None) -> dict[str, Any]:
    """The end of a run: the hyperparameters beside the final test metrics in TensorBoard's HParams
    tab, metrics.json (metrics, the units and table columns of the ``evaluations``, the tested
    checkpoint, the tags, what val/loss measures: ``GenerativeModel.val_loss_record``), the summary printed
    and logged. Returns what metrics.json holds."""
    out_dir = Path(cfg.paths.output_dir)
    if tested is not None and Path(tested).resolve().is_relative_to(out_dir.resolve()):
        tested = str(Path(tested).resolve().relative_to(out_dir.resolve()))  # a copied run finds its own file
    result = {
        "model": choice("model"), "data": choice("data"), "seed": cfg.seed, "tags": list(cfg.get("tags") or []),
        "best_checkpoint": tested,
        "metrics": dict(sorted(metrics.items())),
        "units": dict(sorted({k: u for ev in evaluations for k, u in ev.units.items()}.items())),
        "columns": list(dict.fromkeys(c for ev in evaluations for c in ev.columns)),
        **({"val_loss": val_loss} if val_loss else {}),
    }
    tests = {k: v for k, v in metrics.items() if k.startswith("test/")}
    for lg in loggers:
        if isinstance(lg, TensorBoardLogger):
            write_hparams(lg, chosen_hyperparameters(cfg), tests)
        lg.finalize("success")
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(out_dir / "metrics.json", result)  # strict JSON, written whole
    (out_dir / "interrupted.json").unlink(missing_ok=True)  # a resumed run that finished is no longer stopped
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
        if p <= 1e-9 * max(abs(m), 1.0):  # PCA is exact (the code spans the data): a ratio would be noise
            versus = "PCA's error is ~0 (the code is as large as the data's rank): no ratio"
        elif m / p >= 100:
            versus = f"{m / p:.3g}x PCA's error"
        else:
            versus = f"{100 * (m - p) / p:+.1f}% vs PCA"
        print(f"test squared error per image: {m:.2f} | PCA with the same code size: {p:.3g} | {versus}")
    # plain prints: paths must stay on one line whatever the terminal width
    print(f"run directory : {out_dir}")
    print(f"metrics       : {out_dir / 'metrics.json'}")
    if RunFolder(out_dir).images.is_dir():
        print(f"images        : {RunFolder(out_dir).images}")
    if result.get("best_checkpoint"):
        print(f"checkpoint    : {out_dir / result['best_checkpoint']}")
    for d in tensorboard_dirs(loggers):
        print(f"tensorboard   : {d}")
        print(f"open it with  : tensorboard --logdir {d}")


# ---- the fit -----------------------------------------------------------------------------------
SMOKE_STEPS, SMOKE_IMAGES, SMOKE_DRAWS, SMOKE_PER_CLASS, SMOKE_TEMPERATURES = 5, 100, 8, 5, 100


def smoke_budget(cfg: DictConfig) -> None:
    """A smoke run (``smoke=true``, set by debug=fast) checks that the whole pipeline runs, not its figures:
    the evaluation and the pictures get a token budget wherever the config has the key, so a diffusion
    model's 1000-step sampler or a 2000-image FID does not outlast two batches of training. Samplers take
    at most 5 steps (the evaluator's budget and the model's own, which the pictures use), the metrics score
    100 test images (and as many samples), a likelihood bound 8 draws (an RBM's AIS 8 runs of 100
    temperatures), conditional samplers 5 a class, the scatters 100 points. The dataset classifier is
    trained as usual: its cache serves real runs too."""
    if not cfg.get("smoke"):
        return

    def cap(key: str, most: int, none_is_unbounded: bool = False) -> None:
        node, _, name = key.rpartition(".")
        parent = OmegaConf.select(cfg, node)
        if not isinstance(parent, DictConfig) or name not in parent:
            return
        value = parent[name]
        if value is None and not none_is_unbounded:
            return
        with open_dict(parent):
            parent[name] = most if value is None else min(value, most)

    chain = OmegaConf.select(cfg, "model.timesteps")  # a diffusion chain shorter than the smoke budget keeps T
    steps = min(SMOKE_STEPS, chain) if isinstance(chain, int) and chain > 0 else SMOKE_STEPS
    cap("model.sample_steps", steps, none_is_unbounded=True)  # null: all T steps
    cap("callbacks.image_logger.n_points", SMOKE_IMAGES)
    cap("callbacks.image_logger.latent.embedding_points", SMOKE_IMAGES)
    cap("callbacks.evaluator.sample_steps", steps, none_is_unbounded=True)  # null: the model's own
    cap("callbacks.evaluator.max_test", SMOKE_IMAGES, none_is_unbounded=True)  # null: the whole test set
    cap("callbacks.evaluator.metrics.likelihood.samples", SMOKE_DRAWS)
    cap("callbacks.evaluator.metrics.likelihood.chunk", SMOKE_DRAWS)
    cap("callbacks.evaluator.metrics.sample_classes.per_class", SMOKE_PER_CLASS)
    cap("model.ais_runs", SMOKE_DRAWS)  # an RBM's log Z: 8 annealing runs of 100 temperatures
    cap("model.ais_betas", SMOKE_TEMPERATURES)


ALLOCATION = re.compile(r"can't allocate memory: you tried to allocate (\d+) bytes")  # torch's CPU allocator


def new_model(cfg: DictConfig, info: Any) -> Any:
    """The model of ``cfg.model`` for data ``info``, carrying its config as plain data (checkpoints keep it)."""
    from genlab.checkpoints import build_model

    try:
        model = build_model(cfg.model, info)  # checks the model/data pair, loads frozen components
    except (MemoryError, RuntimeError) as e:  # torch's allocator refuses a network larger than the machine
        asked = ALLOCATION.search(str(e))
        if not isinstance(e, MemoryError) and asked is None:
            raise
        size = f" ({int(asked.group(1)) / 2**30:,.1f} GiB for one tensor)" if asked else ""
        raise UserError(f"model={choice('model')}: its networks need more memory than this machine can give"
                        f"{size}: lower the sizes in model (model.latent_dim, model.net.hidden, ...).") from None
    model.config_record = OmegaConf.to_container(cfg.model, resolve=True)
    model.run_config = RunFolder(cfg.paths.output_dir).started_config()
    return model


def checked_start(path: str, model: Any, cfg: DictConfig) -> str:
    """``ckpt_path``: a checkpoint file that is readable, safe and fits the model; UserError otherwise."""
    from genlab.checkpoints import check_compatible, read_checkpoint
    from genlab.safety import check_config

    if path in ("last", "best", "hpc", "registry"):
        raise UserError(f"ckpt_path={path} names no file. To continue a run in its folder use resume=<run folder>; "
                        "to start a new run from a checkpoint give the file's path.")
    state = read_checkpoint(path, trust=bool(cfg.trust))
    carried = (state.get("genlab") or {}).get("model_config")
    if carried is not None:
        check_config(carried, f"checkpoint {path}", bool(cfg.trust), tuple(cfg.get("trusted_modules") or ()))
    check_compatible(model, state, f"checkpoint {path}")
    return str(Path(path).expanduser().resolve())


def make_trainer(cfg: DictConfig, model: Any, loggers: list[Logger], lr_scale: float = 1.0) -> pl.Trainer:
    """A Trainer of ``cfg.trainer`` with the run's callbacks (the checkpoint policy of the model, a clean
    stop at signals, the learning-rate scale of a retry, and the progress bar unless the config brings its
    own); ``nan_retries`` is genlab's, not Lightning's."""
    from pytorch_lightning.callbacks import ProgressBar

    from genlab.callbacks.interrupt import GracefulStop
    from genlab.callbacks.progress import ThrottledProgressBar

    callbacks = checkpoint_policy(build_group(cfg.get("callbacks"), "callbacks"), model) + [GracefulStop()]
    if lr_scale != 1.0:
        callbacks.append(ScaleLearningRates(lr_scale))
    node = OmegaConf.to_container(cfg.trainer, resolve=True)
    node.pop("nan_retries", None)
    node["strategy"] = ddp_strategy_for(model, node.get("strategy", "auto"))
    if node.get("enable_progress_bar", True) and not any(isinstance(c, ProgressBar) for c in callbacks):
        callbacks.append(ThrottledProgressBar())  # Lightning's rich bar, without its cost on every batch
    return build(OmegaConf.create(node), callbacks=callbacks, logger=loggers or False)


#: Lightning's DDP strategies by name; each has a `_find_unused_parameters_true` variant that looks for weights
#: without a gradient in a backward pass
DDP_NAMES = ("ddp", "ddp_spawn", "ddp_fork", "ddp_notebook")


def ddp_strategy_for(model: Any, strategy: Any) -> Any:
    """``trainer.strategy`` for ``model``: a DDP strategy by name becomes its ``find_unused_parameters_true``
    variant for models whose steps leave weights without a gradient (DDP without the search stops with
    "parameters that were not used in producing the loss"); a strategy object is left as the user built it."""
    if not isinstance(strategy, str) or not model.steps_leave_parameters_unused():
        return strategy
    if strategy in DDP_NAMES:
        return f"{strategy}_find_unused_parameters_true"
    if strategy.endswith("_find_unused_parameters_false"):
        raise UserError(f"trainer.strategy={strategy}: {type(model).__name__} leaves some weights without a gradient "
                        "in a step (players that step in turn, or layer-wise pretraining), which DDP must look for: "
                        f"use trainer.strategy={strategy.removesuffix('_find_unused_parameters_false')}")
    return strategy


def fit(cfg: DictConfig, model: Any, datamodule: Any, loggers: list[Logger],
        start: str | None) -> tuple[pl.Trainer, Any]:
    """trainer.fit, and after a non-finite loss up to ``trainer.nan_retries`` retries: from the newest
    checkpoint (or from the start when there is none yet), with the learning rates halved each time.
    Returns the trainer that finished and the model it trained."""
    from pytorch_lightning.utilities.exceptions import MisconfigurationException

    from genlab.config.checks import fit_refusal
    from genlab.errors import NonFiniteLoss

    pin_run_dir()
    retries, scale = int(cfg.trainer.get("nan_retries") or 0), 1.0
    for attempt in range(retries + 1):
        trainer = make_trainer(cfg, model, loggers, scale)
        why = model.trainer_refusal(trainer)  # before Lightning starts the processes of a parallel run
        if why is not None:
            raise UserError(why)
        try:
            trainer.fit(model, datamodule=datamodule, ckpt_path=start, weights_only=not cfg.trust)
            return trainer, model
        except (ValueError, MisconfigurationException) as e:
            refused = fit_refusal(trainer, e)
            if refused is None:
                raise
            raise refused from None
        except NonFiniteLoss as e:
            if attempt == retries and retries:
                raise NonFiniteLoss(f"{e} (It diverged again after {retries} rollback(s) with the learning rates "
                                    f"halved, last x {scale:g}: lower model.optimizer.lr.)") from None
            if attempt == retries:
                raise
            last = RunFolder(cfg.paths.output_dir).last_checkpoint
            start, scale = (str(last) if last.is_file() else start), scale / 2
            log.warning("%s Retry %d of %d: from %s with the learning rates x %g.", e, attempt + 1, retries,
                        start or "the initial weights", scale)
            pl.seed_everything(cfg.seed + attempt + 1, workers=True, verbose=False)
            model = new_model(cfg, model.data_info)
    raise AssertionError("unreachable")


class ScaleLearningRates(pl.Callback):
    """Multiplies every optimiser's learning rates (and its scheduler's base rates) by ``factor`` when
    training starts, after a checkpoint's optimiser state is restored: a retry after divergence."""

    def __init__(self, factor: float) -> None:
        self.factor = factor

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        for opt in trainer.optimizers:
            for group in opt.param_groups:
                group["lr"] *= self.factor
        for config in trainer.lr_scheduler_configs:
            config.scheduler.base_lrs = [lr * self.factor for lr in config.scheduler.base_lrs]
