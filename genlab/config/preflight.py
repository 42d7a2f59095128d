"""Checks before Hydra makes a run or sweep folder, and of the command line before Hydra parses it.

``launch_errors`` runs in the Hydra callback ``genlab.sweep.Preflight`` (the task name, the output
folders, keys added to Hydra's own config, the sweeper's and launcher's settings: Optuna and joblib
would fail late); ``command_line_error`` runs in ``genlab.train.main`` on overrides Hydra itself stops
on with a traceback (a config group given null or a number) and on sweepers and launchers of the sweep
extra that is not installed (``missing_plugin``). Nothing here imports torch.
"""

from __future__ import annotations

import dataclasses
import re
from importlib.resources import files
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from genlab.config.checks import folder_problem, group_names, missing_groups, path_errors, select, task_name_problem
from genlab.config.fields import is_number, schema_of


def added_hydra_keys(cfg: DictConfig) -> list[str]:
    """``+hydra.<key>=...`` overrides that add a key Hydra's own schema lacks: Hydra keeps and ignores it."""
    errors = []
    given = [*(select(cfg, "hydra.overrides.hydra") or []), *(select(cfg, "hydra.overrides.task") or [])]
    for override in given:
        key = str(override).split("=", 1)[0]
        if not key.startswith("+hydra.") or key.count(".") < 1:
            continue
        parent, name = key[1:].rsplit(".", 1)
        schema = schema_of(select(cfg, parent))
        if schema is not None and name not in {f.name for f in dataclasses.fields(schema)}:
            errors.append(f"{key[1:]} is not a setting of Hydra's {parent} ({schema.__name__}): its settings are "
                          f"{', '.join(f.name for f in dataclasses.fields(schema))}")
    return errors


def launch_errors(cfg: DictConfig, multirun: bool) -> list[str]:
    """What must hold before Hydra makes the run or sweep folder: the groups, a safe task name, writable
    output folders; for a sweep, the sweeper's and launcher's settings (Optuna and joblib fail late)."""
    errors = missing_groups(cfg)
    if errors:
        return errors
    name = task_name_problem(cfg.get("task_name"))
    hydra = cfg.hydra
    errors = ([name] if name else []) + path_errors(cfg) + added_hydra_keys(cfg)
    key = "hydra.sweep.dir" if multirun else "hydra.run.dir"
    folder = select(cfg, key)
    problem = None if errors or folder is None else folder_problem(str(folder))
    if problem:  # set explicitly (paths.log_dir is checked above)
        errors.append(f"{key}={folder}: {problem}")
    if not multirun:
        return errors
    subdir = OmegaConf.to_container(hydra.sweep, resolve=False).get("subdir")
    if isinstance(subdir, str) and (subdir.startswith(("/", "~")) or ".." in Path(subdir).parts):
        errors.append(f"hydra.sweep.subdir={subdir}: job folders must stay inside the sweep folder")
    sweeper, launcher = str(select(hydra, "sweeper._target_") or ""), str(select(hydra, "launcher._target_") or "")
    if "optuna" in sweeper.lower():
        for key in ("n_trials", "n_jobs"):
            value = select(hydra, f"sweeper.{key}")
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                errors.append(f"hydra.sweeper.{key}={value!r}: an Optuna search needs an integer >= 1")
        direction = select(hydra, "sweeper.direction")
        directions = list(direction) if isinstance(direction, (ListConfig, list)) else [direction]
        if not directions or any(str(getattr(d, "name", d)) not in ("minimize", "maximize") for d in directions):
            errors.append(f"hydra.sweeper.direction={direction}: give minimize or maximize (or a list of them)")
        problem = storage_problem(select(hydra, "sweeper.storage"))
        if problem:
            errors.append(f"hydra.sweeper.storage={select(hydra, 'sweeper.storage')}: {problem}")
        if not cfg.get("optimized_metric"):
            errors.append("optimized_metric is null: an Optuna search needs the metric it optimises, e.g. val/loss")
        elif not str(cfg.optimized_metric).startswith(("train/", "val/", "test/")):
            errors.append(f"optimized_metric={cfg.optimized_metric}: a run's metrics are named train/<term>, "
                          "val/<term> or test/<metric> (e.g. val/loss, test/fid), as in a run's metrics.json")
        elif cfg.optimized_metric == "val/loss" and not ranks_by_val_loss(cfg):
            errors.append(f"optimized_metric=val/loss: the val/loss of {cfg.model._target_.rsplit('.', 1)[-1]} is an "
                          "adversarial loss, which does not rank trials; optimise a test metric, e.g. "
                          "optimized_metric=test/fid hydra.sweeper.direction=minimize")
    if "submitit" in launcher.lower():
        errors += submitit_errors(hydra)
    if "joblib" in launcher.lower():
        n_jobs = select(hydra, "launcher.n_jobs")
        if not isinstance(n_jobs, int) or isinstance(n_jobs, bool) or n_jobs == 0:
            errors.append(f"hydra.launcher.n_jobs={n_jobs!r}: joblib needs a number of workers >= 1 "
                          "(or -1 for one per core)")
    return errors


