"""What a config read from a run folder or a checkpoint may make genlab do: build the classes genlab itself
puts in configs, and nothing else, unless the user vouches for the folder (``trust=true``, ``--trust``).

A run folder travels (a colleague's CLIP run given as ``model.clip=``, a run to score with genlab-eval or to
continue with ``resume=``), and its ``.hydra/config.yaml`` and the config inside its checkpoints are
instantiated. So such a config is data: before anything is built from it,

- every ``_target_`` must name, *after following the name to the object it reaches*, an allowed object
  (``allowed``): a class defined in genlab, a genlab network builder (a function of ``genlab.nets``), a
  ``torch.nn`` module class, a ``torch.optim`` optimiser or schedule class, a torchvision module class, or
  one of Lightning's trainer, callback, strategy and plugin classes and its two loggers that write into
  the run folder (TensorBoard, CSV; never one that sends the run to a server the folder names).
  The check is on the object, not on its name: ``genlab.checkpoints.torch.load`` is ``torch.load`` under
  another name, and every callable has many names, so a list of forbidden names could never hold.
  Names outside those packages are refused before anything is imported, so a folder cannot make genlab
  import a module it carries.
- every interpolation may call only the resolvers genlab's own configs use (``ALLOWED_RESOLVERS``), so a
  folder cannot read the environment (``oc.env``) or make new nodes from strings (``oc.create``,
  ``oc.decode``); a ``_target_`` may not be an interpolation at all.

The user's trust is a fact of the command, never of the folder: it is set once by each entry point
(``set_user_trust``) and read where frozen components are loaded (``user_trust``).
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Iterator
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from genlab.errors import UserError

# the only packages a folder's ``_target_`` may import from; anything else is refused unimported
SAFE_PACKAGES = ("genlab", "torch", "torchvision", "pytorch_lightning", "lightning", "lightning_fabric")
# genlab's own resolvers (genlab.config.setup_hydra) and Hydra's, as conf/ uses them; none reads a file
# or the environment, none makes a config node from a string
ALLOWED_RESOLVERS = frozenset({"genlab_cwd", "genlab_run_name", "genlab_run_dir", "genlab_hydra_subdir",
                               "genlab_slurm_tasks", "genlab_slurm_gpus", "hydra", "now"})
HOW_TO_TRUST = "pass trust=true (genlab-train) or --trust (genlab-eval, genlab-sample) only if you trust it"

_user_trust = False


def set_user_trust(trust: bool) -> None:
    """The user vouches (or not) for every folder and checkpoint this command opens."""
    global _user_trust
    _user_trust = bool(trust)


def user_trust() -> bool:
    """Whether this command's user vouched for the folders it opens (``trust=true``, ``--trust``)."""
    return _user_trust


def in_package(module: Any, package: str) -> bool:
    return isinstance(module, str) and (module == package or module.startswith(package + "."))


def allowed(obj: Any, trusted: tuple[str, ...] = ()) -> bool:
    """Whether a config from a folder may build ``obj`` (the object a ``_target_`` reaches): see the module's
    docstring. ``trusted``: modules the user named on the command line (``trusted_modules``)."""
    module = getattr(obj, "__module__", None)
    if any(in_package(module, m) for m in trusted) and (isinstance(obj, type) or inspect.isfunction(obj)):
        return True
    if inspect.isfunction(obj):  # plain functions: genlab's network builders alone
        return in_package(module, "genlab.nets")
    if not isinstance(obj, type):  # a module, a bound method, an instance, a builtin: never
        return False
    if in_package(module, "genlab"):
        return True
    import torch

    if issubclass(obj, torch.nn.Module):
        return in_package(module, "torch.nn") or in_package(module, "torchvision")
    if in_package(module, "torch.optim"):
        return issubclass(obj, (torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler))
    if any(in_package(module, p) for p in ("pytorch_lightning", "lightning", "lightning_fabric")):
        return issubclass(obj, lightning_bases()) and not lightning_refused(obj)
    return False


def lightning_refused(cls: type) -> bool:
    """Lightning classes a folder may not build: loggers other than the two that write into the run folder
    (the others send the run's data to a server the folder would name) and the callback made of callables."""
    from pytorch_lightning.callbacks import LambdaCallback
    from pytorch_lightning.loggers import CSVLogger, Logger, TensorBoardLogger

    remote_logger = issubclass(cls, Logger) and not issubclass(cls, (TensorBoardLogger, CSVLogger))
    return remote_logger or issubclass(cls, LambdaCallback)


