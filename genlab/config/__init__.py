"""Structured-config schemas and where the configs live.

Each schema is registered in Hydra's ConfigStore as ``schema_<group>_<name>`` at the top level,
so it stays out of ``genlab-train --help``'s list of groups, and each YAML file extends one
(``defaults: [/schema_model_autoencoder@_here_, _self_]``): OmegaConf rejects a wrong type
(``model.latent_dim=abc``) or an unknown key while the config is composed. Ranges and choices are
declared as field metadata and checked by ``validate`` before any work, with the full key in the
message. A preset that extends another (conf/model/dae.yaml: ``[ae, /schema_model_dae@_here_, _self_]``) lists
its wider schema after the parent, as OmegaConf merges a schema over its base class's and not the reverse; so
that schema's defaults are merged over the parent's values, and a field whose value each preset chooses
(``latent_dim``) has no default (tests/test_config.py checks that an extending preset keeps every value it
does not set). The schemas live with their family: ``core`` (top level, trainer, paths), ``data``,
``autoencoders``, ``vae``, ``rbm``, ``adversarial``, ``contrastive``, ``diffusion``, ``callbacks`` (the
evaluator); ``schemas`` finds the ``SCHEMAS`` table of every module of this package, so a new family adds
a module and edits no list, and of every module of a ``genlab_plugins`` package on the path, so a family of
one's own needs no edit of genlab at all.

This package imports neither torch nor Lightning: ``genlab-train --help`` and shell completion
need only it.
"""

from __future__ import annotations

import importlib
import os
import pkgutil
import re
from collections.abc import Mapping, Sequence
from functools import cache
from importlib.resources import files
from pathlib import Path
from types import ModuleType

from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf

from genlab.config import core
from genlab.config.checks import validate
from genlab.config.fields import opt

__all__ = ["CONFIG_PATH", "conf_dir", "opt", "register", "schemas", "setup_hydra", "validate"]

# The config folder: conf/ at the top of the source tree, shipped in the wheel as the package
# genlab.conf, so an installed genlab finds it from any folder.
CONFIG_PATH = "pkg://genlab.conf"


def conf_dir() -> Path:
    """The folder of genlab's own configs (the checkout's conf/, or the installed genlab/conf)."""
    return Path(str(files("genlab.conf")))


PLUGINS = "genlab_plugins"  # a namespace package of one's own families, found as Hydra finds hydra_plugins


def family_modules() -> list[ModuleType]:
    """The modules whose ``SCHEMAS`` tables are registered: those of this package, by name, then those of the
    ``genlab_plugins`` namespace package wherever it is on the path (a family of one's own: its model module
    declares SCHEMAS, its YAML lives in a config folder added with ``hydra.searchpath=[file://...]``)."""
    found = [importlib.import_module(f"{__name__}.{m.name}") for m in pkgutil.iter_modules(__path__)]
    try:
        plugins = importlib.import_module(PLUGINS)
    except ModuleNotFoundError:
        return found
    return found + [importlib.import_module(f"{PLUGINS}.{m.name}") for m in pkgutil.iter_modules(plugins.__path__)]


@cache
def schemas() -> dict[str, type]:
    """Every schema by the name the YAML files give it: ``train_schema`` (the top level) and
    ``schema_<group>_<name>`` for each entry of the ``SCHEMAS`` table ({group: {name: dataclass}}) of every
    module ``family_modules`` finds, in its order."""
    found: dict[str, type] = {"train_schema": core.TrainConfig}
    where: dict[str, str] = {}
    for family in family_modules():
        for group, named in getattr(family, "SCHEMAS", {}).items():
            for name, node in named.items():
                key = f"schema_{group}_{name}"
                if key in where:  # the later one would replace the first in the ConfigStore unnoticed
                    raise ValueError(f"{key} is declared twice: in {where[key]} and in {family.__name__}")
                found[key], where[key] = node, family.__name__
    return found


def register() -> None:
    """Store every schema in Hydra's ConfigStore under its name (``schemas``)."""
    cs = ConfigStore.instance()
    for name, node in schemas().items():
        cs.store(name=name, node=node)


NOT_IN_RUN_NAMES = ("paths.", "hydra.", "trainer.enable_", "callbacks.image_logger.")  # overrides that say nothing


def run_name(choices: Mapping[str, object] | None = None, overrides: Sequence[str] | None = None) -> str:
    """A run's name for TensorBoard's run list: the model, the data, then the run's other command-line
    overrides (``dae-digits-seed=1``), in characters every file system takes. ``choices`` and ``overrides``
    are the group choices and command-line overrides of a run (a resumed run's own); by default this Hydra
    run's, and "run" outside Hydra."""
    if choices is None or overrides is None:
        if not HydraConfig.initialized():
            return "run"
        hc = HydraConfig.get()
        choices, overrides = hc.runtime.choices, hc.overrides.task
    parts = [choices.get("model"), choices.get("data")]
    for override in overrides:
        key = override.split("=", 1)[0].lstrip("+~")
        if key not in ("model", "data") and not key.startswith(NOT_IN_RUN_NAMES):
            parts.append(str(override))
    return re.sub(r"[^A-Za-z0-9_.,=+-]+", "_", "-".join(p for p in parts if p))[:120]


def is_run(folder: str | None) -> bool:
    """Whether ``folder`` is a genlab run folder (resume= writes into it only then; otherwise the run gets
    a fresh folder, which is removed when resume= then fails)."""
    from genlab.runfolder import RunFolder

    return folder is not None and RunFolder(folder).is_run()


def slurm_tasks(devices: object) -> int:
    """SLURM tasks per node for ``trainer.devices`` (conf/hydra/launcher/slurm.yaml): Lightning's SLURM
    environment expects one task per device; a count it cannot know in advance (auto, -1) is refused."""
    if isinstance(devices, bool) or not isinstance(devices, int) or devices < 1:
        from genlab.errors import UserError

        raise UserError(f"hydra/launcher=slurm needs trainer.devices as a number of devices per node, not {devices!r}: "
                        "SLURM starts one task per device (e.g. trainer.devices=4).")
    return devices


def setup_hydra() -> None:
    """Register the schemas and resolvers; safe to call more than once.

    ``${genlab_cwd:}`` is the folder genlab-train was started in: runs, datasets and caches go
    below it by default (conf/paths/default.yaml), wherever genlab is installed.
    ``${genlab_run_name:}`` names the run in TensorBoard (conf/logger/tensorboard.yaml).
    ``${genlab_run_dir:}`` and ``${genlab_hydra_subdir:}`` put a resumed run in its own folder
    (conf/hydra/default.yaml).
    """
    register()
    resolvers = {
        "genlab_cwd": os.getcwd,
        "genlab_run_name": run_name,
        "genlab_run_dir": lambda resume, new: str(Path(resume).expanduser().resolve()) if is_run(resume) else new,
        "genlab_hydra_subdir": lambda resume: None if is_run(resume) else ".hydra",  # a resumed run keeps its own
        "genlab_slurm_tasks": slurm_tasks,
        "genlab_slurm_gpus": lambda accelerator, devices: slurm_tasks(devices) if accelerator in ("gpu", "cuda")
        else None,
    }
    for name, resolver in resolvers.items():
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, resolver)
