"""The two ends of a sweep, as Hydra callbacks (``conf/hydra/default.yaml``), so they follow every
launcher and sweeper (basic, joblib, Optuna).

Before: ``Preflight`` checks what must hold before Hydra makes a run or sweep folder (a safe task
name, writable output folders, the sweeper's and launcher's settings), so a bad value is one clear
error instead of a traceback from Hydra, Optuna or joblib and a folder left behind.

After: one table of all the jobs — their overrides as columns, the optimised metric and the headline
test metrics, the best job marked — printed when a multirun finishes and written as ``summary.csv``
(every metric) and ``summary.md`` in the sweep folder; it reads the jobs' metrics.json files only.
"""

from __future__ import annotations

import atexit
import csv
import math
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from genlab.errors import UserError
from genlab.runfolder import RunFolder
from genlab.runs import Run, headline, load, swept_keys


def scored_runs(runs: Sequence[Run], metric: str | None) -> list[Run]:
    """The runs with a finite value of ``metric``."""
    return [r for r in runs if metric and isinstance(r.metrics.get(metric), (int, float))
            and math.isfinite(r.metrics[metric])]


def unranked(runs: Sequence[Run], metric: str | None) -> str | None:
    """Why ``metric`` cannot name the best of these runs (other datasets, or a val/loss that measures
    different things or nothing a lower value makes better: metrics.json's ``val_loss``), or None."""
    scored = scored_runs(runs, metric)
    datasets = sorted({str(r.record.get("data")) for r in scored})
    if len(datasets) > 1:
        return f"{metric} on different datasets ({', '.join(datasets)}) is not comparable"
    if metric != "val/loss":
        return None
    records = [(str(r.record.get("model")), r.record.get("val_loss") or {}) for r in scored]
    adversarial = sorted({m for m, rec in records if rec.get("ranks") is False})
    if adversarial:
        return (f"val/loss of {', '.join(adversarial)} is an adversarial loss, which does not rank runs: "
                "rank them by a test metric (optimized_metric=test/fid, or test/mmd2 on points)")
    means = {str(rec["means"]) for _, rec in records if rec.get("means")}
    if len(means) > 1:
        return (f"val/loss measures different things in these runs ({'; '.join(sorted(means))}): "
                "compare them by a test metric of the table")
    return None


def best_run(runs: Sequence[Run], metric: str | None, direction: str = "minimize") -> Run | None:
    """The run with the best value of ``metric`` (lowest, or highest for "maximize"); None without one,
    or when the metric cannot rank these runs (``unranked``)."""
    scored = scored_runs(runs, metric)
    if not scored or unranked(runs, metric):
        return None
    pick = max if direction.startswith("max") else min
    return pick(scored, key=lambda r: r.metrics[metric])


def fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else ("" if value is None else str(value))


def summary_rows(runs: Sequence[Run], metric: str | None, direction: str) -> tuple[list[str], list[list[str]]]:
    """(header, rows) of the summary table: job, swept overrides, the metrics, a mark on the best."""
    keys, names, best = swept_keys(runs), headline(runs, [metric] if metric else []), best_run(runs, metric, direction)
    header = ["job", *keys, *names, "best"]
    rows = [[r.name, *[r.overrides.get(k, "") for k in keys],
             *[fmt(r.metrics.get(n)) if r.record else "failed" for n in names], "*" if r is best else ""]
            for r in runs]
    return header, rows