def ranks_by_val_loss(cfg: DictConfig) -> bool:
    """Whether a lower val/loss means a better model of ``cfg.model`` (its class's ``ranks_checkpoints``;
    imports the model's module, with torch: asked only before an Optuna search). True when the class cannot
    be found: the run reports a bad _target_ itself."""
    from hydra.utils import get_class

    try:
        return bool(getattr(get_class(str(cfg.model._target_)), "ranks_checkpoints", True))
    except Exception:  # noqa: BLE001 - a bad or missing _target_ is the run's own error to report
        return True


def submitit_errors(hydra: DictConfig) -> list[str]:
    """The submitit launcher's job sizes, resolved now (hydra/launcher=slurm takes them from the trainer)
    rather than when the jobs are submitted."""
    errors = []
    for key in ("tasks_per_node", "gpus_per_node", "nodes", "timeout_min"):
        try:
            value = OmegaConf.select(hydra, f"launcher.{key}", throw_on_resolution_failure=True)
        except Exception as e:  # a resolver's UserError, or an interpolation that does not resolve
            line = str(e).splitlines()[0]
            said = "UserError raised while resolving interpolation: "  # how OmegaConf wraps a resolver's error
            errors.append(line.split(said, 1)[1] if said in line else f"hydra.launcher.{key}: {line}")
            continue
        if value is not None and not (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
            errors.append(f"hydra.launcher.{key}={value!r}: give a whole number >= 1")
    cpus, mem = select(hydra, "launcher.cpus_per_task"), select(hydra, "launcher.mem_gb")
    if cpus is not None and not (isinstance(cpus, int) and not isinstance(cpus, bool) and cpus >= 1):
        errors.append(f"hydra.launcher.cpus_per_task={cpus!r}: give a whole number >= 1")
    if mem is not None and not (is_number(mem) and mem > 0):
        errors.append(f"hydra.launcher.mem_gb={mem!r}: give the memory a job may use in GB (> 0), or null")
    folder = select(hydra, "launcher.submitit_folder")
    if isinstance(folder, str):  # the part before submitit's %j-style placeholders is made by submitit itself
        fixed = folder.split("%", 1)[0]
        problem = folder_problem(str(Path(fixed).parent if not fixed.endswith("/") else Path(fixed)))
        if problem:
            errors.append(f"hydra.launcher.submitit_folder={folder}: {problem}")
    return errors


def storage_problem(storage: Any) -> str | None:
    """Why Optuna could not open ``hydra.sweeper.storage`` (null: a study in memory): a URL SQLAlchemy cannot
    read or has no driver for, or an SQLite file whose folder is missing or cannot be written. None if none."""
    if storage is None:
        return None
    if not isinstance(storage, str):
        return "give a database URL such as sqlite:///optuna.db, or null for a study kept in memory"
    try:
        from sqlalchemy import create_engine
        from sqlalchemy.engine import make_url
    except ImportError:  # without Optuna (and SQLAlchemy) the sweep extra's message comes first
        return None
    try:
        url = make_url(storage)
        create_engine(url).dispose()  # loads the dialect and its driver (MySQLdb, psycopg2); connects to nothing
    except ImportError as e:
        return (f"SQLAlchemy has no driver for {storage.split(':', 1)[0]} here ({' '.join(str(e).split())[:80]}): "
                "install the database's Python driver, or use sqlite:///optuna.db")
    except Exception as e:
        return (f"not a database URL SQLAlchemy can open ({type(e).__name__}: {' '.join(str(e).split())[:120]}); "
                "e.g. sqlite:///optuna.db")
    if url.get_backend_name() == "sqlite" and url.database and url.database != ":memory:":
        where = Path(url.database).expanduser().absolute().parent
        if not where.is_dir():
            return f"the folder {where} of its SQLite file does not exist (SQLite makes the file, not its folder)"
        return folder_problem(str(where))
    return None


OVERRIDE = re.compile(r"[~+]*[\w./@-]+=")  # a command-line argument that is an override (key=value)


def choices(override: Any) -> list[Any]:
    """The values an override gives: each job's of a sweep (``model=ae,vae``), else its one value."""
    from hydra.core.override_parser.types import ChoiceSweep

    value = override.value()
    return value.list if isinstance(value, ChoiceSweep) else [value]


def command_line_error(argv: list[str]) -> str | None:
    """Overrides Hydra stops on with a traceback: a config group given null or a number (``model=null``)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    modes = [a for a in argv if a in ("-m", "--multirun", "-c", "--cfg", "-i", "--info", "-sc", "--shell-completion")
             or a.startswith(("--cfg=", "--info=", "--shell-completion="))]
    if len(modes) > 1:
        return f"{' and '.join(modes)}: give only one of --multirun (-m), --cfg (-c), --info (-i), --shell-completion"
    try:
        overrides = OverridesParser.create().parse_overrides([a for a in argv if OVERRIDE.match(a)])
    except Exception:  # Hydra reports its own syntax errors clearly
        return None
    groups = group_dirs()
    for o in overrides:
        if o.key_or_group in groups and not o.is_delete() and any(
                v is None or isinstance(v, (bool, int, float, dict)) for v in choices(o)):
            group = o.key_or_group
            return (f"{o.input_line}: a config group takes the name of one of its configs, "
                    f"{group}=NAME with NAME one of {', '.join(group_names(group))}")
    for o in overrides:
        for v in choices(o):
            problem = None if o.is_delete() or not isinstance(v, str) else missing_plugin(o.key_or_group, v)
            if problem:
                return problem
    return unknown_choice(overrides, groups)


def unknown_choice(overrides: list, groups: set[str]) -> str | None:
    """``model=nope``, ``hydra/launcher=nope``: the one line naming the group's configs, where Hydra prints
    its config search path over a dozen lines. The choices come from Hydra's own config repository (genlab's
    conf/ and the Hydra plugins installed), so they are the ones Hydra would accept. ``groups``: genlab's own."""
    chosen = [o for o in overrides if not o.is_delete() and ("/" in o.key_or_group or o.key_or_group in groups)]
    if not chosen:
        return None
    try:  # Hydra's internals: should they move, Hydra's own (longer) message stands
        from hydra._internal.config_repository import ConfigRepository
        from hydra._internal.utils import create_config_search_path
        from hydra.core.plugins import Plugins

        Plugins.instance()  # the plugins register their configs (hydra/sweeper/optuna) when discovered
        search = create_config_search_path("pkg://genlab.conf")
        for o in overrides:  # folders of the user's own configs (README: adding a model of one's own)
            if o.key_or_group == "hydra.searchpath" and isinstance(o.value(), list):
                for folder in o.value():
                    search.append(provider="command-line", path=str(folder))
        repo = ConfigRepository(search)
    except Exception:
        return None
    for o in chosen:
        group = o.key_or_group.split("@")[0].removeprefix("/")
        if not repo.group_exists(group):
            continue  # a key, not a group (hydra/run/dir is Hydra's key, read by Hydra)
        options = repo.get_group_options(group)
        for v in choices(o):
            if isinstance(v, str) and v not in options:
                return f"{o.input_line}: {group} has no config {v!r}; choose one of {', '.join(options)}"
    return None


