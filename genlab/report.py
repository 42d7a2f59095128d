"""genlab-report: what a sweep found, from the metrics its runs recorded — no re-training, no re-scoring.

    genlab-report outputs/train/multiruns/<sweep>                 # one sweep
    genlab-report outputs/train/multiruns/*/ outputs/train/runs/<run>  # several, and single runs
    genlab-report <sweep> --out report --metric test/fid --metric test/recall

Runs that differ only in their seed are grouped; per group and metric the report gives the mean,
the standard deviation and the 95% confidence interval of the mean (Student's t with n − 1 degrees
of freedom). It writes ``report.md`` (with its figures in ``figures/``) and ``report.html`` (one
self-contained file, figures inline): the table, a plot of each metric against each numeric swept
key with the intervals as error bars, and each group's sample and reconstruction grids.
"""

from __future__ import annotations

import argparse
import base64
import math
import shutil
import statistics
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from genlab.errors import UserError, WriteFailed
from genlab.files import write_atomically
from genlab.runfolder import RunFolder
from genlab.runs import SEED_KEYS, Run, headline, load, swept_keys

PICTURES = ("samples.png", "reconstructions.png")  # per group, from its first run


@dataclass(frozen=True)
class Stats:
    """A metric over the n runs of one group: mean, sample standard deviation and the half-width of
    the confidence interval of the mean (NaN for n = 1: one run says nothing about the spread)."""

    n: int
    mean: float
    std: float
    ci: float

    def __str__(self) -> str:
        if self.n == 1:
            return f"{self.mean:.4g}"
        return f"{self.mean:.4g} ± {self.ci:.2g}"


def stats(values: Sequence[float], confidence: float = 0.95) -> Stats:
    """Stats of ``values``: the interval is mean ± t_{(1+c)/2, n−1} · s/√n."""
    from scipy.stats import t

    n = len(values)
    mean = statistics.fmean(values)
    if n < 2:
        return Stats(n, mean, math.nan, math.nan)
    std = statistics.stdev(values)
    return Stats(n, mean, std, float(t.ppf((1 + confidence) / 2, n - 1)) * std / math.sqrt(n))


@dataclass
class Group:
    """Runs that share every override but the seed."""

    label: str
    setting: dict[str, str]
    runs: list[Run]

    def stats(self, metric: str, confidence: float = 0.95) -> Stats | None:
        values = [r.metrics[metric] for r in self.runs if isinstance(r.metrics.get(metric), (int, float))]
        values = [v for v in values if math.isfinite(v)]
        return stats(values, confidence) if values else None


def group_runs(runs: Sequence[Run]) -> list[Group]:
    """Groups of runs by their setting (overrides without the seed), in first-seen order, labelled by
    the swept keys that tell the groups apart (or by the folder for unswept single runs)."""
    keys = [k for k in swept_keys(runs) if k not in SEED_KEYS]
    groups: dict[tuple, Group] = {}
    for r in runs:
        if not r.record:  # a job that stopped before writing metrics.json
            continue
        key = r.setting
        if key not in groups:
            label = ", ".join(f"{k}={r.overrides.get(k, '')}" for k in keys) or f"{r.path.parent.name}/{r.name}"
            groups[key] = Group(label, dict(key), [])
        groups[key].runs.append(r)
    return list(groups.values())


def numeric_keys(groups: Sequence[Group]) -> list[str]:
    """Swept keys whose values are all numbers, with at least two distinct: they get plots."""
    out = []
    keys = list(dict.fromkeys(k for g in groups for k in g.setting))
    for k in keys:
        try:
            values = {float(g.setting[k]) for g in groups if k in g.setting}
        except ValueError:
            continue
        if len(values) > 1 and all(k in g.setting for g in groups):
            out.append(k)
    return out


