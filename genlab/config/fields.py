"""Schema fields with ranges and choices, and the checks that enforce them with the full key.

``opt`` declares a field's range or choices; ``walk`` and ``unknown_keys`` check a config against its
schemas for ``genlab.config.checks.validate``. Objects built from config nodes without a schema
(metrics, pictures) declare their arguments' ranges once, in the annotation (``Bounds``): the checks
of the config enforce them with the full key (``genlab.config.targets``), and ``checked`` when the
object is made in Python.
"""
from __future__ import annotations

import dataclasses
import functools
import inspect
import math
import types
import typing
from collections.abc import Callable, Iterator
from dataclasses import field
from typing import Any, TypeVar

from omegaconf import MISSING, DictConfig, ListConfig, OmegaConf

from genlab.errors import ArgumentError

ACTIVATIONS = ("relu", "leaky_relu", "elu", "gelu", "silu", "tanh", "sigmoid", "none")
HYDRA_KEYS = ("_target_", "_partial_", "_recursive_", "_convert_", "_args_")  # what instantiate reads itself


def opt(default: Any = MISSING, *, ge: float | None = None, gt: float | None = None,
        le: float | None = None, lt: float | None = None, choices: tuple | None = None) -> Any:
    """A dataclass field with a range or a set of choices that ``validate`` enforces."""
    meta = {k: v for k, v in dict(ge=ge, gt=gt, le=le, lt=lt, choices=choices).items() if v is not None}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


