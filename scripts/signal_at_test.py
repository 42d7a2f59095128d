"""Signals at the edges of the test stage: SIGTERM (or SIGINT) sent a given time after the run's test stage
begins (the line Lightning logs when it restores the checkpoint to test), or after the test's last log line,
and what the run did: its exit code, whether interrupted.json was written and says "test", and whether the
folder resumes to the metrics of the uninterrupted run.

    python scripts/signal_at_test.py                         # SIGTERM at 0, 0.02, 0.1, 0.3, 1 s after test start
    python scripts/signal_at_test.py --signal INT --delays 0 0.05 0.5
    python scripts/signal_at_test.py --after-test --delays 0 0.01 0.05

Prints one row per delay; exit 1 when a row is not the documented stop (143 / 130 with interrupted.json
naming the test, or a run that had finished before the signal: exit 0 with metrics.json).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

MARK_START = "Restoring states from the checkpoint path"  # Lightning, as trainer.test loads the tested checkpoint
MARK_END = "test metrics:"  # genlab logs the test metrics, then writes metrics.json and the summary
EXPECTED = {"TERM": 143, "INT": 130}
ARGS = ["model=vae", "data=digits", "data.max_train=256", "trainer.max_epochs=1", "logger=csv",
        "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false"]


def one(delay: float, signame: str, after_test: bool, root: Path) -> dict:
    log_dir = Path(tempfile.mkdtemp(dir=root))
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "genlab.train", *ARGS, f"paths.log_dir={log_dir}"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    mark = MARK_END if after_test else MARK_START
    sent = threading.Event()
    lines: list[str] = []
    assert proc.stdout is not None
    for line in proc.stdout:
        lines.append(line)
        if mark in line and not sent.is_set():
            time.sleep(delay)
            proc.send_signal(getattr(signal, f"SIG{signame}"))
            sent.set()
    rc = proc.wait()
    runs = list(log_dir.glob("train/runs/*"))
    run = runs[0] if runs else None
    stopped = json.loads((run / "interrupted.json").read_text()) if run and (run / "interrupted.json").is_file() \
        else None
    finished = bool(run and (run / "metrics.json").is_file() and stopped is None)
    ok = (rc == EXPECTED[signame] and stopped is not None and stopped.get("stage") == "test") or \
         (rc == 0 and finished) or (rc == EXPECTED[signame] and finished)
    tail = [ln.strip() for ln in lines if "genlab-train" in ln][-1:] or [lines[-1].strip() if lines else ""]
    return {"delay": delay, "sent": sent.is_set(), "rc": rc, "interrupted": stopped and stopped.get("stage"),
            "finished": finished, "ok": ok, "last": tail[0][:110]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--signal", choices=sorted(EXPECTED), default="TERM")
    p.add_argument("--delays", type=float, nargs="+", default=[0.0, 0.02, 0.1, 0.3, 1.0])
    p.add_argument("--after-test", action="store_true", help="time the signal from the end of the test instead")
    args = p.parse_args()
    root = Path(tempfile.mkdtemp(prefix="genlab-signal-"))
    bad = 0
    print(f"{'delay s':>8} {'rc':>4} {'interrupted.json':>17} {'finished':>9}  ok   last line")
    for d in args.delays:
        r = one(d, args.signal, args.after_test, root)
        bad += not r["ok"]
        print(f"{r['delay']:8.3f} {r['rc']:4d} {str(r['interrupted']):>17} {str(r['finished']):>9}  "
              f"{'yes' if r['ok'] else 'NO '}  {r['last']}")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
