"""genlab-eval: the test metrics of finished runs, side by side in one table.

    genlab-eval outputs/train/runs/2025-01-01_10-00-00-000000 outputs/train/runs/2025-01-01_11-00-00-000000
    genlab-eval outputs/train/multiruns/*/* --n-samples 5000 --out table.csv

Each run is rebuilt from its composed config (``.hydra/config.yaml``) and its best checkpoint and
scored by the same ``Evaluator.evaluate`` that ends ``genlab-train``, so FID, KID, MMD², precision
and recall compare GANs, VAEs and any other sampler on one footing, beside −ELBO where a model has one.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from genlab.callbacks.evaluator import configured_evaluator
from genlab.config import setup_hydra
from genlab.errors import UserError
from genlab.metrics.base import Scores, eval_mode
from genlab.metrics.sampling import ModeCoverage, SampleQuality
from genlab.run import build, load_model, route_framework_logs
from genlab.runs import load, swept_keys


def find_checkpoint(run_dir: Path) -> Path:
    """The run's best checkpoint (``best_checkpoint`` of metrics.json, also when the run folder has
    moved since), else ``checkpoints/last.ckpt``; UserError when there is neither."""
    metrics = run_dir / "metrics.json"
    best = json.loads(metrics.read_text()).get("best_checkpoint") if metrics.is_file() else None
    candidates = [Path(best), run_dir / "checkpoints" / Path(best).name] if best else []
    for path in [*candidates, run_dir / "checkpoints" / "last.ckpt"]:
        if path.is_file():
            return path
    raise UserError(f"{run_dir} has no checkpoint: neither metrics.json names one that exists "
                    "nor is there checkpoints/last.ckpt (did the run stop before its first epoch ended?).")


def load_run(run_dir: str | Path) -> tuple[DictConfig, Path]:
    """A run's composed config and checkpoint; UserError for a folder that is not a genlab run."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserError(f"{run_dir} is not a folder.")
    cfg_file = run_dir / ".hydra" / "config.yaml"
    if not cfg_file.is_file():
        raise UserError(f"{run_dir} is not a genlab run: it has no .hydra/config.yaml "
                        "(genlab-train writes one into every run directory).")
    cfg = OmegaConf.load(cfg_file)
    if not isinstance(cfg, DictConfig) or "model" not in cfg or "data" not in cfg:
        raise UserError(f"{cfg_file} is not a genlab config: it has no model and data.")
    # was ${hydra:runtime.output_dir}, known only inside Hydra
    OmegaConf.update(cfg, "paths.output_dir", str(run_dir), force_add=True)
    _anchor_data_paths(cfg, run_dir)
    return cfg, find_checkpoint(run_dir)


def _anchor_data_paths(cfg: DictConfig, run_dir: Path) -> None:
    """Paths were relative to where genlab-train ran (Hydra records it as hydra.runtime.cwd in
    .hydra/hydra.yaml): paths.root_dir (the folder of datasets and caches by default) is set to it,
    and a relative data.root / data.path made absolute, so genlab-eval works from any folder."""
    hydra_file = run_dir / ".hydra" / "hydra.yaml"
    cwd = OmegaConf.select(OmegaConf.load(hydra_file), "hydra.runtime.cwd") if hydra_file.is_file() else None
    if cwd is None:
        return
    if "paths" in cfg:
        OmegaConf.update(cfg, "paths.root_dir", str(cwd), force_add=True)
    for key in ("root", "path"):
        value = cfg.data.get(key)
        if isinstance(value, str) and "${" not in value and not Path(value).expanduser().is_absolute():
            cfg.data[key] = str(Path(cwd) / value)


def evaluate_run(cfg: DictConfig, checkpoint: Path, n_samples: int | None = None,
                 device: str = "cpu") -> Scores:
    """Rebuild the run's data and model and score them with its own evaluator settings
    (``n_samples`` replaces the sample-quality metrics' n_samples)."""
    torch.set_float32_matmul_precision(cfg.get("float32_matmul_precision", "highest"))
    dm = build(cfg.data)
    dm.setup("test")
    model = load_model(cfg.model, checkpoint, device)
    node = OmegaConf.select(cfg, "callbacks.evaluator")
    if node is None:  # the run had no evaluator: the default one, with the run's classifier cache
        evaluator = configured_evaluator(OmegaConf.select(cfg, "paths.cache_dir"))
    else:
        evaluator = build(node)
    if n_samples is not None:
        for metric in evaluator.metrics.values():
            if isinstance(metric, (SampleQuality, ModeCoverage)):
                metric.n_samples = n_samples
    with eval_mode(model):
        return evaluator.evaluate(model, dm)