def is_number(value: Any) -> bool:
    """An int or a float, not a bool (which Python counts as an int)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_field(key: str, value: Any, meta: dict) -> str | None:
    """The message for a value outside its declared range or choices, or a float that is not finite
    (NaN and inf pass every comparison or fail it silently), else None."""
    if value is None or isinstance(value, bool) and "choices" not in meta:
        return None
    if "choices" in meta and value not in meta["choices"]:
        return f"{key}={value!r} is not one of {', '.join(dict.fromkeys(map(str, meta['choices'])))}"
    values = list(value) if isinstance(value, (list, tuple, ListConfig)) else [value]
    if any(isinstance(v, float) and not math.isfinite(v) for v in values):
        return f"{key}={value} is not a finite number"
    for op, bound, ok in (("ge", ">=", lambda a, b: a >= b), ("gt", ">", lambda a, b: a > b),
                          ("le", "<=", lambda a, b: a <= b), ("lt", "<", lambda a, b: a < b)):
        if op in meta:
            for v in values:
                if is_number(v) and not ok(v, meta[op]):
                    return f"{key}={value} is out of range: it must be {bound} {meta[op]}"
    return None


@dataclasses.dataclass(frozen=True)
class Bounds:
    """The range or choices of a constructor's argument, declared once in its annotation:
    ``knn_k: Annotated[int, Bounds(ge=1)] = 5`` (the same keywords as ``opt``)."""

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    choices: tuple | None = None

    def meta(self) -> dict[str, Any]:
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}


SIMPLE_TYPES = (int, float, bool, str)
Rule = tuple[type, bool, dict]  # (int, float, bool or str; whether None is allowed; the Bounds' meta)


def argument_rules(obj: Any) -> dict[str, Rule]:
    """The declared rule of each argument of a class's __init__ (or a function) annotated with a simple type
    (or Optional of one), possibly ``Annotated`` with ``Bounds``. Annotations that name what cannot be
    imported here give no rules."""
    try:
        hints = typing.get_type_hints(obj.__init__ if isinstance(obj, type) else obj, include_extras=True)
    except Exception:
        return {}
    out = {}
    for name, hint in hints.items():
        meta: dict = {}
        if typing.get_origin(hint) is typing.Annotated:
            hint, *extras = typing.get_args(hint)
            for extra in extras:
                if isinstance(extra, Bounds):
                    meta.update(extra.meta())
        args = typing.get_args(hint)
        optional = typing.get_origin(hint) in (typing.Union, types.UnionType) and type(None) in args
        inner = [a for a in args if a is not type(None)] if optional else [hint]
        if len(inner) == 1 and inner[0] in SIMPLE_TYPES:
            out[name] = (inner[0], optional, meta)
    return out


def argument_problem(key: str, value: Any, kind: type, optional: bool, meta: dict) -> str | None:
    """The message for ``value`` of argument ``key`` against its rule (``argument_rules``), or None."""
    if value is None:
        return None if optional else f"{key}=null is not allowed"
    ok = {int: isinstance(value, int) and not isinstance(value, bool), float: is_number(value),
          bool: isinstance(value, bool), str: isinstance(value, str)}[kind]
    if not ok:
        wanted = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}[kind]
        return f"{key}={value!r} is not {wanted}" + (" (or null)" if optional else "")
    return check_field(key, value, meta)


Init = TypeVar("Init", bound=Callable[..., None])


def checked(init: Init) -> Init:
    """Decorate a constructor: its arguments are checked against their annotated types and ``Bounds`` as the
    object is made; an ArgumentError names the argument (the builder of a config node adds the node's key)."""
    signature = inspect.signature(init)
    rules: dict[str, Rule] | None = None

    @functools.wraps(init)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> None:
        nonlocal rules
        if rules is None:  # annotations are strings until the class's module is loaded
            rules = argument_rules(init)
        bound = signature.bind(self, *args, **kwargs)
        bound.apply_defaults()
        check_arguments(type(self).__name__, rules, bound.arguments)
        init(self, *args, **kwargs)

    return typing.cast(Init, wrapper)


def check_arguments(owner: str, rules: dict[str, Rule], values: dict[str, Any]) -> None:
    """An ArgumentError for the first of ``values`` outside its rule (``argument_rules``); for ``checked``
    and for dataclasses' ``__post_init__`` (``check_arguments(name, argument_rules(type(self)), vars(self))``)."""
    for name, rule in rules.items():
        value = values.get(name)
        if argument_problem(name, value, *rule):
            raise ArgumentError(owner, name, lambda key, value=value, rule=rule: argument_problem(key, value, *rule))


def too_many_neighbours(owner: str, argument: str, k: int, n: int, what: str) -> ArgumentError | None:
    """A k-nearest-neighbour count beyond the ``n`` points it searches (``what``: which points): a k-NN over
    every point gives one answer for all, so the metric would mean nothing. None when k fits."""
    if k <= n:
        return None
    return ArgumentError(owner, argument, lambda key: f"{key}={k} exceeds the {n} {what}: give at most {n}")


def needs_more(owner: str, argument: str, value: Any, other: str, other_value: Any, why: str) -> ArgumentError:
    """An argument that must exceed another of the same object: "n_samples=3 must exceed pr_k=3: <why>"."""
    def message(key: str) -> str:
        sibling = f"{key.rsplit('.', 1)[0]}.{other}" if "." in key else other
        return f"{key}={value} must exceed {sibling}={other_value}: {why}"
    return ArgumentError(owner, argument, message)


def walk(obj: Any, prefix: str, errors: list[str]) -> None:
    """Check every field of a dataclass instance and of the dataclasses inside it."""
    if not dataclasses.is_dataclass(obj):
        return
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        key = f"{prefix}.{f.name}" if prefix else f.name
        if f.metadata:
            msg = check_field(key, value, dict(f.metadata))
            if msg:
                errors.append(msg)
        walk(value, key, errors)


def schema_of(node: Any) -> type | None:
    """The dataclass a config node is typed by, or None."""
    if not isinstance(node, DictConfig):
        return None
    kind = OmegaConf.get_type(node)
    return kind if dataclasses.is_dataclass(kind) else None


def unknown_keys(node: Any, prefix: str) -> Iterator[str]:
    """A message for every key of a schema-typed node (at any depth) that its schema lacks: ``+key=...``
    adds keys that the schema would refuse as ``key=...``, and OmegaConf drops them silently."""
    if not isinstance(node, DictConfig):
        return
    schema = schema_of(node)
    if schema is not None:
        allowed = [f.name for f in dataclasses.fields(schema)]
        for key in node.keys():
            if str(key) not in allowed and not (prefix == "" and key == "hydra"):
                where = f"{prefix}.{key}" if prefix else str(key)
                node_name = prefix or "the top level"
                yield (f"{where} is not a key of {node_name} ({schema.__name__}): its keys are "
                       f"{', '.join(k for k in allowed if k not in HYDRA_KEYS)}")
    for key in node.keys():
        if prefix == "" and key == "hydra":
            continue
        try:
            child = node[key]
        except Exception:  # an interpolation only Hydra resolves; its own schema was checked
            continue
        yield from unknown_keys(child, f"{prefix}.{key}" if prefix else str(key))


def structured_nodes(cfg: DictConfig) -> Any:
    """Top-level nodes typed by a schema, and typed children of untyped ones (callbacks.x)."""
    for key, node in cfg.items():
        if not isinstance(node, DictConfig):
            continue
        if dataclasses.is_dataclass(OmegaConf.get_type(node)):
            yield str(key), node
        else:
            for sub_key, sub in node.items():
                if isinstance(sub, DictConfig) and dataclasses.is_dataclass(OmegaConf.get_type(sub)):
                    yield f"{key}.{sub_key}", sub


def top_level_errors(cfg: DictConfig) -> list[str]:
    """The ranges and choices of the top level's own scalar fields (seed, float32_matmul_precision):
    the typed nodes below are checked with their own schemas."""
    schema = schema_of(cfg)
    errors = []
    for f in dataclasses.fields(schema) if schema else ():
        if f.metadata and f.name in cfg and not isinstance(cfg[f.name], DictConfig):
            msg = check_field(f.name, cfg[f.name], dict(f.metadata))
            if msg:
                errors.append(msg)
    return errors


def select(cfg: DictConfig, key: str) -> Any:
    """The value at a dotted key, None when absent or not resolvable here (a Hydra-only interpolation)."""
    try:
        return OmegaConf.select(cfg, key, throw_on_missing=False)
    except Exception:
        return None
