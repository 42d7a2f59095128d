"""Kill runs at random moments, resume them, and compare their final metrics with an uninterrupted run.

    python scripts/kill_and_resume.py                       # ae, vae and gan on digits, 8 kills each
    python scripts/kill_and_resume.py --models ae --kills 3 --signal TERM
    python scripts/kill_and_resume.py --models all --signal KILL,TERM --kills 2 --when fit,test,twice

For each model: one uninterrupted run, then for each signal (SIGKILL by default, or SIGTERM / SIGINT) and
each moment ``--when`` names, ``--kills`` runs killed then, and resumed with ``genlab-train
resume=<its folder>`` until it finishes. The moments: ``fit``, after a random number of epochs and a random
part of the next; ``test``, a random moment of the final evaluation and test (after the last epoch's
checkpoint); ``twice``, a kill in fit, then the resumed run killed again in fit. Printed per kill: when it
was killed, the exit code (and with SIGTERM/SIGINT the epoch it stopped in), and whether every final metric
in metrics.json equals the uninterrupted run's bit for bit; at the end a table per model and signal.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RUNS = {  # small runs on the built-in digits
    "ae": ["model=ae", "data=digits", "trainer.max_epochs=20"],
    # four updates per loader batch (genlab's own update loop under manual optimisation)
    "ae_split": ["model=ae", "data=digits", "trainer.max_epochs=20", "model.updates_per_batch=4",
                 "data.batch_size=256"],
    "vae": ["model=vae", "data=digits", "trainer.max_epochs=20", "data.binarize=true"],
    "gan": ["model=gan", "data=digits", "trainer.max_epochs=20", "model.ema=0.9"],
    "cyclegan": ["experiment=cyclegan_digits", "trainer.max_epochs=4", "data.max_train=300"],
    "rbm": ["model=rbm", "data=digits", "data.binarize=true", "trainer.max_epochs=10", "model.ais_betas=200"],
    "pcd": ["model=rbm", "data=digits", "data.binarize=true", "trainer.max_epochs=10", "model.ais_betas=200",
            "model.persistent=true"],
    "ddpm": ["model=ddpm", "data=digits", "trainer.max_epochs=6", "callbacks.evaluator.sample_steps=20"],
    "cddpm": ["model=cddpm", "data=digits", "trainer.max_epochs=6", "callbacks.evaluator.sample_steps=20"],
    "simclr": ["model=simclr", "data=digits", "trainer.max_epochs=10"],
    "clip": ["model=clip", "data=digits", "trainer.max_epochs=10"],
    "realnvp": ["model=realnvp", "data=digits", "trainer.max_epochs=6"],
}
WHEN = ("fit", "test", "twice")
COMMON = ["trainer.enable_progress_bar=false", "trainer.enable_model_summary=false", "logger=csv",
          "callbacks.evaluator.metrics.sample_quality.n_samples=200"]


def genlab_train(*args: str, log_dir: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "genlab.train", *args, f"paths.log_dir={log_dir}"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "HYDRA_FULL_ERROR": "1"})


def training_window(proc: subprocess.Popen, folder: Path) -> tuple[float, float]:
    """(seconds from start to the first checkpoint, to metrics.json) of a run being watched."""
    start, first = time.time(), None
    while proc.poll() is None:
        if first is None and list((folder / "train" / "runs").glob("*/checkpoints/last.ckpt")):
            first = time.time() - start
        if list((folder / "train" / "runs").glob("*/metrics.json")):
            break
        time.sleep(0.02)
    return first or 0.0, time.time() - start


def only_run(folder: Path) -> Path:
    (run,) = [p for p in (folder / "train" / "runs").iterdir()]
    return run


def epochs_of(name: str) -> int:
    return next(int(a.split("=")[1]) for a in RUNS[name] if a.startswith("trainer.max_epochs="))


def final_metrics(run: Path) -> dict:
    return json.loads((run / "metrics.json").read_text())["metrics"]


def kill_at(proc: subprocess.Popen, folder: Path, epochs: int, part: float, sig: int) -> tuple[bool, str]:
    """Send ``sig`` after ``epochs`` more epochs have ended (last.ckpt is rewritten, a new file, at each
    epoch's end) and then ``part`` of an epoch's time: a moment independent of the machine's load. At least one
    epoch is watched first, so that "an epoch's time" is one (the first includes start-up). Returns whether
    the signal was sent (the run may have ended first) and the moment in words."""
    seen, inode, ended, took = 0, None, time.time(), 0.0
    last = folder / "train" / "runs"
    while proc.poll() is None and seen <= epochs:
        found = list(last.glob("*/checkpoints/last.ckpt"))
        now = found[0].stat().st_ino if found else None
        if now is not None and now != inode:
            inode, seen, took, ended = now, seen + 1, time.time() - ended, time.time()
        time.sleep(0.01)
    time.sleep(part * took)
    sent = proc.poll() is None
    if sent:
        proc.send_signal(sig)
    return sent, f"epoch {epochs} + {part:.2f} of an epoch"


def resume_to_the_end(run: Path, folder: Path) -> int:
    """Resume ``run`` until it has finished; the number of resumes."""
    resumes = 0
    while not (run / "metrics.json").is_file() or (run / "interrupted.json").is_file():
        again = genlab_train(f"resume={run}", log_dir=folder)
        log, _ = again.communicate()
        assert again.returncode == 0, log[-3000:]
        resumes += 1
    return resumes


def one_kill(name: str, when: str, sig: int, folder: Path, rng: random.Random) -> tuple[bool, str, dict]:
    """A run of ``name`` killed by ``sig`` at a moment of kind ``when``, resumed to the end: (killed, what
    happened, its final metrics)."""
    total = epochs_of(name)
    proc = genlab_train(*RUNS[name], *COMMON, log_dir=folder)
    epochs = total - 1 if when == "test" else rng.randrange(1, total)
    part = 1.5 * rng.random() if when == "test" else rng.random()  # test: within the evaluation after the last epoch
    sent, at = kill_at(proc, folder, epochs, part, sig)
    proc.communicate()
    run = only_run(folder)
    stop = run / "interrupted.json"
    record = json.loads(stop.read_text()) if stop.is_file() else None
    story = f"{at} (exit {proc.returncode}" + (
        f", stopped in {record['stage']} at epoch {record['epoch']}" if record else "") + ")"
    if when == "twice" and sent and not (run / "metrics.json").is_file():
        again = genlab_train(f"resume={run}", log_dir=folder)  # the resumed run, killed again
        more = rng.randrange(1, max(2, total - epochs))
        sent_again, at_again = kill_at(again, folder, more, rng.random(), sig)
        again.communicate()
        story += f", then {at_again} after resuming (exit {again.returncode})" if sent_again else ", resumed"
    resumes = resume_to_the_end(run, folder)
    return sent, f"{story}, {resumes} resume(s)", final_metrics(run)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="ae,vae,gan", help=f"comma-separated, or all: {', '.join(RUNS)}")
    p.add_argument("--kills", type=int, default=8, help="kills per model, signal and moment")
    p.add_argument("--signal", default="KILL", help="comma-separated: KILL, TERM, INT")
    p.add_argument("--when", default="fit", help=f"comma-separated moments: {', '.join(WHEN)}")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    names = list(RUNS) if args.models == "all" else args.models.split(",")
    signals, moments = args.signal.split(","), args.when.split(",")
    unknown = [n for n in names if n not in RUNS] + [s for s in signals if s not in ("KILL", "TERM", "INT")] + \
        [w for w in moments if w not in WHEN]
    if unknown:
        p.error(f"unknown: {', '.join(unknown)}")
    rng = random.Random(args.seed)
    out = Path(tempfile.mkdtemp(prefix="genlab-kill-"))
    table: list[tuple[str, str, str, int, int, set[str]]] = []
    for name in names:
        # a one-epoch run first fills the caches (the dataset classifier of the sample-quality metrics),
        # so the uninterrupted run times what every later run does
        warm = genlab_train(*RUNS[name], *COMMON, "trainer.max_epochs=1", log_dir=out / name / "warm-up")
        log, _ = warm.communicate()
        assert warm.returncode == 0, log[-3000:]
        start = time.time()
        base = out / name / "whole"
        proc = genlab_train(*RUNS[name], *COMMON, log_dir=base)
        first, trained = training_window(proc, base)
        log, _ = proc.communicate()
        assert proc.returncode == 0, log[-3000:]
        whole, seconds = final_metrics(only_run(base)), trained - first  # training after the first checkpoint
        print(f"{name}: uninterrupted run {time.time() - start:.0f} s, of which {seconds:.1f} s train after the "
              "first checkpoint", flush=True)
        for signame in signals:
            for when in moments:
                same_count, differ = 0, set()
                for k in range(args.kills):
                    folder = out / name / f"{signame}-{when}-{k}"
                    sent, story, got = one_kill(name, when, getattr(signal, f"SIG{signame}"), folder, rng)
                    diff = {m for m in set(whole) | set(got) if whole.get(m) != got.get(m)}
                    same_count += not diff
                    differ |= diff
                    print(f"  {when} kill {k}: {'SIG' + signame if sent else 'finished first'} at {story}: "
                          f"{'bit-identical' if not diff else 'DIFFERENT ' + ', '.join(sorted(diff)[:4])}",
                          flush=True)
                table.append((name, signame, when, args.kills, same_count, differ))
    print("\n| model | signal | moment | kills | bit-identical | metrics that differ |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name, signame, when, kills, same_count, differ in table:
        print(f"| {name} | SIG{signame} | {when} | {kills} | {same_count} | {', '.join(sorted(differ)) or '-'} |")
    failures = sum(kills - same_count for *_, kills, same_count, _ in table)
    print(f"{failures} run(s) differ; runs in {out}")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
