"""A run folder and its layout: where genlab-train writes a run, and what genlab-eval, genlab-sample,
``resume=`` and frozen components (``model.autoencoder=``, ``model.clip=``) read back from it.

    <run>/.hydra/config.yaml     the composed config (data, never instructions: genlab.safety)
    <run>/.hydra/hydra.yaml      Hydra's own config (the folder the run was started in, the group choices)
    <run>/.hydra/overrides.yaml  the command-line overrides
    <run>/metrics.json           the test metrics and the tested checkpoint (``best_checkpoint``)
    <run>/interrupted.json       only in a run stopped by a signal
    <run>/checkpoints/last.ckpt  and the best epoch's file
    <run>/images/                the pictures (also in TensorBoard)
    <run>/.lock                  held by the process that trains or tests the run (its pid inside)

Reads only: torch-free, so ``genlab-eval --help`` and a bad path are answered at once.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from genlab.errors import UserError, with_article

# classes that moved: runs written before the move name them by their old path (config and checkpoint)
MOVED_TARGETS = {"genlab.models.diffusion.LatentDDPM": "genlab.models.latent_diffusion.LatentDDPM"}


def moved_target(target: Any) -> Any:
    """The path a ``_target_`` has now (MOVED_TARGETS), so that older runs still load and resume."""
    return MOVED_TARGETS.get(target, target) if isinstance(target, str) else target


class RunFolder:
    """One run folder of genlab-train (which need not exist yet: ``is_run`` tells)."""

    def __init__(self, path: str | Path) -> None:
        self.given = str(path)  # as the user wrote it: Path("") would be the current folder
        self.path = Path(self.given).expanduser()

    def __repr__(self) -> str:
        return f"RunFolder({str(self.path)!r})"

    # ---- the layout ----------------------------------------------------------------------------
    @property
    def config_file(self) -> Path:
        return self.path / ".hydra" / "config.yaml"

    @property
    def hydra_file(self) -> Path:
        return self.path / ".hydra" / "hydra.yaml"

    @property
    def overrides_file(self) -> Path:
        return self.path / ".hydra" / "overrides.yaml"

    @property
    def metrics_file(self) -> Path:
        return self.path / "metrics.json"

    @property
    def interrupted_file(self) -> Path:
        return self.path / "interrupted.json"

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def last_checkpoint(self) -> Path:
        return self.checkpoints / "last.ckpt"

    @property
    def images(self) -> Path:
        return self.path / "images"

    @property
    def lock_file(self) -> Path:
        return self.path / ".lock"

    def is_run(self) -> bool:
        """Whether the folder holds a genlab run (its saved config)."""
        return self.config_file.is_file()

    def has_results(self) -> bool:
        """Whether the run wrote anything worth keeping: a checkpoint or metrics.json (an empty checkpoints/
        folder, of a run that failed to write its first checkpoint, is nothing to resume)."""
        return any(self.checkpoints.glob("*.ckpt")) or self.metrics_file.exists()

    @contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the folder while this process trains or tests the run in it: a second genlab-train on the same
        folder (two ``resume=`` of one run, or a resume while the run still trains) is refused, not raced.
        An advisory lock of the operating system (``flock``) on ``.lock``: it ends with the process, so a
        killed run leaves no stale lock. Where the system has no ``flock`` (Windows), nothing is held."""
        try:
            import fcntl
        except ImportError:
            yield
            return
        self.path.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.lock_file, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
                raise UserError(f"{self.path} is in use by another genlab-train (process {holder}): two runs in "
                                "one folder would overwrite each other's checkpoints. Wait for it to end, or stop "
                                "it first.") from None
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
            self.remove_temporaries()  # of a write killed in an earlier process: none can be under way now
            yield
        finally:
            os.close(fd)  # and with it the lock

    # ---- what it says about itself --------------------------------------------------------------
    def record(self) -> dict[str, Any]:
        """metrics.json as a dict ({} when the run wrote none): an object whose metrics are numbers (and units
        an object, columns and tags lists). UserError naming the file when it is damaged."""
        if not self.metrics_file.is_file():
            return {}
        try:
            record = json.loads(self.metrics_file.read_text())
        except (OSError, ValueError) as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
            raise UserError(f"{self.metrics_file} is not valid JSON ({type(e).__name__}): the run's record is "
                            "damaged.") from None
        shapes = {"metrics": dict, "units": dict, "columns": list, "tags": list}
        if not isinstance(record, dict) or any(k in record and not isinstance(record[k], t) for k, t in shapes.items()):
            raise UserError(f"{self.metrics_file} is not a genlab record: an object with metrics (an object of "
                            "numbers).")
        if any(not isinstance(v, (int, float)) or isinstance(v, bool) for v in record.get("metrics", {}).values()):
            raise UserError(f"{self.metrics_file} is not a genlab record: its metrics must all be numbers.")
        return record

    def overrides(self) -> dict[str, str]:
        """The run's command-line overrides (``.hydra/overrides.yaml``) as key -> value strings ({} when it has
        none); UserError naming the file when it is not a list in YAML."""
        if not self.overrides_file.is_file():
            return {}
        try:
            items = OmegaConf.load(self.overrides_file)
        except Exception:  # YAML syntax errors of every kind
            items = None
        if not isinstance(items, ListConfig):
            raise UserError(f"{self.overrides_file} is not a list of overrides in YAML: the run's record is damaged.")
        out = {}
        for item in OmegaConf.to_container(items):
            key, _, value = str(item).partition("=")
            out[key.lstrip("+~")] = value
        return out

    def tested_checkpoint(self) -> Path | None:
        """The checkpoint the run tested (metrics.json's ``best_checkpoint``, looked up by its name in the run's
        own checkpoints/ folder, so a copied or moved run scores its own files and a record never points
        genlab outside the folder), else ``checkpoints/last.ckpt``; None when there is neither. UserError
        when the file is reached through a symbolic link (it would be read from outside the folder)."""
        best = self.record().get("best_checkpoint")
        candidates = [self.checkpoints / Path(best).name] if isinstance(best, str) and best else []
        found = next((p for p in [*candidates, self.last_checkpoint] if p.is_file()), None)
        if found is not None and (found.is_symlink() or self.checkpoints.is_symlink()):
            raise UserError(f"{found} is reached through a symbolic link: genlab reads a run's checkpoints only "
                            "from inside its folder. Replace the link by the file itself.")
        return found

    def links(self) -> list[str]:
        """The symbolic links inside the run's folder, at any depth ("where -> target"), none followed."""
        out = []
        for root, dirs, files in os.walk(self.path):  # a linked folder is listed, never entered
            for name in sorted(dirs + files):
                path = Path(root) / name
                if path.is_symlink():
                    out.append(f"{path.relative_to(self.path)} -> {os.readlink(path)}")
        return out

    def check_closed(self, command: str) -> None:
        """A run folder is a closed box: UserError when it holds symbolic links, through which ``command``
        (resume=, genlab-eval, genlab-sample) would write or read outside it."""
        links = self.links()
        if links:
            shown = ", ".join(links[:3]) + (f" and {len(links) - 3} more" if len(links) > 3 else "")
            raise UserError(f"{self.path} holds symbolic links ({shown}): {command} reads and writes only inside a "
                            "run's folder, never through a link. Replace each link by what it points to (or "
                            "work on a copy made with cp -rL).")

    def hydra_setting(self, key: str) -> Any:
        """A value of the run's Hydra config (``runtime.cwd``, ``runtime.choices``), None when absent."""
        if not self.hydra_file.is_file():
            return None
        try:
            return OmegaConf.select(OmegaConf.load(self.hydra_file), f"hydra.{key}")
        except Exception:  # a damaged hydra.yaml says nothing
            return None

    def config(self, trust: bool = False, trusted: tuple[str, ...] = ()) -> DictConfig:
        """The run's composed config, checked as data (``genlab.safety.check_config``: unless ``trust``, only
        the classes genlab builds itself), its paths anchored where the run was started (paths.root_dir from
        hydra.yaml, relative data paths made absolute), paths.output_dir the folder itself, the model's class
        by its path now. UserError for a folder that is not a genlab run or a file that is not its config."""
        from genlab.safety import check_config

        if not self.path.is_dir():
            raise UserError(f"{self.path} is not a folder.")
        if not self.is_run():
            raise UserError(f"{self.path} is not a genlab run: it has no .hydra/config.yaml "
                            "(genlab-train writes one into every run directory).")
        try:
            cfg = OmegaConf.load(self.config_file)
        except Exception as e:  # YAML syntax errors of every kind
            raise UserError(f"{self.config_file} is not valid YAML ({type(e).__name__}).") from None
        if not isinstance(cfg, DictConfig) or "model" not in cfg or "data" not in cfg:
            raise UserError(f"{self.config_file} is not a genlab config: it has no model and data.")
        if isinstance(cfg.model, DictConfig) and "_target_" in cfg.model:
            cfg.model._target_ = moved_target(cfg.model._target_)  # a run older than a class's move
        check_config(cfg, str(self.config_file), trust, trusted)
        # the user's trust is a fact of the command, never of the folder
        OmegaConf.update(cfg, "trust", bool(trust), force_add=True)
        OmegaConf.update(cfg, "trusted_modules", list(trusted), force_add=True)
        OmegaConf.update(cfg, "paths.output_dir", str(self.path), force_add=True)  # was ${hydra:runtime.output_dir}
        cwd = self.hydra_setting("runtime.cwd")
        if cwd is not None:
            OmegaConf.update(cfg, "paths.root_dir", str(cwd), force_add=True)
            for key in ("root", "path"):
                value = cfg.data.get(key)
                if isinstance(value, str) and "${" not in value and not Path(value).expanduser().is_absolute():
                    cfg.data[key] = str(Path(cwd) / value)
        return cfg

    def started_config(self) -> dict[str, Any] | None:
        """``.hydra/config.yaml`` as it stands, as plain data and unresolved (checkpoints keep it, so a resume can
        tell an edited file); None when the folder has none or it does not parse."""
        try:
            data = OmegaConf.to_container(OmegaConf.load(self.config_file), resolve=False)
        except Exception:
            return None
        return data if isinstance(data, dict) else None

    def config_edits(self, recorded: dict[str, Any], allowed: tuple[str, ...]) -> list[str]:
        """How ``.hydra/config.yaml`` differs from ``recorded`` (the config the checkpoint was trained with), one
        "key: was A, now B" per key, leaving out the keys in ``allowed`` (and those below them)."""
        now = flat(self.started_config() or {})
        before = flat(recorded)
        edits = []
        for key in sorted(set(now) | set(before)):
            if any(key == a or key.startswith(f"{a}.") for a in allowed) or now.get(key) == before.get(key):
                continue
            edits.append(f"{key}: {before.get(key, '(absent)')!r} in the checkpoint, "
                         f"{now.get(key, '(absent)')!r} in the file")
        return edits

    def remove_empty_files(self) -> None:
        """Remove the zero-byte files of the run's records (``.hydra/``, train.log, a logger's files) that a write
        refused by a full disk left; the lock file, empty by design, stays."""
        for root, _, names in os.walk(self.path):
            for name in names:
                path = Path(root) / name
                if path != self.lock_file and path.is_file() and not path.is_symlink() and path.stat().st_size == 0:
                    path.unlink(missing_ok=True)

    def remove_temporaries(self) -> list[Path]:
        """The temporary files a killed write left behind (``genlab.files``: ``.<name>.<random>.tmp`` beside the
        file it was writing), removed; only a process that holds the lock may call this."""
        gone = []
        for folder in (self.path, self.checkpoints):
            for tmp in folder.glob(".*.tmp") if folder.is_dir() else ():
                if tmp.is_file() and not tmp.is_symlink():
                    tmp.unlink(missing_ok=True)
                    gone.append(tmp)
        return gone

    def finished_checkpoint(self, key: str, what: str) -> Path:
        """The tested checkpoint of a finished run given as ``key`` (a frozen component: ``model.autoencoder``),
        a run of ``what`` kind; UserError naming the key when the folder or its checkpoint is missing."""
        given = self.given
        if not given.strip():  # Path("") is the current folder: say what was meant instead
            raise UserError(f"{key} is empty: give the folder of a finished {what} run "
                            "(genlab-train prints it as 'run directory').")
        if not self.path.is_dir():
            raise UserError(f"{key}={given} is not a folder: give the folder of a finished {what} run "
                            "(genlab-train prints it as 'run directory').")
        try:
            checkpoint = self.tested_checkpoint()
        except UserError:
            raise UserError(f"{key}={given}: {self.metrics_file} is not a genlab metrics file.") from None
        if checkpoint is None:
            raise UserError(f"{key}={given} has no finished run's checkpoint ({self.last_checkpoint} is missing): "
                            f"give the folder of {with_article(what)} run that has finished.")
        return checkpoint


