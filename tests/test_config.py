"""Composition of the config groups: a preset that extends another (``defaults: [ae, ...]``) composes with
every value of the one it extends, except those its own file sets. A schema listed after the parent
(``/schema_model_dae@_here_``, to add and check the child's own options) is merged over the parent's values,
so every schema default it carries would reset the parent's choice: this test finds any such key."""

from __future__ import annotations

from functools import cache
from typing import Any

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from genlab.config import conf_dir, schemas

CONF = conf_dir()
GROUPS = ("model", "data", "trainer", "callbacks", "logger")  # the groups whose presets extend one another


def parents(group: str, name: str) -> list[str]:
    """The presets of ``group`` that conf/<group>/<name>.yaml extends: the plain entries of its defaults list
    (a schema is named /schema_..., a choice of another group is a mapping)."""
    defaults = OmegaConf.to_container(OmegaConf.load(CONF / group / f"{name}.yaml")).get("defaults", [])
    return [d for d in defaults if isinstance(d, str) and not d.startswith("/") and d != "_self_"]


def leaves(node: Any, prefix: str = "") -> dict[str, Any]:
    """Every dotted key of a nested mapping with its value (a list is one value)."""
    if not isinstance(node, dict):
        return {prefix: node}
    out: dict[str, Any] = {}
    for key, value in node.items():
        out.update(leaves(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


def own_keys(group: str, name: str) -> list[str]:
    """The keys conf/<group>/<name>.yaml sets itself."""
    raw = OmegaConf.to_container(OmegaConf.load(CONF / group / f"{name}.yaml"))
    raw.pop("defaults", None)
    return list(leaves(raw))


@cache
def composed(group: str, name: str) -> dict[str, Any]:
    """The leaves of the group's node in the full config composed with ``group=name``, unresolved."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=[f"{group}={name}"])
    return leaves(OmegaConf.to_container(cfg[group], resolve=False))


EXTENDING = [(group, path.stem, parent) for group in GROUPS for path in sorted((CONF / group).glob("*.yaml"))
             for parent in parents(group, path.stem)]


def test_the_presets_that_extend_another_are_found() -> None:
    found = {(g, child, parent) for g, child, parent in EXTENDING}
    assert {("model", "dae", "ae"), ("model", "sparse_ae", "ae"), ("model", "cae", "ae"),
            ("model", "cddpm", "ddpm"), ("trainer", "debug", "default")} <= found


@pytest.mark.parametrize(("group", "child", "parent"), EXTENDING, ids=[f"{g}={c}<-{p}" for g, c, p in EXTENDING])
def test_a_preset_inherits_every_value_it_does_not_set(group: str, child: str, parent: str) -> None:
    mine = own_keys(group, child)
    child_values, parent_values = composed(group, child), composed(group, parent)
    reset = [f"{group}.{key}={child_values.get(key)!r} (conf/{group}/{parent}.yaml: {value!r})"
             for key, value in parent_values.items()
             if child_values.get(key, "<absent>") != value
             and not any(key == own or key.startswith(f"{own}.") for own in mine)]
    assert not reset, (f"conf/{group}/{child}.yaml extends {parent} but composes, without setting them itself: "
                       + ", ".join(reset))


def test_the_regularised_autoencoders_keep_the_code_size_of_ae() -> None:
    # `-m model=ae,dae,sparse_ae,cae` compares regularisers, not code sizes
    sizes = {name: composed("model", name)["latent_dim"] for name in ("ae", "dae", "sparse_ae", "cae")}
    assert set(sizes.values()) == {composed("model", "ae")["latent_dim"]}, sizes


def test_the_registry_holds_every_schema_module_s_table() -> None:
    import importlib
    import pkgutil

    import genlab.config

    registry = schemas()
    for module in pkgutil.iter_modules(genlab.config.__path__):
        table = getattr(importlib.import_module(f"genlab.config.{module.name}"), "SCHEMAS", {})
        for group, named in table.items():
            for name, node in named.items():
                assert registry[f"schema_{group}_{name}"] is node
    named_in_conf = {entry.lstrip("/").partition("@")[0] for path in CONF.rglob("*.yaml")
                     for entry in OmegaConf.to_container(OmegaConf.load(path)).get("defaults", [])
                     if isinstance(entry, str) and "schema" in entry}
    assert named_in_conf <= set(registry), named_in_conf - set(registry)
    assert "schema_model_dae" in registry and registry["train_schema"].__name__ == "TrainConfig"
