"""genlab-eval: the test metrics of finished runs, side by side in one table.

    genlab-eval outputs/train/runs/2025-01-01_10-00-00-000000 outputs/train/runs/2025-01-01_11-00-00-000000
    genlab-eval outputs/train/multiruns/*/* --n-samples 5000 --out table.csv

Each run is rebuilt from its composed config (``.hydra/config.yaml``) and its best checkpoint and
scored by the same ``Evaluator.evaluate`` that ends ``genlab-train``, so FID, KID, MMD², precision
and recall compare GANs, VAEs and any other sampler on one footing, beside −ELBO where a model has one.

torch and Lightning are imported only once the run folders are found: ``--help`` and a wrong path are
answered at once.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig, OmegaConf

from genlab.config import setup_hydra
from genlab.errors import UserError, WriteFailed
from genlab.runfolder import RunFolder
from genlab.runs import load, swept_keys
from genlab.safety import set_user_trust

if TYPE_CHECKING:
    from genlab.metrics.base import Scores


def find_checkpoint(run_dir: Path) -> Path:
    """The run's tested checkpoint (``RunFolder.tested_checkpoint``); UserError when there is none."""
    checkpoint = RunFolder(run_dir).tested_checkpoint()
    if checkpoint is None:
        raise UserError(f"{run_dir} has no checkpoint: neither metrics.json names one that exists "
                        "nor is there checkpoints/last.ckpt (did the run stop before its first epoch ended?).")
    return checkpoint


def load_run(run_dir: str | Path, trust: bool = False, command: str = "genlab-eval") -> tuple[DictConfig, Path]:
    """A run's composed config, checked as data (unless ``trust``), and its tested checkpoint; UserError for a
    folder that is not a genlab run, whose config names code genlab does not build itself, or that holds
    symbolic links (``command`` reads and writes only inside the folder)."""
    folder = RunFolder(run_dir)
    cfg = folder.config(trust)
    folder.check_closed(command)
    return cfg, find_checkpoint(Path(run_dir))


def evaluate_run(cfg: DictConfig, checkpoint: Path, n_samples: int | None = None,
                 device: str = "cpu", trust: bool = False) -> Scores:
    """Rebuild the run's data and model and score them with its own evaluator settings
    (``n_samples`` replaces the sample-quality metrics' n_samples)."""
    import torch

    from genlab.callbacks.evaluator import configured_evaluator
    from genlab.metrics.base import eval_mode
    from genlab.metrics.sampling import ModeCoverage, SampleQuality
    from genlab.run import build, load_model

    torch.set_float32_matmul_precision(cfg.get("float32_matmul_precision", "highest"))
    dm = build(cfg.data)
    dm.setup("test")
    model = load_model(cfg.model, checkpoint, device, trust=trust, data_info=dm.info)
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
    if not console.is_terminal:  # piped or captured: wide enough that no header or cell wraps
        from rich.measure import Measurement

        console = Console(highlight=False, width=10**4)
        console = Console(highlight=False, width=max(200, Measurement.get(console, console.options, table).maximum))
    console.print(table)


def write_csv(rows: list[dict[str, Any]], path: Path) -> None:
    """All metrics of every run, one row each (empty where a run lacks one), with its overrides.
    A file that cannot be written is a UserError."""
    keys = sorted({k for r in rows for k in r["metrics"]})
    overrides = list(dict.fromkeys(k for r in rows for k in r["run"].overrides if k not in ("model", "data", "seed")))
    import io

    from genlab.files import write_atomically

    text = io.StringIO(newline="")
    writer = csv.writer(text)
    writer.writerow(["run", "model", "data", "seed", *overrides, *keys])
    for r in rows:
        run = r["run"]
        writer.writerow([str(run.path), r["model"], r["data"], run.seed, *[run.overrides.get(k, "") for k in overrides],
                         *[r["metrics"].get(k, "") for k in keys]])
    try:  # whole or not at all: a full disk leaves the old table or none, never half of one
        write_atomically(path, lambda f: f.write(text.getvalue().encode()))
    except OSError as e:
        raise UserError(f"--out {path}: could not write the table ({e.strerror or e}).") from None


def check_out(path: Path, kind: str = "CSV") -> None:
    """--out names a file that can be written, checked before any run is scored or sampled (minutes)."""
    import os

    from genlab.config.checks import folder_problem

    if path.is_dir():
        raise UserError(f"--out {path} is a folder: give the path of a {kind} file.")
    problem = folder_problem(str(path.parent.absolute()))
    if problem:
        raise UserError(f"--out {path}: its folder {path.parent.absolute()} cannot be written: {problem}.")
    if path.exists() and not os.access(path, os.W_OK):
        raise UserError(f"--out {path} exists and cannot be written.")