def lightning_bases() -> tuple[type, ...]:
    import pytorch_lightning as pl
    from lightning_fabric.plugins import CheckpointIO
    from pytorch_lightning.loggers import Logger
    from pytorch_lightning.plugins import Precision
    from pytorch_lightning.strategies import Strategy

    return pl.Trainer, pl.Callback, Logger, Strategy, Precision, CheckpointIO


def reach(target: str, trusted: tuple[str, ...] = ()) -> Any:
    """The object a ``_target_`` names, found as Hydra's instantiate finds it; ImportError when there is none.
    Only names inside SAFE_PACKAGES and the user's ``trusted`` modules are looked up (importing runs a module)."""
    if target.split(".", 1)[0] not in SAFE_PACKAGES and not any(in_package(target, m) for m in trusted):
        raise ImportError(f"{target} is outside {', '.join(SAFE_PACKAGES)}")
    from hydra.utils import get_object

    hydra_log = logging.getLogger("hydra.utils")  # get_object logs its failure before raising it
    level = hydra_log.level
    hydra_log.setLevel(logging.CRITICAL)
    try:
        return get_object(target)
    except Exception as e:  # Hydra's message, to its first line: the refusal stays one line
        raise ImportError((str(e).strip().splitlines() or [type(e).__name__])[0]) from None
    finally:
        hydra_log.setLevel(level)


def _nodes(node: Any, where: str = "") -> Iterator[tuple[str, Any, Any]]:
    """(key, name, value) for every entry of a plain config tree (dicts and lists), depth first."""
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for k, v in items:
        key = f"{where}[{k}]" if isinstance(node, list) else f"{where}.{k}" if where else str(k)
        yield key, k, v
        yield from _nodes(v, key)


def resolvers_in(text: str) -> list[str]:
    """The resolvers an OmegaConf string calls (``${oc.env:HOME}`` -> ["oc.env"]), nested ones included;
    ValueError for a string OmegaConf cannot parse."""
    from omegaconf import grammar_parser
    from omegaconf.grammar.gen.OmegaConfGrammarParser import OmegaConfGrammarParser

    try:
        tree = grammar_parser.parse(text)
    except Exception as e:
        raise ValueError(str(e)) from None
    names, stack = [], [tree]
    while stack:
        n = stack.pop()
        if isinstance(n, OmegaConfGrammarParser.InterpolationResolverContext):
            names.append(n.resolverName().getText())
        stack.extend(n.getChild(i) for i in range(n.getChildCount()) if hasattr(n, "getChildCount"))
    return names


def problems(node: Any, trusted: tuple[str, ...] = ()) -> list[str]:
    """What in a config tree a folder may not make genlab do: each as "<key>: <why>"."""
    if isinstance(node, (DictConfig, ListConfig)):
        node = OmegaConf.to_container(node, resolve=False)
    found = []
    for key, name, value in _nodes(node):
        if isinstance(value, str) and "${" in value:
            if name == "_target_":
                found.append(f"{key}={value} is an interpolation: a _target_ from a folder must be a plain name")
                continue
            try:
                bad = sorted({r for r in resolvers_in(value) if r not in ALLOWED_RESOLVERS})
            except ValueError:
                found.append(f"{key}={value!r} is not an interpolation OmegaConf can read")
                continue
            if bad:
                found.append(f"{key}={value!r} calls the resolver {', '.join(bad)}, which can read the environment "
                             "or files or make config nodes from text")
        if name != "_target_":
            continue
        if not isinstance(value, str):
            found.append(f"{key} is {type(value).__name__}, not the name of a class")
            continue
        try:
            obj = reach(value, trusted)
        except ImportError as e:
            found.append(f"{key}={value} names nothing genlab may build ({e})")
            continue
        if not allowed(obj, trusted):
            what = f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', type(obj).__name__)}"
            found.append(f"{key}={value} is {what}, not a class genlab puts in configs")
    return found


def check_config(node: Any, source: str, trust: bool = False, trusted: tuple[str, ...] = ()) -> None:
    """Refuse, in one line naming the key, a config from a folder or a checkpoint (``source``) that would make
    genlab run code other than the classes it builds itself; nothing when the user vouches (``trust``)."""
    if trust:
        return
    found = problems(node, trusted)
    if found:
        more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
        raise UserError(f"{source}: {found[0]}{more}; genlab does not run code named by a file: {HOW_TO_TRUST}.")
