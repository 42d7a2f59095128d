"""Schema fields with ranges and choices, and the check that enforces them with the full key."""

from __future__ import annotations

import dataclasses
from dataclasses import field
from typing import Any

from omegaconf import MISSING, DictConfig, OmegaConf

from genlab.errors import UserError

ACTIVATIONS = ("relu", "leaky_relu", "elu", "gelu", "silu", "tanh", "sigmoid", "none")


def opt(default: Any = MISSING, *, ge: float | None = None, gt: float | None = None,
        le: float | None = None, lt: float | None = None, choices: tuple | None = None) -> Any:
    """A dataclass field with a range or a set of choices that ``validate`` enforces."""
    meta = {k: v for k, v in dict(ge=ge, gt=gt, le=le, lt=lt, choices=choices).items() if v is not None}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


def check_field(key: str, value: Any, meta: dict) -> str | None:
    """The message for a value outside its declared range or choices, else None."""
    if value is None or isinstance(value, bool) and "choices" not in meta:
        return None
    if "choices" in meta and value not in meta["choices"]:
        return f"{key}={value!r} is not one of {', '.join(map(str, meta['choices']))}"
    for op, bound, ok in (("ge", ">=", lambda a, b: a >= b), ("gt", ">", lambda a, b: a > b),
                          ("le", "<=", lambda a, b: a <= b), ("lt", "<", lambda a, b: a < b)):
        if op in meta:
            values = value if isinstance(value, list) else [value]
            for v in values:
                if isinstance(v, (int, float)) and not ok(v, meta[op]):
                    return f"{key}={value} is out of range: it must be {bound} {meta[op]}"
    return None


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


def validate(cfg: DictConfig) -> None:
    """Check every schema-typed node's ranges and choices; raise one UserError listing all."""
    errors: list[str] = []
    for key, node in structured_nodes(cfg):
        try:
            obj = OmegaConf.to_object(node)
        except Exception as e:  # a missing mandatory value, a bad interpolation
            raise UserError(f"Config error in {key}: {e}") from None
        walk(obj, key, errors)
    if errors:
        raise UserError("Invalid config:\n  " + "\n  ".join(errors))