def default_device() -> str:
    """cuda when torch can use a GPU, else cpu."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def check_device(device: str) -> None:
    """--device names a device torch knows and this machine has."""
    import torch

    try:
        where = torch.device(device)
    except (RuntimeError, ValueError) as e:
        raise UserError(f"--device {device}: not a device torch knows ({' '.join(str(e).split())}).") from None
    if where.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {device}: this machine has no GPU that torch can use; use --device cpu.")
    if where.type == "cuda" and where.index is not None and where.index >= torch.cuda.device_count():
        raise UserError(f"--device {device}: this machine has {torch.cuda.device_count()} GPUs.")
    if where.type not in ("cpu", "cuda") and not (where.type == "mps" and torch.backends.mps.is_available()):
        raise UserError(f"--device {device}: genlab-eval runs on cpu or cuda.")


def _choice(run_dir: Path, cfg: DictConfig, group: str) -> str:
    """The config group's choice (metrics.json, written by genlab-train), else the _target_ class."""
    choice = RunFolder(run_dir).record().get(group)
    return choice or str(cfg[group]["_target_"]).rsplit(".", 1)[-1]


def convert_runs(configs: list[DictConfig]) -> None:
    """``--trust --convert``: every checkpoint of the runs rewritten weights-only (``convert_checkpoint``)."""
    import dataclasses

    from genlab.checkpoints import convert_checkpoint
    from genlab.run import build

    for cfg in configs:
        info = dataclasses.asdict(build(cfg.data).info)
        model = OmegaConf.to_container(cfg.model, resolve=True)
        for path in sorted(RunFolder(cfg.paths.output_dir).checkpoints.glob("*.ckpt")):
            backup = convert_checkpoint(path, model, info)
            print(f"{path}: {'converted (original kept as ' + backup.name + ')' if backup else 'safe already'}")


def parser() -> argparse.ArgumentParser:
    """genlab-eval's options (the fuzz reads them: every option gets bad values)."""
    parser = argparse.ArgumentParser(prog="genlab-eval", description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, metavar="RUN_DIR|SWEEP_DIR",
                        help="run folders of genlab-train, or sweep folders (every job in them)")
    parser.add_argument("--n-samples", type=int, default=None,
                        help="samples scored for FID/KID/MMD/precision/recall (default: the run's setting)")
    parser.add_argument("--out", type=Path, default=None, help="also write every metric to this CSV file")
    parser.add_argument("--device", default=None,
                        help="where the models and feature networks run (default: cuda when available)")
    parser.add_argument("--trust", action="store_true",
                        help="the run folders are yours: build code their configs name outside the trusted modules, "
                             "and unpickle checkpoints that need it (both can run arbitrary code)")
    parser.add_argument("--convert", action="store_true",
                        help="with --trust: rewrite the runs' older checkpoints that need unpickling as safe, "
                             "weights-only ones (originals kept as <name>.pickled), then stop")
    return parser


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point (``genlab-eval``)."""
    args = parser().parse_args(argv)
    try:
        if args.n_samples is not None and args.n_samples < 2:
            raise UserError(f"--n-samples={args.n_samples}: at least 2 samples are needed.")
        if args.out is not None:
            check_out(args.out)
        if args.convert and not args.trust:
            raise UserError("--convert unpickles the checkpoints, which can run code: give --trust with it, "
                            "for run folders you made yourself.")
        found = load(args.runs)  # a wrong path is said before torch is imported (seconds)
        from genlab.run import route_framework_logs

        setup_hydra()  # the resolvers of the saved configs
        route_framework_logs()
        set_user_trust(args.trust)  # the runs' frozen components (model.autoencoder=, model.clip=) read it
        args.device = args.device or default_device()
        check_device(args.device)
        # every folder checked before any work
        runs = [(run, *load_run(run.path, args.trust)) for run in found]
        if args.convert:
            convert_runs([cfg for _, cfg, _ in runs])
            return
        rows = []
        for run, cfg, ckpt in runs:
            print(f"scoring {run.path} ({ckpt.name})", file=sys.stderr)
            metrics = evaluate_run(cfg, ckpt, args.n_samples, args.device, args.trust)
            rows.append({"run": run, "model": _choice(run.path, cfg, "model"),
                         "data": _choice(run.path, cfg, "data"), "metrics": metrics})
        print_table(rows)
        if args.out is not None:
            write_csv(rows, args.out)
            print(f"table written to {args.out}")
    except UserError as e:
        msg = e.advice("--out FILE.csv") if isinstance(e, WriteFailed) else str(e)
        print(f"genlab-eval: error: {msg}", file=sys.stderr)
        sys.exit(e.exit_code)


if __name__ == "__main__":
    main()