def group_dirs() -> set[str]:
    """The config groups of genlab's own conf/."""
    return {p.name for p in Path(str(files("genlab.conf"))).iterdir() if p.is_dir()}


# Hydra's plugins of the sweep extra (pyproject.toml), by the config they register, with the module each
# needs: Hydra finds the config only when the plugin is installed, and says so with a traceback otherwise
SWEEP_PLUGINS = {
    ("hydra/sweeper", "optuna"): ("Hydra's Optuna sweeper", "hydra_plugins.hydra_optuna_sweeper", "optuna"),
    ("hydra/launcher", "joblib"): ("Hydra's joblib launcher", "hydra_plugins.hydra_joblib_launcher", "joblib"),
    ("hydra/launcher", "submitit_local"): ("Hydra's submitit launcher", "hydra_plugins.hydra_submitit_launcher",
                                           "submitit"),
    ("hydra/launcher", "submitit_slurm"): ("Hydra's submitit launcher", "hydra_plugins.hydra_submitit_launcher",
                                           "submitit"),
}


def installed(module: str) -> bool:
    """Whether ``module`` can be imported (found, not imported: Optuna alone takes a second)."""
    from importlib.util import find_spec

    try:
        return find_spec(module) is not None
    except (ImportError, ValueError):  # a parent package that is missing or broken
        return False


def plugin_choices(group: str, name: str) -> list[tuple[str, str]]:
    """The (group, name) of Hydra's config ``group=name`` and of the Hydra plugin configs it selects in
    turn: genlab's own preset that extends one (hydra/launcher=slurm: submitit_slurm) or overrides one
    (hparams_search=ae_optuna: hydra/sweeper=optuna)."""
    out = [(group, name)]
    file = Path(str(files("genlab.conf"))) / group / f"{name}.yaml"
    try:
        defaults = OmegaConf.load(file).get("defaults") or [] if file.is_file() else []
    except Exception:  # a YAML error is Hydra's to report, with the file's name
        return out
    for entry in defaults:
        if isinstance(entry, str) and group.startswith("hydra/"):  # `- submitit_slurm`: the same group
            out.append((group, entry))
        elif isinstance(entry, DictConfig):
            for key, value in entry.items():
                key = str(key).removeprefix("override ").strip().lstrip("/")
                if key.startswith("hydra/") and isinstance(value, str):
                    out.append((key, value))
    return out


def missing_plugin(group: str, name: str) -> str | None:
    """``group=name`` (hydra/sweeper=optuna, hydra/launcher=joblib|submitit_local|slurm, hparams_search=...)
    needs a Hydra plugin of the sweep extra that is not installed: the line that says what to install."""
    for chosen in plugin_choices(group, name):
        if chosen not in SWEEP_PLUGINS:
            continue
        what, *modules = SWEEP_PLUGINS[chosen]
        if not all(installed(m) for m in modules):
            via = "" if chosen == (group, name) else f" ({chosen[0]}={chosen[1]})"
            return f'{group}={name} needs {what}{via}, which is not installed: pip install "genlab[sweep]"'
    return None
