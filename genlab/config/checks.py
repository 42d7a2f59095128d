"""The check before any work, ``validate``, and the checks that one schema field cannot make alone:
several keys at once, the machine, the code a ``_target_`` names (``genlab.config.targets``), and the folders a
run writes to.

``validate``: the groups a run needs are there, no key is unknown (a ``+key=value`` override passes
OmegaConf's schemas, so the keys are compared here), every schema field is of its type, in its range
and among its choices (``genlab.config.fields``), then ``config_errors``. ``fit_refusal`` translates
Lightning's own refusal of the batch counts, which it makes inside fit; the checks before Hydra makes a folder are in
``genlab.config.preflight``. Every message names the key and what it accepts. torch and Lightning are
imported only inside the checks that need them: ``genlab-train --help`` imports this package.
"""
from __future__ import annotations

import contextlib
import logging
import math
import os
import re
import tempfile
from collections.abc import Iterator
from importlib.resources import files
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue

from genlab.config.fields import (
    is_number,
    select,
    structured_nodes,
    top_level_errors,
    unknown_keys,
    walk,
)
from genlab.config.targets import target_errors
from genlab.errors import UserError

REQUIRED_GROUPS = ("model", "data", "trainer", "paths")
OPTIMISERS = ("optimizer", "optimizer_g", "optimizer_d")  # the optimiser nodes of the model families
GENLAB_TRAINER_KEYS = ("nan_retries",)  # trainer keys genlab reads itself; Lightning never sees them
TASK_NAME = re.compile(r"[\w+=,-][\w.+=,-]*")
MAX_TASK_NAME = 100
OUTPUT_FOLDERS = ("paths.log_dir", "paths.cache_dir")  # written by every run
MIN_FREE = 1 << 20  # bytes a run's folder needs before its checkpoints: Hydra's records, train.log, metrics
WRITTEN_BY_ENTRIES = ("dirpath", "save_dir", "output_dir")  # where callbacks and loggers write
CLASSIFIERS = "classifiers"  # the subfolder of a cache folder where genlab.metrics.classifier keeps classifiers


def group_names(group: str) -> list[str]:
    """The configs of a group in genlab's own config folder."""
    folder = Path(str(files("genlab.conf"))) / group
    return sorted(p.stem for p in folder.glob("*.yaml"))


# ---- the groups, the task name, the folders ----------------------------------------------------
def missing_groups(cfg: DictConfig) -> list[str]:
    """A message for each group a run cannot do without (``~model``, ``model=null``)."""
    errors = []
    for group in REQUIRED_GROUPS:
        if group in cfg and not OmegaConf.is_missing(cfg, group) and isinstance(cfg[group], DictConfig):
            continue
        errors.append(f"{group} is not set (~{group} removes it): a run needs one; choose it with {group}=NAME, "
                      f"NAME one of {', '.join(group_names(group))}")
    return errors


def task_name_problem(name: Any) -> str | None:
    """Why ``task_name`` cannot name the folder of runs (paths.log_dir/<task_name>/), or None."""
    if not isinstance(name, str) or not name:
        return f"task_name={name!r} must be a non-empty folder name"
    if len(name) > MAX_TASK_NAME:
        return f"task_name is {len(name)} characters long: at most {MAX_TASK_NAME} (it names a folder)"
    if not TASK_NAME.fullmatch(name) or ".." in name:
        return (f"task_name={name!r} must be one folder name (letters, digits, _ . + = , -; no '/', no '..', "
                "not starting with '.'): runs go to paths.log_dir/<task_name>/")
    return None


def folder_problem(path: Any) -> str | None:
    """Why no run could write below ``path`` (a file, below a file, a folder where nothing can be made), or
    None. The nearest existing folder gets a probe folder made and removed: access bits say little to root."""
    if not isinstance(path, str) or not path:
        return "it must be a folder"
    try:
        p = Path(path).expanduser().absolute()
        if p.exists() and not p.is_dir():
            return "it is a file, not a folder"
        anchor = p
        while not anchor.exists():
            anchor = anchor.parent
        if not anchor.is_dir():
            return f"{anchor} is a file, so no folder can be made below it"
        os.rmdir(tempfile.mkdtemp(prefix=".genlab-probe-", dir=anchor))
    except OSError as e:
        return f"no folder can be made there ({e.strerror or e})"
    return None


