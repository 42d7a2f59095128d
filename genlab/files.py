"""Files written whole: to a temporary file in the destination folder, flushed to disk, then renamed
over the old file. A full disk or a kill leaves the previous file, never a truncated one; readers (another
run sharing a cache, a resume) see the old file or the new one. Used for checkpoints, metrics.json,
interrupted.json and the classifier and dataset caches.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any


def write_atomically(path: str | Path, write: Any) -> None:
    """Call ``write(file)`` on a temporary file beside ``path``, flush it to disk, then rename it to
    ``path``: readers and a later resume see the old file or the new one, never half of one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def strict_json(value: Any) -> Any:
    """``value`` with NaN and ±inf floats replaced by None, so that json.dumps gives strict JSON."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: strict_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict_json(v) for v in value]
    return value


def write_json(path: str | Path, value: Any) -> None:
    """Strict JSON (no NaN), written atomically."""
    text = json.dumps(strict_json(value), indent=2, allow_nan=False)
    write_atomically(path, lambda f: f.write(text.encode()))