def plot(groups: Sequence[Group], key: str, metric: str, path: Path, confidence: float) -> None:
    """``metric`` (mean ± CI) against the numeric swept ``key``, one line per value of the other keys."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5, 3.5), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    lines: dict[str, list[tuple[float, Stats]]] = {}
    for g in groups:
        s = g.stats(metric, confidence)
        if s is not None:
            rest = ", ".join(f"{k}={v}" for k, v in g.setting.items() if k != key) or metric
            lines.setdefault(rest, []).append((float(g.setting[key]), s))
    for label, points in lines.items():
        points.sort(key=lambda p: p[0])
        ax.errorbar([p[0] for p in points], [p[1].mean for p in points],
                    yerr=[0.0 if math.isnan(p[1].ci) else p[1].ci for p in points], marker="o", capsize=3, label=label)
    ax.set(xlabel=key, ylabel=metric, title=f"{metric} against {key} (mean, {confidence:.0%} CI)")
    if len(lines) > 1:
        ax.legend(fontsize="small")
    fig.tight_layout()
    write_atomically(path, lambda f: fig.savefig(f, format="png"))


def write_report(runs: Sequence[Run], out: Path, metrics: Sequence[str] = (), confidence: float = 0.95) -> Path:
    """report.md, figures/ and report.html under ``out``; returns the Markdown file."""
    groups = group_runs(runs)
    if not groups:
        raise UserError("none of the runs has a metrics.json: nothing to report (did they finish?)")
    names = list(metrics) or headline(runs, ["val/loss"])
    figures = out / "figures"
    if figures.is_symlink():  # every file below --out is written there, never through a link
        raise UserError(f"{figures} is a symbolic link: genlab-report writes only inside --out {out}; remove the "
                        "link or give another --out.")
    figures.mkdir(parents=True, exist_ok=True)
    md = [f"# genlab report: {len(runs)} runs in {len(groups)} groups", "",
          "Mean ± half-width of the " + f"{confidence:.0%} confidence interval of the mean (Student's t, n − 1 "
          "degrees of freedom) over the runs of a group, which differ only in their seed.", ""]
    md += ["| group | n | " + " | ".join(names) + " |", "| --- | --- |" + " --- |" * len(names)]
    for g in groups:
        cells = [str(g.stats(n, confidence) or "–") for n in names]
        md.append(f"| {g.label} | {len(g.runs)} | " + " | ".join(cells) + " |")
    md += ["", "Runs: " + ", ".join(f"`{r.path}`" for g in groups for r in g.runs), ""]
    for key in numeric_keys(groups):
        md += [f"## Against {key}", ""]
        for metric in names:
            path = figures / f"{metric.replace('/', '_')}_vs_{key.replace('/', '_')}.png"
            plot(groups, key, metric, path, confidence)
            md += [f"![{metric} against {key}](figures/{path.name})", ""]
    md += ["## Pictures", ""]
    for i, g in enumerate(groups):
        images = RunFolder(g.runs[0].path).images
        shown = [(p, images / p) for p in PICTURES if (images / p).is_file()]
        if shown:
            md += [f"### {g.label}", ""]
        for name, src in shown:
            dst = figures / f"group{i}_{name}"
            write_atomically(dst, lambda f, src=src: f.write(src.read_bytes()))  # replaces a link, never follows it
            md += [f"![{name} of {g.label}](figures/{dst.name})", ""]
    report = out / "report.md"
    write_atomically(report, lambda f: f.write("\n".join(md).encode()))
    write_atomically(out / "report.html", lambda f: f.write(to_html(md, out).encode()))
    return report


def to_html(md: Sequence[str], base: Path) -> str:
    """A self-contained HTML page of the report's Markdown lines: headings, one table, paragraphs and
    images inlined as base64 PNG."""
    import html

    body, in_table = [], False
    for line in md:
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            if set("".join(cells)) <= set("- "):
                continue
            tag = "th" if not in_table else "td"
            body.append(("<table>" if not in_table else "") + "<tr>" +
                        "".join(f"<{tag}>{html.escape(c)}</{tag}>" for c in cells) + "</tr>")
            in_table = True
            continue
        if in_table:
            body.append("</table>")
            in_table = False
        if line.startswith("!["):
            alt, src = line[2:].split("](", 1)
            data = base64.b64encode((base / src.rstrip(")")).read_bytes()).decode()
            body.append(f'<p><img alt="{html.escape(alt)}" src="data:image/png;base64,{data}"></p>')
        elif line.startswith("#"):
            level = len(line) - len(line.lstrip("#"))
            body.append(f"<h{level}>{html.escape(line.lstrip('# '))}</h{level}>")
        elif line:
            body.append(f"<p>{html.escape(line)}</p>")
    if in_table:
        body.append("</table>")
    style = "body{font-family:sans-serif;max-width:60em;margin:auto} td,th{border:1px solid #ccc;padding:2px 6px}"
    return f"<!doctype html><meta charset='utf-8'><title>genlab report</title><style>{style}</style>" + "".join(body)


def check_out(out: Path) -> None:
    """The report folder is a folder that can be written (checked before anything is written)."""
    from genlab.config.checks import folder_problem

    problem = folder_problem(str(out))
    if problem:
        raise UserError(f"--out {out}: {problem}.")


def default_out(paths: Sequence[Path]) -> Path:
    """<sweep>/report for one sweep folder, else ./genlab-report."""
    if len(paths) == 1 and paths[0].is_dir() and not RunFolder(paths[0]).is_run():
        return paths[0] / "report"
    return Path("genlab-report")


def parser() -> argparse.ArgumentParser:
    """genlab-report's options (the fuzz reads them: every option gets bad values)."""
    parser = argparse.ArgumentParser(prog="genlab-report", description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="+", type=Path, metavar="SWEEP_DIR|RUN_DIR")
    parser.add_argument("--out", type=Path, default=None, help="the report folder (default: <sweep>/report)")
    parser.add_argument("--metric", action="append", default=[], help="a metric to report (repeatable; default: "
                        "val/loss and the test metrics the runs' evaluators put in tables)")
    parser.add_argument("--confidence", type=float, default=0.95, help="of the intervals (default 0.95)")
    return parser


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point (``genlab-report``)."""
    args = parser().parse_args(argv)
    try:
        if not 0 < args.confidence < 1:
            raise UserError(f"--confidence={args.confidence}: it must lie between 0 and 1.")
        runs = load(args.paths)
        known = {k for r in runs for k in r.metrics}
        unknown = [m for m in args.metric if m not in known]
        if unknown:
            raise UserError(f"--metric {', '.join(unknown)}: no run has it; the runs have {', '.join(sorted(known))}.")
        out = args.out or default_out(args.paths)
        check_out(out)
        made = not out.exists()
        try:
            report = write_report(runs, out, args.metric, args.confidence)
        except (OSError, UserError) as e:
            if made:  # a report folder this command made and could not finish is not left half-made
                shutil.rmtree(out, ignore_errors=True)
            if isinstance(e, OSError):
                raise UserError(f"could not write the report to {out}: {e.strerror or e}") from None
            raise
    except UserError as e:
        msg = e.advice("--out FOLDER") if isinstance(e, WriteFailed) else str(e)
        print(f"genlab-report: error: {msg}", file=sys.stderr)
        sys.exit(e.exit_code)
    print(report.read_text().split("\n## ")[0])
    print(f"report: {report}  and  {report.with_suffix('.html')}")


if __name__ == "__main__":
    main()