def _cell(metrics: dict[str, float], name: str) -> str:
    value, floor = metrics.get(f"test/{name}"), metrics.get(f"test/{name}_floor")
    if value is None:
        return "-"
    return f"{value:.4g}" + (f" ({floor:.3g})" if floor is not None else "")


def print_table(rows: list[dict[str, Any]]) -> None:
    """One row per run: its folder, model, data, seed and the overrides that differ between the runs,
    then the metrics its evaluator's metric objects put in a table (``Metric.columns``), the union
    over the runs in the order they first appear. Cells fold rather than cut: names stay whole."""
    from rich.console import Console
    from rich.table import Table

    console = Console(highlight=False)
    if not console.is_terminal:  # piped or captured: wide enough that no header wraps
        console = Console(highlight=False, width=max(console.width, 200))
    names = list(dict.fromkeys(c for r in rows for c in r["metrics"].columns))
    keys = [k for k in swept_keys([r["run"] for r in rows]) if k not in ("model", "data", "seed")]
    table = Table(title="genlab-eval: test metrics (in brackets the floor: real training samples in place "
                  "of the model's)", title_justify="left")
    units = {k.removeprefix("test/"): u for r in rows for k, u in r["metrics"].units.items()}
    for col in ("run", "model", "data", "seed", *keys, *names):
        head = f"{col} ({units[col]})" if col in units else col
        table.add_column(head, justify="right" if col in names else "left", overflow="fold")
    for r in rows:
        run = r["run"]
        table.add_row(f"{run.path.parent.name}/{run.name}", r["model"], r["data"], str(run.seed),
                      *[run.overrides.get(k, "") for k in keys], *[_cell(r["metrics"], c) for c in names])
    console.print(table)


def write_csv(rows: list[dict[str, Any]], path: Path) -> None:
    """All metrics of every run, one row each (empty where a run lacks one), with its overrides."""
    keys = sorted({k for r in rows for k in r["metrics"]})
    overrides = list(dict.fromkeys(k for r in rows for k in r["run"].overrides if k not in ("model", "data", "seed")))
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["run", "model", "data", "seed", *overrides, *keys])
        for r in rows:
            run = r["run"]
            writer.writerow([str(run.path), r["model"], r["data"], run.seed,
                             *[run.overrides.get(k, "") for k in overrides], *[r["metrics"].get(k, "") for k in keys]])


def _choice(run_dir: Path, cfg: DictConfig, group: str) -> str:
    """The config group's choice (metrics.json, written by genlab-train), else the _target_ class."""
    metrics = run_dir / "metrics.json"
    choice = json.loads(metrics.read_text()).get(group) if metrics.is_file() else None
    return choice or str(cfg[group]["_target_"]).rsplit(".", 1)[-1]


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point (``genlab-eval``)."""
    parser = argparse.ArgumentParser(prog="genlab-eval", description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, metavar="RUN_DIR|SWEEP_DIR",
                        help="run folders of genlab-train, or sweep folders (every job in them)")
    parser.add_argument("--n-samples", type=int, default=None,
                        help="samples scored for FID/KID/MMD/precision/recall (default: the run's setting)")
    parser.add_argument("--out", type=Path, default=None, help="also write every metric to this CSV file")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                        help="where the models and feature networks run (default: cuda when available)")
    args = parser.parse_args(argv)
    setup_hydra()  # the resolvers of the saved configs
    route_framework_logs()
    try:
        if args.n_samples is not None and args.n_samples < 2:
            raise UserError(f"--n-samples={args.n_samples}: at least 2 samples are needed.")
        runs = [(run, *load_run(run.path)) for run in load(args.runs)]  # every folder checked before any work
        rows = []
        for run, cfg, ckpt in runs:
            print(f"scoring {run.path} ({ckpt.name})", file=sys.stderr)
            metrics = evaluate_run(cfg, ckpt, args.n_samples, args.device)
            rows.append({"run": run, "model": _choice(run.path, cfg, "model"),
                         "data": _choice(run.path, cfg, "data"), "metrics": metrics})
    except UserError as e:
        print(f"genlab-eval: error: {e}", file=sys.stderr)
        sys.exit(e.exit_code)
    print_table(rows)
    if args.out is not None:
        write_csv(rows, args.out)
        print(f"table written to {args.out}")


if __name__ == "__main__":
    main()
