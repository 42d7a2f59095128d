"""The checks of what a ``_target_`` names: that it can be imported, and, for a node without a schema, that it is
given only the arguments its target takes, of the simple types and within the ``Bounds`` the target declares
(``target_errors``, part of ``genlab.config.checks.validate``), each named by its full key."""

from __future__ import annotations

import inspect
import logging
from collections.abc import Iterator
from typing import Any

from omegaconf import DictConfig, ListConfig

from genlab.config.fields import HYDRA_KEYS, argument_problem, argument_rules, schema_of, select

# Targets whose **kwargs go to another class: their options are that class's too.
FORWARDED = {"pytorch_lightning.loggers.tensorboard.TensorBoardLogger": "torch.utils.tensorboard.SummaryWriter"}


def locate(path: str) -> Any:
    """The object a dotted ``_target_`` path names, found by Hydra's own lookup (``hydra.utils.get_object``);
    its failure raised, without the error line Hydra logs for it (the config's checks report it)."""
    from hydra.utils import get_object

    log = logging.getLogger("hydra.utils")
    level, log.level = log.level, logging.CRITICAL
    try:
        return get_object(path)
    finally:
        log.setLevel(level)


def target_nodes(node: Any, prefix: str) -> Iterator[tuple[str, DictConfig]]:
    """Every config node with a ``_target_`` below ``node``, with its full key (Hydra's own left out)."""
    if isinstance(node, DictConfig):
        if "_target_" in node:
            yield prefix, node
        keys: list[Any] = [k for k in node.keys() if not (prefix == "" and k == "hydra")]
    elif isinstance(node, ListConfig):
        keys = list(range(len(node)))
    else:
        return
    for k in keys:
        try:
            child = node[k]
        except Exception:  # an interpolation only Hydra resolves
            continue
        yield from target_nodes(child, f"{prefix}.{k}" if prefix else str(k))


def accepted(obj: Any) -> tuple[list[str], bool]:
    """(keyword arguments, open): what a class (its __init__, and genlab base classes its **kwargs reach)
    or function takes; ``open`` when it takes any keyword whose fate is unknown here."""
    if not isinstance(obj, type):
        params = inspect.signature(obj).parameters.values()
        return named(params), any(p.kind is p.VAR_KEYWORD for p in params)
    names: list[str] = []
    for base in obj.__mro__:
        init = vars(base).get("__init__")
        if init is None:
            continue
        params = inspect.signature(init).parameters.values()
        names += named(params)
        if not any(p.kind is p.VAR_KEYWORD for p in params):
            return names, False
        forwarded = FORWARDED.get(f"{base.__module__}.{base.__qualname__}")
        if forwarded:
            more, is_open = accepted(locate(forwarded))
            return names + more, is_open
        if not base.__module__.startswith("genlab."):
            return names, True
    return names, True


def named(params: Any) -> list[str]:
    return [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name != "self"]


def target_errors(cfg: DictConfig) -> list[str]:
    """Every ``_target_`` must be importable; a node without a schema may hold only the arguments its target
    takes, of the simple types and ranges it declares (a schema-typed node is checked by its schema)."""
    errors = []
    for key, node in target_nodes(cfg, ""):
        target = node.get("_target_")
        try:
            obj = locate(str(target))
        except Exception as e:
            errors.append(f"{key}._target_={target}: it names no class or function that can be imported "
                          f"({type(e).__name__})")
            continue
        typed = schema_of(node) is not None  # its schema checks its keys and types; the target its ranges
        if not typed:
            try:
                names, is_open = accepted(obj)
            except (TypeError, ValueError):  # no signature to read (a builtin): its own call will tell
                continue
            extra = [str(k) for k in node.keys() if k not in HYDRA_KEYS and k not in names]
            if extra and not is_open:
                errors += [f"{key}.{k} is not an option of {target}: its options are {', '.join(names)}"
                           for k in extra]
                continue
        for name, rule in argument_rules(obj).items():
            if name in node and not (typed and not rule[2]):
                problem = argument_problem(f"{key}.{name}", select(node, name), *rule)
                if problem:
                    errors.append(problem)
    return errors