def write_summary(sweep_dir: Path, runs: Sequence[Run], metric: str | None, direction: str) -> Run | None:
    """summary.csv (every metric of every job) and summary.md (the table) in the sweep folder; the
    table is printed too. Returns the best run."""
    from rich.console import Console
    from rich.table import Table

    header, rows = summary_rows(runs, metric, direction)
    every = sorted({k for r in runs for k in r.metrics})
    keys = [k for k in swept_keys(runs) if k not in ("job", "folder", "seed")]  # those have columns of their own
    with (sweep_dir / "summary.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["job", "folder", *keys, "seed", *every])
        for r in runs:
            writer.writerow([r.name, str(r.path), *[r.overrides.get(k, "") for k in keys], r.seed,
                             *[r.metrics.get(k, "") for k in every]])
    md = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    md += ["| " + " | ".join(row) + " |" for row in rows]
    best = best_run(runs, metric, direction)
    why = unranked(runs, metric)
    if best is not None:
        md += ["", f"Best by {metric} ({direction}): job {best.name}, {best.path}"]
    elif why:
        md += ["", f"No best job: {why}."]
    (sweep_dir / "summary.md").write_text("\n".join(md) + "\n")

    console = Console(highlight=False, width=max(Console().width, 160))
    # the folder on a line of its own, not as the table's title: rich wraps a title to the table's width,
    # which would break a long path in two
    print(f"sweep {sweep_dir} ({len(runs)} jobs)")
    table = Table()
    for col in header:
        table.add_column(col, justify="right" if col.startswith(("test/", "val/", "train/")) else "left",
                         overflow="fold")
    for row in rows:
        table.add_row(*row)
    console.print(table)
    if best is not None:
        print(f"best job      : {best.path}  ({metric} = {best.metrics[metric]:.6g}, {direction})")
    elif why:
        print(f"best job      : none: {why}")
    print(f"summary       : {sweep_dir / 'summary.csv'}  and  {sweep_dir / 'summary.md'}")
    print(f"report        : genlab-report {sweep_dir}")
    return best


class Preflight(Callback):
    """Hydra callback: ``genlab.config.checks.launch_errors`` before Hydra makes the run folder (a run)
    or the sweep folder (a multirun). A problem is printed as one error and ends the process with
    UserError's exit code: Hydra reports any exception raised here with a traceback."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        self.check(config, multirun=False)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self.check(config, multirun=True)
        # A failing job ends the whole process (genlab-train exits with UserError's code), before
        # on_multirun_end; with a parallel launcher, while other jobs are still running.
        atexit.register(discard_failed_jobs, Path(config.hydra.sweep.dir))

    @staticmethod
    def check(config: DictConfig, multirun: bool) -> None:
        from genlab.config.checks import invalid
        from genlab.config.preflight import launch_errors

        errors = launch_errors(config, multirun)
        if not errors and multirun:
            errors = job_errors(config)
        if errors:
            print(f"genlab-train: error: {invalid(errors)}", file=sys.stderr)
            sys.exit(UserError.exit_code)


BASIC_SWEEPER = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"
MAX_NAMED_JOBS = 3  # the failing jobs a refusal names; the rest are counted


def sweep_jobs(config: DictConfig) -> list[list[str]] | None:
    """The overrides of each job of a grid sweep (Hydra's basic sweeper: the product of the command line's
    sweeps and ``hydra.sweeper.params``), in Hydra's order; None for a sweeper that chooses its jobs as it
    goes (Optuna) or a sweep this cannot expand."""
    import itertools

    from hydra.core.override_parser.overrides_parser import OverridesParser

    if str(OmegaConf.select(config, "hydra.sweeper._target_") or "") != BASIC_SWEEPER:
        return None
    params = OmegaConf.select(config, "hydra.sweeper.params") or {}
    lines = [f"{k}={v}" for k, v in params.items()] + list(config.hydra.overrides.task)
    try:
        choices = [[f"{o.get_key_element()}={v}" for v in o.sweep_string_iterator()] if o.is_sweep_override()
                   else [o.input_line] for o in OverridesParser.create().parse_overrides(lines)]
    except Exception:  # a sweep only the launcher can read (Hydra reports it there)
        return None
    return [list(job) for job in itertools.product(*choices)]


def job_errors(config: DictConfig) -> list[str]:
    """Every job of a grid sweep composed and checked as its run will be, before the first is launched: a
    sweep with one bad value is refused whole instead of failing half-way (or, launched in parallel, with
    jobs still running). Each failing job is named by its number and the values it sweeps."""
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    from genlab.config.checks import validate

    jobs = sweep_jobs(config)
    if not jobs or len(jobs) < 2 or not GlobalHydra.instance().is_initialized():
        return []
    loader = GlobalHydra.instance().config_loader()
    swept = {line.split("=", 1)[0] for i, line in enumerate(jobs[0]) if len({job[i] for job in jobs}) > 1}
    failed: list[str] = []
    hydra = HydraConfig.instance()
    before = hydra.cfg
    try:
        for number, job in enumerate(jobs):
            try:
                cfg = loader.load_sweep_config(config, job)
                with open_dict(cfg):  # as Hydra's launcher and run_job set them, so the job's folders resolve
                    cfg.hydra.job.num, cfg.hydra.job.id = number, f"job{number}"
                    folder = Path(cfg.hydra.sweep.dir, str(cfg.hydra.sweep.subdir))
                    cfg.hydra.runtime.output_dir = str(folder.absolute())
                hydra.set_config(cfg)
                with open_dict(cfg):  # the job's task sees its config without the hydra node
                    del cfg["hydra"]
                validate(cfg)
            except UserError as e:
                values = " ".join(line for line in job if line.split("=", 1)[0] in swept)
                problems = [ln.strip() for ln in str(e).splitlines()[1:]] or [str(e).removeprefix("Invalid config: ")]
                failed.append(f"job #{number} of the sweep ({values}): {'; '.join(problems)}".rstrip("."))
            except Exception:  # an error of composition: the job reports it itself when it runs
                continue
    finally:
        hydra.cfg = before  # the launcher sets each job's own
    if len(failed) > MAX_NAMED_JOBS:
        failed = failed[:MAX_NAMED_JOBS] + [f"and {len(failed) - MAX_NAMED_JOBS} more of the {len(jobs)} jobs"]
    return failed


def discard_failed_jobs(sweep_dir: Path) -> None:
    """When the process that ran a sweep ends: remove the job folders without a result (neither
    metrics.json nor a checkpoint: the job failed or never got far), then the sweep folder itself when
    no job is left in it (Hydra's multirun.yaml alone). A finished sweep keeps every job and its summary."""
    if not sweep_dir.is_dir():
        return
    for job in sweep_dir.iterdir():
        if job.is_dir() and RunFolder(job).is_run() and not RunFolder(job).has_results():
            shutil.rmtree(job, ignore_errors=True)
    left = list(sweep_dir.iterdir())
    if all(p.name == "multirun.yaml" and p.is_file() for p in left):
        for p in left:
            p.unlink(missing_ok=True)
        try:
            sweep_dir.rmdir()
        except OSError:
            pass


class SweepSummary(Callback):
    """Hydra callback: the summary of a finished multirun (see the module docstring)."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        if not sweep_dir.is_dir():
            return
        runs = load([sweep_dir])
        metric = config.get("optimized_metric")
        direction = OmegaConf.select(config, "hydra.sweeper.direction", default="minimize")
        if not isinstance(direction, str):  # a multi-objective Optuna study: rank by its first direction
            direction = str(list(direction)[0]) if direction else "minimize"
        write_summary(sweep_dir, runs, metric, direction)
