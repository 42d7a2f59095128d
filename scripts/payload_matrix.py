"""The payload matrix: every way a run folder enters genlab × every spelling of a dangerous target
(tests/payloads.py), and whether the payload ran (its marker file was written) — without trust, and with
``--trust`` to show that each payload is real.

    python scripts/payload_matrix.py                 # trains a tiny autoencoder run on digits first
    python scripts/payload_matrix.py --run RUN_DIR   # a finished run folder of genlab-train
    python scripts/payload_matrix.py --trust         # the same folders, the user vouching for them

Prints a table (rows: spellings, columns: entry points; "RAN" where the marker was written, else how it
ended) and the count of markers written. The matrix uses only the entry points themselves, so it runs
against any genlab version (PYTHONPATH=<other checkout>) for a before/after comparison.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from payloads import ENTRIES, SPELLINGS, copy_run, enter, plant  # noqa: E402


def tiny_run(logs: Path) -> Path:
    cmd = [sys.executable, "-m", "genlab.train", "model=ae", "data=digits", "data.max_train=96", "data.batch_size=32",
           "trainer=debug", "trainer.enable_progress_bar=false", "logger=csv", f"paths.log_dir={logs}"]
    subprocess.run(cmd, check=True, capture_output=True)
    (run,) = (logs / "train" / "runs").iterdir()
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, help="a finished run folder (default: train a tiny one)")
    parser.add_argument("--trust", action="store_true", help="enter with trust=true / --trust")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="genlab-payloads-"))
    run = args.run or tiny_run(work / "logs")
    ran = 0
    width = max(map(len, SPELLINGS)) + 2
    print("spelling".ljust(width) + "".join(e.ljust(20) for e in ENTRIES))
    for spelling in SPELLINGS:
        cells = []
        for entry in ENTRIES:
            folder = copy_run(run, work / "someone_elses_run")
            marker = work / "marker"
            marker.unlink(missing_ok=True)
            plant(folder, spelling, marker)
            outcome = enter(entry, folder, args.trust, work / "out")
            if marker.exists():
                ran += 1
                cells.append("RAN")
            else:
                cells.append(outcome.split(":", 1)[0])
        print(spelling.ljust(width) + "".join(c.ljust(20) for c in cells), flush=True)
    total = len(SPELLINGS) * len(ENTRIES)
    print(f"markers written: {ran} of {total} ({'with' if args.trust else 'without'} trust)")


if __name__ == "__main__":
    main()
