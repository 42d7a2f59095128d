"""The checks of what a ``_target_`` names: that it can be imported, and, for a node without a schema, that it is
given only the arguments its target takes, of the simple types the target declares (``target_errors``, part of
``genlab.config.checks.validate``)."""

from __future__ import annotations

import importlib
import inspect
import types
import typing
from collections.abc import Iterator
from typing import Any

from omegaconf import DictConfig, ListConfig

from genlab.config.fields import HYDRA_KEYS, is_number, schema_of, select

# Targets whose **kwargs go to another class: their options are that class's too.
FORWARDED = {"pytorch_lightning.loggers.tensorboard.TensorBoardLogger": "torch.utils.tensorboard.SummaryWriter"}


def locate(path: str) -> Any:
    """The object a dotted ``_target_`` path names (a module's attribute, possibly nested), as Hydra finds it;
    ImportError when there is none. Quiet, unlike hydra.utils.get_object, which logs the failure."""
    parts = path.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        try:
            for name in parts[i:]:
                obj = getattr(obj, name)
        except AttributeError:
            raise ImportError(f"{'.'.join(parts[:i])} has no {'.'.join(parts[i:])}") from None
        return obj
    raise ImportError(f"no module {parts[0]}")


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


def simple_types(obj: Any) -> dict[str, tuple[type, bool]]:
    """{argument: (int, float, bool or str; whether None is allowed)} for the annotated arguments of a
    class's __init__ or a function whose annotation is one of those types (or Optional of one)."""
    try:
        hints = typing.get_type_hints(obj.__init__ if isinstance(obj, type) else obj)
    except Exception:  # annotations that name what is not importable here
        return {}
    out = {}
    for name, hint in hints.items():
        args = typing.get_args(hint)
        optional = typing.get_origin(hint) in (typing.Union, types.UnionType) and type(None) in args
        inner = [a for a in args if a is not type(None)] if optional else [hint]
        if len(inner) == 1 and inner[0] in (int, float, bool, str):
            out[name] = (inner[0], optional)
    return out


def type_problem(value: Any, kind: type, optional: bool) -> str | None:
    if value is None:
        return None if optional else "null"
    ok = {int: isinstance(value, int) and not isinstance(value, bool), float: is_number(value),
          bool: isinstance(value, bool), str: isinstance(value, str)}[kind]
    return None if ok else {int: "an integer", float: "a number", bool: "true or false", str: "a string"}[kind]


def target_errors(cfg: DictConfig) -> list[str]:
    """Every ``_target_`` must be importable; a node without a schema may hold only the arguments its target
    takes, of the simple types it declares (a schema-typed node is checked by its schema)."""
    errors = []
    for key, node in target_nodes(cfg, ""):
        target = node.get("_target_")
        try:
            obj = locate(str(target))
        except Exception as e:
            errors.append(f"{key}._target_={target}: it names no class or function that can be imported "
                          f"({type(e).__name__})")
            continue
        if schema_of(node) is not None:
            continue
        try:
            names, is_open = accepted(obj)
        except (TypeError, ValueError):  # no signature to read (a builtin): its own call will tell
            continue
        extra = [str(k) for k in node.keys() if k not in HYDRA_KEYS and k not in names]
        if extra and not is_open:
            errors += [f"{key}.{k} is not an option of {target}: its options are {', '.join(names)}" for k in extra]
            continue
        for name, (kind, optional) in simple_types(obj).items():
            if name in node:
                value = select(node, name)
                wanted = type_problem(value, kind, optional)
                if wanted:
                    errors.append(f"{key}.{name}={value!r} is not {wanted}" + (" (or null)" if optional else ""))
    return errors
