"""Structured-config schemas and where the configs live.

Each schema is registered in Hydra's ConfigStore as ``schema_<group>_<name>`` at the top level,
so it stays out of ``genlab-train --help``'s list of groups, and each YAML file extends one
(``defaults: [/schema_model_autoencoder@_here_, _self_]``): OmegaConf rejects a wrong type
(``model.latent_dim=abc``) or an unknown key while the config is composed. Ranges and choices are
declared as field metadata and checked by ``validate`` before any work, with the full key in the
message. The schemas live with their family: ``core`` (top level, trainer, paths), ``data``,
``autoencoders``, ``vae``, ``rbm``, ``adversarial``, ``contrastive``, ``diffusion``, ``callbacks`` (the
evaluator); a new family adds a module with a ``SCHEMAS`` table and lists it in ``FAMILIES``.

This package imports neither torch nor Lightning: ``genlab-train --help`` and shell completion
need only it.
"""

from __future__ import annotations

import os
import re
from importlib.resources import files
from pathlib import Path

from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf

from genlab.config import adversarial, autoencoders, callbacks, contrastive, core, data, diffusion, flow, rbm, vae
from genlab.config.checks import validate
from genlab.config.fields import opt

__all__ = ["CONFIG_PATH", "FAMILIES", "conf_dir", "opt", "register", "setup_hydra", "validate"]

# each has SCHEMAS: {group: {name: dataclass}}
FAMILIES = (core, data, autoencoders, vae, rbm, adversarial, contrastive, diffusion, flow, callbacks)
# The config folder: conf/ at the top of the source tree, shipped in the wheel as the package
# genlab.conf, so an installed genlab finds it from any folder.
CONFIG_PATH = "pkg://genlab.conf"


def conf_dir() -> Path:
    """The folder of genlab's own configs (the checkout's conf/, or the installed genlab/conf)."""
    return Path(str(files("genlab.conf")))


def register() -> None:
    cs = ConfigStore.instance()
    cs.store(name="train_schema", node=core.TrainConfig)
    for family in FAMILIES:
        for group, schemas in family.SCHEMAS.items():
            for name, node in schemas.items():
                cs.store(name=f"schema_{group}_{name}", node=node)


NOT_IN_RUN_NAMES = ("paths.", "hydra.", "trainer.enable_", "callbacks.image_logger.")  # overrides that say nothing


def run_name() -> str:
    """A run's name for TensorBoard's run list: the model, the data, then the run's other command-line
    overrides (``dae-digits-seed=1``), in characters every file system takes; "run" outside Hydra."""
    if not HydraConfig.initialized():
        return "run"
    hc = HydraConfig.get()
    parts = [hc.runtime.choices.get("model"), hc.runtime.choices.get("data")]
    for override in hc.overrides.task:
        key = override.split("=", 1)[0].lstrip("+~")
        if key not in ("model", "data") and not key.startswith(NOT_IN_RUN_NAMES):
            parts.append(override)
    return re.sub(r"[^A-Za-z0-9_.,=+-]+", "_", "-".join(p for p in parts if p))[:120]


def is_run(folder: str | None) -> bool:
    """Whether ``folder`` is a genlab run folder (resume= writes into it only then; otherwise the run gets
    a fresh folder, which is removed when resume= then fails)."""
    return folder is not None and (Path(str(folder)).expanduser() / ".hydra" / "config.yaml").is_file()


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