def path_errors(cfg: DictConfig) -> list[str]:
    """The folders every run writes to (runs, classifier caches) must be folders it can write in."""
    keys = [*OUTPUT_FOLDERS, "callbacks.evaluator.classifier_cache"]
    if cfg.get("resume"):  # a resumed run writes in its own folder, not below paths.log_dir
        keys.remove("paths.log_dir")
    errors = []
    for key in keys:
        value = select(cfg, key)
        problem = None if value is None else folder_problem(value)
        if problem is None and value is not None and key != "paths.log_dir":
            problem = cache_problem(Path(value).expanduser() / CLASSIFIERS)
        if problem is None and value is not None:
            problem = space_problem(Path(value).expanduser())
        if problem:
            errors.append(f"{key}={value}: {problem}")
    return errors


def space_problem(folder: Path) -> str | None:
    """Too little free space on the folder's file system for a run's records (its config files and logs,
    before any checkpoint, each of which is checked against the space when it is written)."""
    from genlab.files import free_bytes, size_text

    free = free_bytes(folder)
    if free is not None and free < MIN_FREE:
        return (f"its file system has {size_text(free)} free, and a run needs at least {size_text(MIN_FREE)} "
                "before its first checkpoint: free some space or write elsewhere")
    return None


def cache_problem(folder: Path) -> str | None:
    """Why the classifier cache below a cache folder cannot be used (found only after training), or None."""
    if folder.exists() and not folder.is_dir():
        return f"{folder} is a file where the classifier cache folder belongs: remove it"
    taken = sorted(p for p in folder.glob("*.pt") if not p.is_file()) if folder.is_dir() else []
    if taken:
        return f"{taken[0]} is not a file where a cached classifier belongs: remove it"
    return None


# ---- the model, its optimisers and scheduler ----------------------------------------------------
def partial_node_problem(node: Any, what: str, given: str, example: str) -> str | None:
    """Why ``node`` is not a partial ``_target_`` node that the model completes with ``given``, or None."""
    if not isinstance(node, DictConfig) or "_target_" not in node:
        return f"must be {what} node with a _target_ and _partial_: true, e.g. {example}"
    if node.get("_partial_") is not True:
        return f"needs _partial_: true (the model completes {what} with its {given})"
    return None


def optimiser_errors(model: DictConfig) -> list[str]:
    """Each optimiser node is a partial with a positive finite learning rate that its class accepts, with the
    rest of its settings (torch's own checks, on a dummy parameter); the scheduler likewise on that optimiser."""
    import torch
    from hydra.utils import instantiate

    errors, built = [], None
    for name in OPTIMISERS:
        if name not in model:
            continue
        node = select(model, name)
        problem = partial_node_problem(node, "an optimiser", "parameters",
                                       "{_target_: torch.optim.Adam, _partial_: true, lr: 1e-3}")
        if problem:
            errors.append(f"model.{name} {problem}")
            continue
        lr = node.get("lr")
        if "lr" in node and not (is_number(lr) and math.isfinite(lr) and lr > 0):
            errors.append(f"model.{name}.lr={lr!r} must be a number > 0")
            continue
        try:
            built = instantiate(node)(params=[torch.nn.Parameter(torch.zeros(1))])
        except Exception as e:
            errors.append(f"model.{name}: {node['_target_']} refuses these settings ({one_line(e)})")
    scheduler = select(model, "scheduler") if "scheduler" in model else None
    if scheduler is not None:
        problem = partial_node_problem(scheduler, "a scheduler", "optimiser",
                                       "{_target_: torch.optim.lr_scheduler.StepLR, _partial_: true, step_size: 10}")
        if problem:
            errors.append(f"model.scheduler {problem}")
        elif built is not None:
            try:
                instantiate(scheduler)(optimizer=built)
            except Exception as e:
                errors.append(f"model.scheduler: {scheduler['_target_']} refuses these settings ({one_line(e)})")
    return errors


def model_errors(model: DictConfig) -> list[str]:
    """Settings whose range depends on another setting of the model."""
    errors = []
    noise, level = model.get("noise"), model.get("noise_level")
    if noise in ("masking", "salt_and_pepper") and is_number(level) and level > 1:
        errors.append(f"model.noise_level={level} is out of range for model.noise={noise}: it is the probability "
                      "of corrupting a value, at most 1")
    return errors


