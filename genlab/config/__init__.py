"""Structured-config schemas, registered in Hydra's ConfigStore under ``schema/<group>/<name>``.

Each YAML file extends one of these (``defaults: [/schema/model/autoencoder@_here_, _self_]``),
so OmegaConf rejects a wrong type (``model.latent_dim=abc``) or an unknown key while the
config is composed. Ranges and choices are declared as field metadata and checked by
``validate`` before any work, with the full key in the message. The schemas live with their
family: ``core`` (top level, trainer, paths), ``data``, ``autoencoders``, ``vae``, ``adversarial``;
a new family adds a module with a ``SCHEMAS`` table and lists it in ``FAMILIES``.
"""

from __future__ import annotations

from pathlib import Path

from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf

from genlab.config import adversarial, autoencoders, core, data, vae
from genlab.config.fields import opt, validate

__all__ = ["FAMILIES", "opt", "project_root", "register", "setup_hydra", "validate"]

FAMILIES = (core, data, autoencoders, vae, adversarial)  # each has SCHEMAS: {group: {name: dataclass}}


def register() -> None:
    cs = ConfigStore.instance()
    cs.store(name="train_schema", node=core.TrainConfig)
    for family in FAMILIES:
        for group, schemas in family.SCHEMAS.items():
            for name, node in schemas.items():
                cs.store(group=f"schema/{group}", name=name, node=node)


def project_root() -> str:
    """The folder holding conf/ (this package's parent in a source checkout)."""
    return str(Path(__file__).resolve().parent.parent.parent)


def setup_hydra() -> None:
    """Register the schemas and resolvers; safe to call more than once."""
    register()
    if not OmegaConf.has_resolver("genlab_root"):
        OmegaConf.register_new_resolver("genlab_root", project_root)
