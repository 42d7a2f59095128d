"""Finished runs as records: what each run folder says about itself (metrics.json, the command-line
overrides Hydra saved), found from run folders, sweep folders or a shell glob of either.

Shared by the end-of-sweep summary (``genlab.sweep``), ``genlab-report`` and ``genlab-eval``; it reads
files only — no torch, no re-scoring.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from genlab.errors import UserError
from genlab.runfolder import RunFolder

SEED_KEYS = ("seed",)  # overrides that repeat a setting rather than change it


@dataclass
class Run:
    """One finished (or stopped) run folder."""

    path: Path
    overrides: dict[str, str] = field(default_factory=dict)  # key -> value as typed on the command line
    record: dict[str, Any] = field(default_factory=dict)  # metrics.json, {} when the run wrote none

    @property
    def metrics(self) -> dict[str, float]:
        return self.record.get("metrics", {})

    @property
    def seed(self) -> Any:
        return self.record.get("seed", self.overrides.get("seed"))

    @property
    def setting(self) -> tuple[tuple[str, str], ...]:
        """The overrides that make this run what it is, the seed left out: runs that share a setting
        are repeats of one experiment."""
        return tuple(sorted((k, v) for k, v in self.overrides.items() if k not in SEED_KEYS))

    @property
    def name(self) -> str:
        """The folder's name within its sweep (the job number) or the run's timestamp."""
        return self.path.name


def expand(paths: Iterable[str | Path]) -> list[Path]:
    """Run folders from run folders and sweep folders (their job subfolders, in job order). What a
    shell glob of a sweep brings along besides its jobs (multirun.yaml, summary.csv, report/) is
    passed over; UserError for a path that does not exist, or when no run is found at all."""
    paths = [Path(p) for p in paths]
    out: list[Path] = []
    for p in paths:
        if not p.exists():
            raise UserError(f"{p} does not exist.")
        if RunFolder(p).is_run():
            out.append(p)
        elif p.is_dir():
            out.extend(sorted((d for d in p.iterdir() if d.is_dir() and RunFolder(d).is_run()), key=job_order))
    if not out:
        raise UserError(f"no genlab run in {', '.join(map(str, paths))}: a run folder holds .hydra/config.yaml, "
                        "a sweep folder holds run folders.")
    return list(dict.fromkeys(out))


def job_order(folder: Path) -> tuple[int, str]:
    return (int(folder.name), "") if folder.name.isdigit() else (10**9, folder.name)


def load(paths: Sequence[str | Path]) -> list[Run]:
    """The runs under ``paths`` (see ``expand``) with their overrides and metrics.json; UserError naming a
    damaged file, before any is used."""
    return [Run(folder, RunFolder(folder).overrides(), RunFolder(folder).record()) for folder in expand(paths)]


def swept_keys(runs: Sequence[Run]) -> list[str]:
    """The override keys whose values differ between the runs, in first-seen order."""
    keys = list(dict.fromkeys(k for r in runs for k in r.overrides))
    return [k for k in keys if len({r.overrides.get(k) for r in runs}) > 1]


def headline(runs: Sequence[Run], extra: Sequence[str] = ()) -> list[str]:
    """The metric names a table of these runs shows: ``extra`` (e.g. the optimised metric), then the
    test metrics the runs' metric objects put in tables (metrics.json ``columns``), each that some run has."""
    names = list(extra) + [f"test/{c}" for r in runs for c in r.record.get("columns", [])]
    return [n for n in dict.fromkeys(names) if any(n in r.metrics for r in runs)]