def step_budget_errors(cfg: DictConfig) -> list[str]:
    """A diffusion sampler's step budget the user gave beyond the chain's T steps (the evaluator's, or the
    model's own on the command line; the model's default is clamped to T, so model.timesteps=20 alone is fine)."""
    from hydra.core.hydra_config import HydraConfig

    chain = cfg.model.get("timesteps")
    if not is_number(chain):
        return []
    given = {str(o).split("=", 1)[0].lstrip("+~") for o in HydraConfig.get().overrides.task} \
        if HydraConfig.initialized() else set()
    errors = []
    for key in ("callbacks.evaluator.sample_steps", "model.sample_steps"):
        steps = select(cfg, key)
        if is_number(steps) and steps > chain and (key in given or key.startswith("callbacks")):
            errors.append(f"{key}={steps} exceeds model.timesteps={chain}: a diffusion sample takes at most T "
                          "reverse steps")
    return errors


# ---- the trainer --------------------------------------------------------------------------------
def trainer_errors(cfg: DictConfig) -> list[str]:
    """genlab's own rules for the trainer, which Lightning does not make (Lightning's own are found by building
    a Trainer, ``lightning_refusals``): settings that train nothing, more CPU processes than cores, a bf16
    run on a GPU without bf16, NCCL on CPUs, and ranges Lightning lets through."""
    import torch

    t, errors = cfg.trainer, []
    accelerator = str(t.get("accelerator", "cpu"))
    devices = t.get("devices", 1)
    if accelerator == "cpu" and isinstance(devices, int) and not isinstance(devices, bool) \
            and devices > (os.cpu_count() or 1):
        errors.append(f"trainer.devices={devices}: this machine has {os.cpu_count() or 1} CPU cores")
    strategy = t.get("strategy", "auto")
    if isinstance(strategy, str) and "nccl" in strategy and accelerator == "cpu":
        errors.append(f"trainer.strategy={strategy}: NCCL needs GPUs; on CPU use trainer=ddp_cpu (gloo)")
    if t.get("precision") == "bf16-mixed" and accelerator in ("gpu", "cuda") and torch.cuda.is_available() \
            and not torch.cuda.is_bf16_supported():
        errors.append("trainer.precision=bf16-mixed: this GPU has no bfloat16 support; use 16-mixed or 32-true")
    for key in ("limit_train_batches", "max_epochs", "max_steps"):
        if cfg.get("train") and t.get(key) == 0:
            errors.append(f"trainer.{key}=0 trains nothing: to only test a checkpoint, set train=false")
    low, high = t.get("min_epochs"), t.get("max_epochs")
    if is_number(low) and is_number(high) and high >= 0 and low > high:
        errors.append(f"trainer.min_epochs={low} exceeds trainer.max_epochs={high}")
    max_time = t.get("max_time")
    if isinstance(max_time, str) and not any(int(p) for p in re.findall(r"\d+", max_time) or ["1"]):
        errors.append(f"trainer.max_time={max_time!r} stops before any work: give a duration longer than zero "
                      "(or null)")
    if t.get("deterministic") not in (True, False, None, "warn"):
        errors.append(f"trainer.deterministic={t.get('deterministic')!r}: give true, false or warn")
    return errors


def bare_trainer(settings: dict[str, Any]) -> Any:
    """A Trainer of ``settings`` (a trainer node as plain data) without callbacks, loggers or checkpoints, as
    the checks build it; Lightning's device report is left to the run's own."""
    from genlab.config.instantiation import build

    with quiet_lightning():
        return build(OmegaConf.create(settings), callbacks=[], logger=False, enable_checkpointing=False)


