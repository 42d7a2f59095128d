"""Checkpoints that are safe to open and always whole.

A genlab checkpoint holds tensors and plain data only: Lightning's state (weights, optimisers,
loops, callbacks) plus a ``"genlab"`` entry with the model's config (``_target_`` strings and
numbers), the DataInfo as a dict, the model's batch count and the random states. So every load
uses ``torch.load(weights_only=True)``, which cannot run code, and the model is rebuilt from its
config — which may name only the classes genlab builds itself (``genlab.safety``) unless the user
says ``--trust``.

Writes go to a temporary file in the destination folder, flushed to disk, then renamed over the
old file: a full disk or a kill leaves the previous checkpoint, never a truncated one.
"""

from __future__ import annotations

import dataclasses
import io
import pickle
import random
import shutil
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO
from omegaconf import DictConfig, OmegaConf

from genlab.errors import UserError, with_article
from genlab.files import write_atomically
from genlab.runfolder import moved_target
from genlab.safety import check_config


def tensor_bytes(value: Any) -> int:
    """The bytes of the tensors in a (nested) checkpoint: about the size of its file."""
    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    if isinstance(value, dict):
        return sum(tensor_bytes(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return sum(tensor_bytes(v) for v in value)
    return 0


# ---- writing whole files ---------------------------------------------------------------------
class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint IO, with whole-file writes and weights-only reads.

    ``trainer.save_checkpoint`` and every ModelCheckpoint write through it (a Trainer plugin,
    conf/trainer/default.yaml); reads refuse files that would need unpickling, naming the file.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        # checked against the free space first: a full disk is said before the write, not found in it
        write_atomically(path, lambda f: torch.save(checkpoint, f), need=tensor_bytes(checkpoint) + (64 << 10))

    def load_checkpoint(self, path: Any, map_location: Any = None, weights_only: bool | None = None) -> dict[str, Any]:
        return read_checkpoint(path, map_location, trust=weights_only is False)  # False only with trust=true


# ---- reading safely ----------------------------------------------------------------------------
def read_checkpoint(path: str | Path, map_location: Any = "cpu", trust: bool = False) -> dict[str, Any]:
    """The checkpoint at ``path`` as a dict, loaded with ``weights_only=True`` (no code can run);
    ``trust=True`` unpickles whatever the file holds — only for files you trust. UserError naming the
    file when it is missing, a folder, not a checkpoint, or holds pickled Python objects."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"checkpoint {path} does not exist.")
    if not path.is_file():
        raise UserError(f"checkpoint {path} is a folder, not a file.")
    try:
        with warnings.catch_warnings():  # torch's note on a pickle protocol it does not expect
            warnings.simplefilter("ignore", UserWarning)
            state = torch.load(path, map_location=map_location, weights_only=not trust)
    except pickle.UnpicklingError as e:
        # "Unsupported global": a checkpoint that names Python code to call; a bare pickle stream (it starts
        # with the PROTO opcode 0x80) may do the same; anything else is a damaged file or no checkpoint
        with path.open("rb") as f:
            bare_pickle = f.read(1) == b"\x80"
        if "Unsupported global" in str(e) or bare_pickle:
            raise UserError(
                f"checkpoint {path} holds pickled Python objects, which could run code when loaded, so genlab "
                "does not open it. Only if you made it yourself (an older genlab wrote such files): convert its "
                "run once with genlab-eval --trust --convert RUN_DIR, or load it as it is with genlab-eval "
                "--trust (genlab-train: trust=true)."
            ) from None
        reason = next((line.strip() for line in str(e).splitlines() if "Unsupported" in line), first_line(e))
        raise UserError(f"checkpoint {path} is damaged or not a checkpoint ({reason}).") from None
    except Exception as e:  # damaged bytes fail anywhere in torch's reader (IndexError, struct.error, ...)
        raise UserError(f"checkpoint {path} is damaged or not a checkpoint ({first_line(e)}).") from None
    if not isinstance(state, dict) or "state_dict" not in state:
        raise UserError(f"checkpoint {path} is not a model checkpoint (it holds no state_dict).")
    return state


def first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0]}" if text else type(e).__name__


# ---- random states -----------------------------------------------------------------------------
def rng_states() -> dict[str, Any]:
    """Every random state a run draws from, as plain data: torch (CPU and CUDA), numpy, Python."""
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
        "python": [list(x) if isinstance(x, tuple) else x for x in random.getstate()],
    }


def set_rng_states(states: dict[str, Any]) -> None:
    """Restore what ``rng_states`` recorded."""
    torch.set_rng_state(states["torch"])
    if states.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
    kind, keys, *rest = states["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), *rest))
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))


# ---- models from checkpoints -------------------------------------------------------------------
def model_from_checkpoint(state: dict[str, Any], source: str, model_cfg: Any = None, trusted: tuple[str, ...] = (),
                          trust: bool = False, data_info: Any = None) -> Any:
    """The model a checkpoint holds, rebuilt from config and loaded with its weights.

    ``model_cfg``: the run's model config (genlab-eval rebuilds a run from its own config); None: the
    config the checkpoint carries. Either way the config may name only what genlab builds
    (``genlab.safety.check_config``) unless ``trust``, and a checkpoint of another kind of model than
    the config says is refused.
    ``data_info``: the run's DataInfo, for older checkpoints that do not carry it.
    """
    from genlab.data.base import DataInfo

    record = state.get("genlab") or {}
    carried, info = record.get("model_config"), record.get("data_info")
    if isinstance(carried, dict) and "_target_" in carried:
        carried = {**carried, "_target_": moved_target(carried["_target_"])}
    if info is None and data_info is not None:
        info = dataclasses.asdict(data_info)
    if info is None or (model_cfg is None and carried is None):
        raise UserError(f"{source} was not written by genlab-train (it carries no model config): genlab cannot "
                        "rebuild its model.")
    cfg = OmegaConf.create(carried if model_cfg is None else OmegaConf.to_container(model_cfg, resolve=True))
    if carried is not None and carried.get("_target_") != cfg.get("_target_"):
        raise UserError(f"{source} holds a {carried.get('_target_')} model, but the run's config builds "
                        f"{cfg.get('_target_')}: the checkpoint belongs to another run.")
    check_config(cfg, source, trust, trusted)
    model = build_model(cfg, DataInfo.from_dict(info))
    load_weights(model, state, source)
    model.config_record = OmegaConf.to_container(cfg, resolve=True)
    return model


def build_model(node: DictConfig, data_info: Any, where: str = "model") -> Any:
    """The model of config node ``node`` (at config path ``where``) for data ``data_info``. Its frozen
    components — the constructor arguments its class declares in ``frozen_runs`` (``genlab.capabilities.
    FrozenRun``), given in the config as a finished run's folder — are loaded from their folders, checked
    against the declaration and passed in as models, so that no model opens a folder itself."""
    from hydra.utils import get_object

    from genlab.config.instantiation import build

    declared = getattr(get_object(node._target_), "frozen_runs", None) or {}
    if not declared:
        return build(node, data_info=data_info)
    parts = {name: frozen_component(node, name, f"{where}.{name}", spec, data_info) for name, spec in declared.items()}
    rest = OmegaConf.create({k: v for k, v in OmegaConf.to_container(node, resolve=True).items() if k not in parts})
    return build(rest, data_info=data_info, **parts)


def frozen_component(node: DictConfig, name: str, key: str, spec: Any, data_info: Any) -> Any:
    """The tested model of the finished run whose folder ``node[name]`` gives (config path ``key``), frozen,
    trusted only as far as this command's user vouches (``genlab.safety.user_trust``); UserError naming the
    key when the folder is missing or not a run, or its model is not what ``spec`` (a FrozenRun) asks for; None
    for an optional component the config sets to null."""
    from genlab.runfolder import RunFolder
    from genlab.safety import user_trust

    how = f" ({spec.how})" if spec.how else ""
    if spec.optional and not OmegaConf.is_missing(node, name) and node.get(name) is None:
        return None
    if OmegaConf.is_missing(node, name) or node.get(name) is None:
        raise UserError(f"{key} must be given: the folder of a finished {spec.what} run{how}.")
    folder = str(node[name])
    checkpoint = RunFolder(folder).finished_checkpoint(key, spec.what)
    model = model_from_checkpoint(read_checkpoint(checkpoint, trust=user_trust()), f"checkpoint {checkpoint}",
                                  trust=user_trust())
    problems = spec.problems(model, data_info)
    if problems:
        raise UserError(f"{key}={folder} " + "; it ".join(problems) + f": give the folder of "
                        f"{with_article(spec.what)} run{how}.")
    return model.requires_grad_(False).eval()


def load_weights(model: Any, state: dict[str, Any], source: str) -> None:
    """Load a checkpoint's weights into ``model``; UserError naming what differs when they do not fit
    (another model, another code size), instead of torch's list of tensors."""
    check_compatible(model, state, source)
    model.load_state_dict(state["state_dict"])
    model.on_load_checkpoint(state)


def convert_checkpoint(path: Path, model_config: dict[str, Any], data_info: dict[str, Any]) -> Path | None:
    """Rewrite an older genlab checkpoint that needs unpickling (its hyperparameters held the network
    builders and DataInfo as Python objects) as a safe one: the pickled entries dropped, the run's model
    config and data description added as plain data. Only for files the user trusts (it unpickles).
    The original is kept beside it as ``<name>.pickled``. Returns that path, or None when the file was
    safe already."""
    try:
        read_checkpoint(path)
        return None
    except UserError:
        pass
    state = read_checkpoint(path, trust=True)
    for key in ("hyper_parameters", "hparams_name", "datamodule_hyper_parameters", "datamodule_hparams_name"):
        state.pop(key, None)
    record = state.setdefault("genlab", {})
    record.setdefault("model_config", model_config)
    record.setdefault("data_info", data_info)
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    try:  # what is left must load weights-only
        torch.load(buffer, weights_only=True)
    except pickle.UnpicklingError as e:
        raise UserError(f"checkpoint {path} still holds Python objects after conversion ({first_line(e)}); "
                        "it was not written by genlab-train.") from None
    backup = path.with_name(path.name + ".pickled")
    shutil.copy2(path, backup)  # the original stays until the new file is whole
    write_atomically(path, lambda f: f.write(buffer.getvalue()))
    return backup


def check_compatible(model: Any, state: dict[str, Any], source: str) -> None:
    """UserError when the checkpoint's weights do not have the model's names and shapes."""
    have = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in state["state_dict"].items() if hasattr(v, "shape")}
    missing, extra = sorted(have.keys() - got.keys()), sorted(got.keys() - have.keys())
    shapes = [k for k in have.keys() & got.keys() if have[k] != got[k]]
    if missing or extra or shapes:
        kind = (state.get("genlab") or {}).get("model_config", {}) or {}
        what = f"a {kind.get('_target_', 'different')} model" + (
            f" with latent_dim={kind['latent_dim']}" if "latent_dim" in kind else "")
        detail = (f"{shapes[0]} is {got[shapes[0]]} there but {have[shapes[0]]} here" if shapes else
                  f"{(missing or extra)[0]} is {'missing there' if missing else 'not in this model'}")
        raise UserError(f"{source} holds {what}, which does not fit this run's model ({detail}).")