def flat(data: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts as {dotted key: leaf} (lists are leaves)."""
    if not isinstance(data, dict) or not data:
        return {prefix: data} if prefix else {}
    out: dict[str, Any] = {}
    for k, v in data.items():
        out.update(flat(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


def discard_failed_run() -> None:
    """Remove this process's fresh run directory if the run stopped before writing anything
    (``RunFolder.has_results``); in a multirun, the sweep folder too when no job folder is left in it (only
    Hydra's multirun.yaml). Run directories are unique to the microsecond, so the directory is this run's own;
    a sweep folder with any job in it is kept. Light to import: a run stopped by a signal in its first
    seconds calls it before torch is loaded."""
    import shutil

    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    try:
        hc = HydraConfig.get()
    except ValueError:
        return
    out = Path(hc.runtime.output_dir)
    if out.is_dir() and not RunFolder(out).has_results():
        shutil.rmtree(out, ignore_errors=True)
    if hc.mode != RunMode.MULTIRUN:
        return
    sweep = Path(hc.sweep.dir).absolute()
    left = list(sweep.iterdir()) if sweep.is_dir() and out.absolute().is_relative_to(sweep) else None
    if left is not None and all(p.name == "multirun.yaml" and p.is_file() for p in left):
        for p in left:
            p.unlink(missing_ok=True)
        try:
            sweep.rmdir()
        except OSError:  # a job of a parallel launcher has just made its folder: the sweep goes on
            pass
