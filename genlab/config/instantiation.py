"""Objects from config nodes: ``build`` instantiates one ``_target_`` node (completing it with live
objects such as a DataInfo), ``build_group`` every entry of a group such as callbacks or logger.
Light to import (Hydra only): used by train.py, the evaluator, genlab-eval and the tests."""

from __future__ import annotations

import re
from typing import Any

from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig

from genlab.errors import ArgumentError, UserError

FULL_KEY = re.compile(r"full_key: (\S+)")  # where Hydra's message says the failing node sits


def build(node: DictConfig, **kwargs: Any) -> Any:
    """Instantiate a config node, then call it with ``kwargs`` (live objects such as DataInfo).

    The node is instantiated as a partial first, so Hydra never turns the objects passed in
    into configs. A UserError raised inside a constructor reaches the user as its own
    one-line message instead of being wrapped in Hydra's InstantiationException; an ArgumentError
    gets the full key of the node that failed, as Hydra reports it.
    """
    try:
        if not kwargs:
            return instantiate(node)
        factory = instantiate(node, _partial_=True)
    except InstantiationException as e:
        cause = e.__cause__
        while cause is not None and not isinstance(cause, UserError):
            cause = cause.__cause__
        if isinstance(cause, ArgumentError):  # an argument of the node Hydra names: under its full key
            where = FULL_KEY.search(str(e))
            raise cause.at(where.group(1) if where else "") from None
        if cause is not None:
            raise cause from None
        raise
    return factory(**kwargs)


def build_group(node: DictConfig | None, group: str = "") -> list[Any]:
    """Instantiate every ``_target_`` entry of a group such as callbacks or logger. An object with a
    ``config_key`` attribute is told its key (``<group>.<name>``), so that what it refuses later, once the
    data is known, is named where the config holds it."""
    if not node:
        return []
    built = []
    for name, value in node.items():
        if isinstance(value, DictConfig) and "_target_" in value:
            obj = build(value)
            if hasattr(obj, "config_key"):
                obj.config_key = f"{group}.{name}" if group else str(name)
            built.append(obj)
    return built
