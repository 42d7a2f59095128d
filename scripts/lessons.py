"""The claims of the lecture notes as one-line experiments: train every lesson preset
(``conf/experiment/lesson_<name>.yaml``) as a user would, measure the claim, draw one figure per lesson
into ``docs/lessons/<name>.png`` and rewrite the gallery of ``docs/lessons.md`` (between
``<!-- lessons:start -->`` and ``<!-- lessons:end -->``).

    python scripts/lessons.py --quick                  # every lesson, shorter trainings (minutes on two cores)
    python scripts/lessons.py                          # every lesson at its preset's length
    python scripts/lessons.py --quick --only denoising # one lesson (--only takes a comma-separated list)
    python scripts/lessons.py --list                   # the lessons, their claims and commands
    python scripts/lessons.py --quick --seeds 0,1,2    # and at seeds 1 and 2: how many seeds the claims hold at
    python scripts/lessons.py --only comparing_pdfs --extra "data=mnist data.root=PATH"  # on other data (printed)

Each lesson runs ``genlab-train`` in a subprocess — ``genlab-train experiment=lesson_<name>``, or a
multirun where a lesson compares runs (``model=`` or another key) (``genlab-train -m experiment=lesson_denoising
model=ae,dae``) — with the fixed ``seed`` (0) and, under ``--quick``, fewer epochs; its runs go below
``--out`` (default ``outputs/lessons/<name>``, with the classifier cache in ``outputs/lessons/.cache``),
never into the repository. The numbers come from the runs' ``metrics.json`` and, where a claim needs
more (principal angles, per-image errors, pictures of noisy inputs), from the best checkpoint
reloaded through ``genlab.evaluate.load_run``. Each lesson states the criterion by which its claim
counts as held, and a claim that does not hold at the settings run is reported so, in the table and
in the gallery.

Every training runs on one thread (``--threads``): on two cores that other jobs share, two threads of
these small matrix products wait on each other and a run takes many times longer (docs/speed.md gives
the figures). ``--jobs 2`` runs two lessons at once, one thread each.

The results of every lesson run so far are kept in ``docs/lessons/lessons.json``, so that ``--only``
refreshes one lesson's entry and figure and the gallery keeps the others. ``--seeds`` runs each lesson at
more seeds than the gallery's (``--seed``, 0): those are judged the same way and only counted (held or not,
with their numbers) beside the gallery's run; ``--seeds 1,2`` adds them to the kept results of seed 0.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
import yaml
from lesson_judges import LESSONS  # beside this script: what each lesson measures and draws
from lesson_kit import Lesson, Record
from matplotlib.figure import Figure

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs" / "lessons"
GALLERY = ROOT / "docs" / "lessons.md"
RESULTS = DOCS / "lessons.json"
START, END = "<!-- lessons:start -->", "<!-- lessons:end -->"


# ---- running --------------------------------------------------------------------------------
def run_lesson(lesson: Lesson, out: Path, quick: bool, seed: int, threads: int, folder: Path,
               extra: tuple[str, ...] = ()) -> dict[str, Path]:
    """Train the lesson's preset through genlab-train in a subprocess started in ``out`` (so that the
    classifier cache and any dataset files go below it), its runs in ``folder`` (emptied first), its log
    ``folder/genlab-train.log``; ``extra``: more overrides after the lesson's own.
    Returns the run folders by swept value (by model name for a single run); RuntimeError naming the log
    when genlab-train fails."""
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    where = f"hydra.sweep.dir={folder}" if lesson.sweep else f"hydra.run.dir={folder / 'run'}"
    args = [sys.executable, "-m", "genlab.train", *lesson.arguments(quick, seed), *extra, where,
            "trainer.enable_progress_bar=false"]
    threads_env = {k: str(threads) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    env = {**os.environ, **threads_env, "PYTHONWARNINGS": "ignore"}
    log = folder / "genlab-train.log"
    with open(log, "w") as f:
        f.write(" ".join(args) + "\n\n")
        f.flush()
        done = subprocess.run(args, cwd=out, env=env, stdout=f, stderr=subprocess.STDOUT)
    if done.returncode != 0:
        raise RuntimeError(f"genlab-train failed (exit {done.returncode}); see {log}")
    runs = {}
    for metrics in sorted(folder.glob("**/metrics.json")):
        key = swept_value(metrics.parent, lesson.swept) if lesson.swept else json.loads(metrics.read_text())["model"]
        runs[key] = metrics.parent
    return runs


def swept_value(run: Path, key: str) -> str:
    """The value the multirun gave ``key`` in this run: its override in ``.hydra/overrides.yaml``."""
    for override in yaml.safe_load((run / ".hydra" / "overrides.yaml").read_text()):
        name, _, value = override.partition("=")
        if name.lstrip("+~") == key:
            return value
    raise RuntimeError(f"{run} has no override of {key}")


def execute(lesson: Lesson, out: Path, quick: bool, seed: int, threads: int, folder: Path,
            extra: tuple[str, ...] = ()) -> tuple[Record, Figure | None]:
    """Run and judge one lesson at one seed; a failure becomes a record with its error instead of stopping
    the others."""
    start = time.time()
    record = Record("quick" if quick else "full", seed, overrides=list(lesson.quick) if quick else [])
    figure = None
    try:
        outcome = lesson.judge(run_lesson(lesson, out, quick, seed, threads, folder, extra))
        record.numbers, record.held, figure = outcome.numbers, outcome.held, outcome.figure
    except Exception as e:  # reported in the table and the gallery; the other lessons go on
        record.error = f"{type(e).__name__}: {e}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "error.txt").write_text(traceback.format_exc())
    record.seconds = round(time.time() - start, 1)
    return record, figure


# ---- reporting ------------------------------------------------------------------------------
def verdict(record: Record | None) -> str:
    if record is None:
        return "not run yet"
    if record.held is None:
        return "failed to run"
    return "held" if record.held else "did NOT hold"


def print_table(results: dict[str, Record]) -> None:
    """Lesson, claim, the measured numbers and whether the claim held, wrapped to the terminal."""
    width = shutil.get_terminal_size((140, 20)).columns
    print(f"\n{'lesson':<17}{'held?':<14}{'seconds':>8}  claim / measured")
    print("-" * min(width, 140))
    for lesson in LESSONS:
        r = results.get(lesson.name)
        if r is None:
            continue
        lines = [lesson.title + f" (held if {lesson.criterion})", *(r.numbers or [r.error])]
        text = [textwrap.fill(t, max(40, width - 42), subsequent_indent="  ") for t in lines]
        first, *rest = "\n".join(text).split("\n")
        print(f"{lesson.name:<17}{verdict(r):<14}{r.seconds:>8.0f}  {first}")
        for line in rest:
            print(f"{'':<41}{line}")


def robustness(record: Record | None) -> str:
    """How many of the seeds run held the claim, e.g. "3 of 3 seeds (0, 1, 2)" or "2 of 3 seeds (not at 1)"."""
    if record is None:
        return "-"
    held = {record.seed: record.held, **{int(s): v["held"] for s, v in record.others.items()}}
    failed = sorted(s for s, h in held.items() if h is None)
    ran = {s: h for s, h in held.items() if h is not None}
    text = f"{sum(ran.values())} of {len(ran)} seed{'s' if len(ran) > 1 else ''}"
    missed = sorted(s for s, h in ran.items() if not h)
    if missed:
        text += f" (not at {', '.join(map(str, missed))})"
    else:
        text += f" ({', '.join(map(str, sorted(ran)))})"
    return text + (f"; failed to run at seed {', '.join(map(str, failed))}" if failed else "")


def gallery(results: dict[str, Record]) -> str:
    """The gallery of docs/lessons.md between the markers: a summary table (a thumbnail, the claim, whether it
    held at the gallery's seed and at how many of the seeds run), then per lesson its claim, command, numbers,
    the numbers at the other seeds, and its figure."""
    modes = sorted({r.mode for r in results.values()})
    seeds = ", ".join(str(s) for s in sorted({r.seed for r in results.values()})) or "0"
    how = " and ".join(f"`python scripts/lessons.py{' --quick' if m == 'quick' else ''}`" for m in modes) or "-"
    out = [START,
           "<!-- written by scripts/lessons.py from docs/lessons/lessons.json; edits here are overwritten -->",
           "",
           f"Numbers and figures below were made by {how} (seed {seeds}, one thread per training); `--quick` "
           "trains for fewer epochs than the presets, with the overrides given under each lesson. The last "
           "column counts the seeds at which the claim held (`--seeds 0,1,2`); a claim is reported as it came "
           "out at each, never re-tuned per seed.",
           "",
           "| | lesson | claim | held? | held at |",
           "| --- | --- | --- | --- | --- |"]
    for i, lesson in enumerate(LESSONS, start=1):
        r = results.get(lesson.name)
        thumb = (f'<img src="lessons/{lesson.name}.png" width="120" alt="">'
                 if (DOCS / f"{lesson.name}.png").is_file() and r is not None and r.numbers else "")
        heading = f"{i}. {lesson.title}".lower()  # GitHub's anchor of the heading below: spaces to -, punctuation out
        anchor = "".join("-" if c == " " else c for c in heading if c.isalnum() or c in " -_")
        out.append(f"| {thumb} | [`lesson_{lesson.name}`](#{anchor}) | {lesson.title} | {verdict(r)} | "
                   f"{robustness(r)} |")
    for i, lesson in enumerate(LESSONS, start=1):
        r = results.get(lesson.name)
        out += ["", f"### {i}. {lesson.title}", "", lesson.claim, "", "```bash", lesson.command, "```", ""]
        if r is None:
            out.append("Not run yet: `python scripts/lessons.py --only " + lesson.name + "`.")
            continue
        settings = (f"with `--quick` ({', '.join(f'`{o}`' for o in r.overrides)})" if r.mode == "quick"
                    else "at the preset's length")
        out.append(f"Measured {settings}, seed {r.seed}:")
        out.append("")
        out += [f"- {n}" for n in r.numbers] if r.numbers else [f"- failed to run: {r.error}"]
        out += ["", f"Claim **{verdict(r)}** (held if {lesson.criterion}); held at {robustness(r)}.",
                ""]
        if r.others:
            out += ["<details><summary>the other seeds' numbers</summary>", ""]
            for s, v in sorted(r.others.items(), key=lambda kv: int(kv[0])):
                state = "failed to run" if v["held"] is None else ("held" if v["held"] else "did NOT hold")
                out.append(f"- seed {s} ({state}): " + ("; ".join(v["numbers"]) if v["numbers"] else v["error"]))
            out += ["", "</details>", ""]
        if (DOCS / f"{lesson.name}.png").is_file() and r.numbers:
            out.append(f"![{lesson.title}](lessons/{lesson.name}.png)")  # relative to docs/lessons.md
    out.append(END)
    return "\n".join(out)


def rewrite_gallery(section: str) -> None:
    text = GALLERY.read_text()
    if START not in text or END not in text:
        raise SystemExit(f"{GALLERY} has no {START} ... {END} markers")
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    GALLERY.write_text(head + section + tail)


def load_results() -> dict[str, Record]:
    if not RESULTS.is_file():
        return {}
    known = {lesson.name for lesson in LESSONS}
    return {k: Record(**v) for k, v in json.loads(RESULTS.read_text()).items() if k in known}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="fewer epochs per lesson (the overrides each lesson lists)")
    p.add_argument("--only", default="", help="comma-separated lesson names (default: all)")
    p.add_argument("--list", action="store_true", help="print the lessons and their commands, run nothing")
    p.add_argument("--out", type=Path, default=ROOT / "outputs" / "lessons", help="where the runs go")
    p.add_argument("--seed", type=int, default=0, help="the seed of the gallery's numbers and figures (default 0)")
    p.add_argument("--seeds", default=None,
                   help="comma-separated seeds to run (default: --seed); the others than --seed are judged for "
                        "robustness only (held or not, beside the gallery's seed), their runs in <out>/<name>-seed<s>")
    p.add_argument("--extra", default="", help="more genlab-train overrides for every lesson run, e.g. \"data=mnist "
                   "data.root=PATH trainer.max_epochs=5\": the results are printed and the figures saved in --out; "
                   "the gallery and lessons.json are left as they are")
    p.add_argument("--threads", type=int, default=1, help="torch threads per training (default 1)")
    p.add_argument("--jobs", type=int, default=1, help="lessons trained at once (default 1)")
    p.add_argument("--no-gallery", "--no-readme", dest="no_gallery", action="store_true",
                   help="leave docs/lessons.md as it is")
    args = p.parse_args(argv)
    names = [n for n in args.only.split(",") if n]
    unknown = sorted(set(names) - {lesson.name for lesson in LESSONS})
    if unknown:
        p.error(f"unknown lesson(s) {', '.join(unknown)}; known: {', '.join(lesson.name for lesson in LESSONS)}")
    try:
        seeds = [int(s) for s in (args.seeds or str(args.seed)).split(",") if s.strip()]
    except ValueError:
        p.error(f"--seeds {args.seeds}: give comma-separated integers, e.g. 0,1,2")
    chosen = [lesson for lesson in LESSONS if not names or lesson.name in names]
    if args.list:
        for lesson in chosen:
            print(f"{lesson.name:<15}{lesson.title}\n{'':<15}{lesson.command}\n"
                  f"{'':<15}--quick: {' '.join(lesson.quick)}")
        return
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    DOCS.mkdir(parents=True, exist_ok=True)
    results = load_results()
    start = time.time()
    mode = "quick" if args.quick else "full"
    print(f"{len(chosen)} lesson(s) at seed(s) {', '.join(map(str, seeds))}, {'--quick' if args.quick else 'full'}; "
          f"runs in {args.out}", flush=True)
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        order = sorted(seeds, key=lambda s: s != args.seed)  # the gallery's seed first: the others join its record
        futures = {pool.submit(run_lesson_safely, lesson, seed, args): (lesson, seed)
                   for seed in order for lesson in chosen}
        for future, (lesson, seed) in futures.items():
            record, figure = future.result()
            print(f"  {lesson.name}, seed {seed}: {verdict(record)} in {record.seconds:.0f} s", flush=True)
            if args.extra:  # not the lesson as the gallery states it: printed, its figure beside its runs
                if figure is not None:
                    figure.savefig(args.out / f"{lesson.name}-seed{seed}.png", dpi=100)
                    figure.clear()
                results[lesson.name] = record
                continue
            if seed == args.seed:  # the gallery's run: its numbers and figure
                if figure is not None:
                    figure.savefig(DOCS / f"{lesson.name}.png", dpi=100)
                old = results.get(lesson.name)
                if old is not None and old.mode == mode:  # the robustness seeds of the same mode are kept
                    record.others = {s: v for s, v in old.others.items() if s != str(seed)}
                results[lesson.name] = record
            else:
                main_record = results.get(lesson.name)
                if main_record is None or main_record.mode != mode or main_record.seed != args.seed:
                    print(f"  ({lesson.name}: no {mode} result at seed {args.seed} to set seed {seed} beside; "
                          "run that seed too)", flush=True)
                else:
                    main_record.others[str(seed)] = {"held": record.held, "numbers": record.numbers,
                                                     "error": record.error, "seconds": record.seconds}
            if figure is not None:
                figure.clear()
    if args.extra:
        print_table({lesson.name: results[lesson.name] for lesson in chosen if lesson.name in results})
        print(f"with {args.extra}: figures in {args.out}; docs/ left as it was")
        return
    RESULTS.write_text(json.dumps({k: vars(v) for k, v in results.items()}, indent=2, ensure_ascii=False) + "\n")
    print_table({lesson.name: results[lesson.name] for lesson in chosen if lesson.name in results})
    if not args.no_gallery:
        rewrite_gallery(gallery(results))
        print(f"\n{GALLERY.relative_to(ROOT)} gallery and {DOCS.relative_to(ROOT)}/ rewritten")
    print(f"{len(chosen)} lesson(s) at {len(seeds)} seed(s) in {time.time() - start:.0f} s")


def run_lesson_safely(lesson: Lesson, seed: int, args: argparse.Namespace) -> tuple[Record, Figure | None]:
    """``execute`` with the command-line settings (a pool task); the gallery seed's runs in <out>/<name>."""
    folder = args.out / (lesson.name if seed == args.seed else f"{lesson.name}-seed{seed}")
    return execute(lesson, args.out, args.quick, seed, args.threads, folder, tuple(args.extra.split()))


if __name__ == "__main__":
    main()