def lightning_refusals(settings: dict[str, Any], error: BaseException) -> list[str]:
    """Lightning's refusal of ``settings`` (the trainer node, genlab's own keys left out) as messages naming the
    keys it refuses: each key is tried alone, and one that Lightning refuses alone is named with Lightning's
    own sentence; when none is, the whole refusal."""
    import torch

    def refusal(options: dict[str, Any]) -> BaseException | None:
        try:
            bare_trainer({"_target_": settings.get("_target_", "pytorch_lightning.Trainer"), **options})
        except Exception as e:
            return e
        return None

    def message(key: str, refused: BaseException) -> str:
        hint = ""
        if key == "accelerator" and settings[key] in ("gpu", "cuda") and not torch.cuda.is_available():
            hint = " (torch.cuda.is_available() is false on this machine: use trainer=cpu)"
        return f"trainer.{key}={settings[key]!r}: Lightning refuses it: {one_line(refused).split(': ', 1)[-1]}{hint}"

    # the accelerator first: the other settings are judged on it, and on a machine without it not at all
    base = {"accelerator": settings["accelerator"]} if "accelerator" in settings else {}
    if base and (refused := refusal(base)) is not None:
        return [message("accelerator", refused)]
    out = [message(key, refused) for key in settings if key not in ("_target_", "_partial_", *base)
           if (refused := refusal({**base, key: settings[key]})) is not None]
    return out or [f"trainer: Lightning refuses these settings ({one_line(error)})"]


# Lightning checks the batch counts against the loaders' lengths only inside fit (the training loader's
# before the first step, the validation loader's at the sanity check or the first validation): its refusal
# names the setting in backquotes, the first one of these
BATCH_SETTINGS = re.compile(r"`(limit_(?:train|val|test|predict)_batches|val_check_interval)`")


def fit_refusal(trainer: Any, error: BaseException) -> UserError | None:
    """Lightning's refusal of the trainer's batch counts for this data (a ValueError or
    MisconfigurationException raised in fit that names limit_*_batches or val_check_interval) as a UserError
    naming the key and its value with Lightning's sentence; None for any other error."""
    from pytorch_lightning.utilities.exceptions import MisconfigurationException

    found = BATCH_SETTINGS.search(str(error)) if isinstance(error, (ValueError, MisconfigurationException)) else None
    if found is None:
        return None
    key = found.group(1)
    return UserError(f"trainer.{key}={getattr(trainer, key, '?')}: Lightning refuses it for this data: "
                     f"{' '.join(str(error).split())}")


# ---- callbacks, loggers, and building what the config names ----------------------------------
def entry_errors(cfg: DictConfig) -> list[str]:
    """Each entry of callbacks and logger is a node with a _target_; a checkpoint callback monitors a metric
    that genlab logs (val/... or train/...), which Lightning would find missing only after an epoch."""
    errors = []
    for group in ("callbacks", "logger"):
        node = cfg.get(group)
        if node is None:
            continue
        if not isinstance(node, DictConfig):
            errors.append(f"{group}={node!r} must be a group of _target_ nodes (or {group}=none)")
            continue
        for name in node.keys():
            entry = select(node, str(name))
            if entry is not None and not (isinstance(entry, DictConfig) and "_target_" in entry):
                errors.append(f"{group}.{name}={entry!r} is not a {group[:-1] if group == 'callbacks' else group}: "
                              f"give it a _target_, or remove it with ~{group}.{name}")
                continue
            if entry is not None and str(entry['_target_']).endswith("ModelCheckpoint"):
                monitor = entry.get("monitor")
                if monitor is not None and not str(monitor).startswith(("val/", "train/")):
                    errors.append(f"{group}.{name}.monitor={monitor!r} is not a metric genlab logs: monitor "
                                  "val/loss (every model logs it), another val/ term, or null")
    for key, value in written_folders(cfg):
        problem = folder_problem(value)
        if problem:
            errors.append(f"{key}={value}: {problem}")
    return errors


def written_folders(cfg: DictConfig) -> Iterator[tuple[str, str]]:
    """(full key, folder) of every folder a callback or logger of ``cfg`` writes to (``WRITTEN_BY_ENTRIES``)."""
    for group in ("callbacks", "logger"):
        node = cfg.get(group)
        for name in node.keys() if isinstance(node, DictConfig) else ():
            entry = select(node, str(name))
            for key in WRITTEN_BY_ENTRIES if isinstance(entry, DictConfig) else ():
                value = select(entry, key)
                if isinstance(value, str) and value:
                    yield f"{group}.{name}.{key}", value


