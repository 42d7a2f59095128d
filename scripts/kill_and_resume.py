"""Kill runs at random moments, resume them, and compare their final metrics with an uninterrupted run.

    python scripts/kill_and_resume.py                       # ae, vae and gan on digits, 8 kills each
    python scripts/kill_and_resume.py --models ae --kills 3 --signal TERM

For each model: one uninterrupted run, then ``--kills`` runs each killed (SIGKILL by default, or SIGTERM /
SIGINT) at a random moment (after a random number of epochs and a random part of the next), and resumed with
``genlab-train resume=<its folder>`` until it finishes. Printed per kill: when it was killed, the exit
code (and with SIGTERM/SIGINT the epoch it stopped in), and whether every final metric in metrics.json
equals the uninterrupted run's bit for bit.
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
}
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


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="ae,vae,gan")
    p.add_argument("--kills", type=int, default=8)
    p.add_argument("--signal", default="KILL", choices=["KILL", "TERM", "INT"])
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    rng, sig = random.Random(args.seed), getattr(signal, f"SIG{args.signal}")
    out = Path(tempfile.mkdtemp(prefix="genlab-kill-"))
    failures = 0
    for name in args.models.split(","):
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
        for k in range(args.kills):
            folder = out / name / f"kill{k}"
            proc = genlab_train(*RUNS[name], *COMMON, log_dir=folder)
            # the moment: after a random number of epochs (last.ckpt is rewritten, a new file, at each
            # epoch's end), then a random part of an epoch's time: independent of the machine's load. At
            # least one epoch is watched first, so that "an epoch's time" is one (the first includes start-up);
            # after the last epoch's checkpoint the kill falls in the final evaluation and test
            epochs, part = rng.randrange(1, epochs_of(name)), rng.random()
            seen, inode, ended, took = 0, None, time.time(), 0.0
            while proc.poll() is None and seen <= epochs:
                last = list((folder / "train" / "runs").glob("*/checkpoints/last.ckpt"))
                now = last[0].stat().st_ino if last else None
                if now is not None and now != inode:
                    inode, seen, took, ended = now, seen + 1, time.time() - ended, time.time()
                time.sleep(0.01)
            time.sleep(part * took)
            at = f"epoch {epochs} + {part:.2f} of an epoch"
            killed = proc.poll() is None
            finished = bool(list((folder / "train" / "runs").glob("*/metrics.json")))  # nothing left to cut
            if killed:
                proc.send_signal(sig)
            log, _ = proc.communicate()
            run = only_run(folder)
            stop = run / "interrupted.json"
            epoch = json.loads(stop.read_text())["epoch"] if stop.is_file() else None
            resumes = 0
            while not (run / "metrics.json").is_file() or (run / "interrupted.json").is_file():
                (run / "interrupted.json").unlink(missing_ok=True)
                again = genlab_train(f"resume={run}", log_dir=folder)
                log, _ = again.communicate()
                assert again.returncode == 0, log[-3000:]
                resumes += 1
            got = final_metrics(run)
            same = got == whole
            diff = {k: (whole.get(k), got.get(k)) for k in set(whole) | set(got) if whole.get(k) != got.get(k)}
            failures += not same
            when = "finished first" if not killed or finished else "SIG" + args.signal
            print(f"  kill {k}: {when} at {at} "
                  f"(exit {proc.returncode}{'' if epoch is None else f', stopped at epoch {epoch}'}), "
                  f"{resumes} resume(s): {'bit-identical' if same else f'DIFFERENT {sorted(diff.items())[:3]}'}",
                  flush=True)
    print(f"{failures} run(s) differ; runs in {out}")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