@contextlib.contextmanager
def quiet_lightning() -> Iterator[None]:
    """Lightning's device report is printed once, by the real trainer."""
    loggers = [logging.getLogger(n) for n in ("pytorch_lightning", "lightning_fabric", "lightning.pytorch")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def build_errors(cfg: DictConfig) -> list[str]:
    """Build every callback and logger, and a Trainer of the trainer settings, as the run will: their
    constructors' own checks (genlab's UserErrors, Lightning's rules, translated to the keys they refuse)
    fire now, before any work."""
    from genlab.config.instantiation import build
    from genlab.errors import UserError

    errors = []
    for group in ("callbacks", "logger"):
        for name, node in (cfg.get(group) or {}).items():
            try:
                build(node)
            except UserError as e:
                errors.append(str(e))
            except Exception as e:
                errors.append(f"{group}.{name}: {one_line(e)}")
    if errors:
        return errors
    settings = OmegaConf.to_container(cfg.trainer, resolve=True)  # resolved here: a copy has no root
    settings = {k: v for k, v in settings.items() if k not in GENLAB_TRAINER_KEYS}
    try:
        bare_trainer(settings)
    except UserError as e:
        errors.append(str(e))
    except Exception as e:  # Lightning's own rules: translated to the keys they refuse
        errors += lightning_refusals(settings, e)
    return errors


def one_line(e: BaseException) -> str:
    """An exception as one short line: its type and message (Hydra's wrappers give their cause's)."""
    while e.__cause__ is not None and type(e).__name__ == "InstantiationException":
        e = e.__cause__
    text = " ".join(str(e).split())
    return f"{type(e).__name__}: {text[:300]}" if text else type(e).__name__


def output_dir_problem(cfg: DictConfig) -> str | None:
    """Inside Hydra, paths.output_dir must be the run folder Hydra made (below paths.log_dir, or the resumed
    run's): pointed elsewhere, checkpoints and metrics would land outside the run and outlive a failed one."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return None
    made, value = HydraConfig.get().runtime.output_dir, select(cfg, "paths.output_dir")
    if value is None or Path(str(value)).expanduser().absolute() == Path(made).absolute():
        return None
    return (f"paths.output_dir={value} is not this run's folder ({made}): it is made by Hydra below "
            "paths.log_dir/<task_name>; set paths.log_dir or task_name to put runs elsewhere")


def config_errors(cfg: DictConfig) -> list[str]:
    """Every check of this module that needs only the config and the machine, for ``validate``."""
    errors = [p for p in (task_name_problem(cfg.get("task_name")), output_dir_problem(cfg)) if p]
    if not cfg.get("train") and not cfg.get("test"):
        errors.append("train=false test=false leaves nothing to do: train, test a checkpoint (train=false "
                      "ckpt_path=...), or both")
    errors += path_errors(cfg) + target_errors(cfg)
    if errors:
        return errors
    errors = optimiser_errors(cfg.model) + model_errors(cfg.model) + trainer_errors(cfg) + entry_errors(cfg)
    errors += step_budget_errors(cfg)
    return errors or build_errors(cfg)


def validate(cfg: DictConfig) -> None:
    """Check the config before any work (see the module docstring); one UserError lists every problem."""
    errors = missing_groups(cfg)
    if errors:  # nothing else can be checked without them
        raise invalid(errors)
    errors = list(unknown_keys(cfg, "")) + top_level_errors(cfg)
    for key, node in structured_nodes(cfg):
        try:
            obj = OmegaConf.to_object(node)
        except MissingMandatoryValue as e:
            missing = getattr(e, "full_key", None) or key
            errors.append(f"{missing} is not set: give it on the command line, {missing}=...")
            continue
        except Exception as e:  # a bad interpolation
            errors.append(f"{key}: {' '.join(str(e).split())}")
            continue
        walk(obj, key, errors)
    if not errors:  # the checks below read values the schemas have vouched for
        errors = config_errors(cfg)
    if errors:
        raise invalid(errors)


def invalid(errors: list[str]) -> UserError:
    """One UserError for all problems: on one line when there is one."""
    errors = list(dict.fromkeys(errors))
    if len(errors) == 1:
        return UserError(f"Invalid config: {errors[0]}")
    return UserError(f"Invalid config ({len(errors)} problems):\n  " + "\n  ".join(errors))
