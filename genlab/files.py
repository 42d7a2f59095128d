"""Files written whole: to a temporary file in the destination folder, flushed to disk, then renamed
over the old file. A full disk or a kill leaves the previous file, never a truncated one; readers (another
run sharing a cache, a resume) see the old file or the new one. Used for checkpoints, metrics.json,
interrupted.json and the classifier and dataset caches.
"""

from __future__ import annotations

import errno
import json
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from genlab.errors import WriteFailed

# what a write can meet that is not a bug: no space, a quota, a read-only or forbidden folder, a file too large
WRITE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG})
LOW_SPACE = 1 << 20  # below this many free bytes, a failed write is taken for a full disk


def free_bytes(path: str | Path) -> int | None:
    """The bytes free for this user on the file system of ``path`` (or its nearest existing folder), or None."""
    folder = Path(path).absolute()
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return None


def size_text(n: int) -> str:
    return f"{n / 2**20:.1f} MiB" if n >= 2**20 else f"{n / 2**10:.0f} KiB"


def write_failure(path: str | Path, reason: str, need: int | None = None, option: str | None = None) -> WriteFailed:
    """The one-line error for a file that could not be written: where, why, the space free and needed;
    ``option``: the setting that puts such files elsewhere."""
    free = free_bytes(Path(path).parent)
    space = "" if free is None else f"; {size_text(free)} free there"
    wanted = f", about {size_text(need)} needed" if need else ""
    return WriteFailed(f"{path} could not be written: {reason}{space}{wanted}.", option)


def write_error(path: str | Path, error: BaseException, option: str | None = None) -> WriteFailed | None:
    """``error`` of writing ``path`` as a WriteFailed when it is a write refused by the system (errno in
    WRITE_ERRNOS), or a writer's own failure on a nearly full disk (torch's zip writer raises a RuntimeError
    there); None for anything else."""
    if isinstance(error, OSError) and error.errno in WRITE_ERRNOS:
        return write_failure(path, error.strerror or str(error), option=option)
    free = free_bytes(Path(path).parent)
    if isinstance(error, RuntimeError) and free is not None and free < LOW_SPACE:
        return write_failure(path, "no space left on the device", option=option)
    return None


def write_atomically(path: str | Path, write: Any, need: int | None = None, option: str | None = None) -> None:
    """Call ``write(file)`` on a temporary file beside ``path``, flush it to disk, then rename it to
    ``path``: readers and a later resume see the old file or the new one, never half of one. ``need``: the
    bytes the file will take, checked against the free space first. A write the system refuses (a full
    disk) is a WriteFailed naming the file (and ``option``, the setting that puts it elsewhere), with the
    temporary file removed."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise (write_error(path.parent, e, option) or e) from None
    free = free_bytes(path.parent)
    if need is not None and free is not None and free < need:
        raise write_failure(path, "not enough space left on the device", need, option)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        raise (write_error(path, e, option) or e) from None
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        failed = write_error(path, e, option) if isinstance(e, Exception) else None
        if failed is not None:
            raise failed from None
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


# ---- caches that carry their own checksum ----------------------------------------------------------
# A cache file genlab wrote is loaded weights-only (no code can run), and also only when its content
# still has the sha256 recorded when it was written: a damaged, truncated or swapped file is built again
# rather than used. The digest is not a signature: it catches accidents and stale files, not a forger,
# which the weights-only load already keeps from running code.


def tensors_digest(value: Any) -> str:
    """sha256 over a nest of dicts, lists and tensors: keys, dtypes, shapes and bytes, in a fixed order."""
    import hashlib

    import torch

    h = hashlib.sha256()

    def walk(v: Any) -> None:
        if isinstance(v, torch.Tensor):
            t = v.detach().cpu().contiguous()
            h.update(f"T{t.dtype}{tuple(t.shape)}".encode())
            h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
        elif isinstance(v, dict):
            h.update(f"D{len(v)}".encode())
            for k in sorted(v, key=str):
                h.update(f"K{k!r}".encode())
                walk(v[k])
        elif isinstance(v, (list, tuple)):
            h.update(f"L{len(v)}".encode())
            for item in v:
                walk(item)
        else:  # plain values (str, int, float, bool, None)
            h.update(f"V{v!r}".encode())

    walk(value)
    return h.hexdigest()


def save_checked(path: str | Path, payload: Any, option: str | None = None) -> None:
    """``torch.save`` of ``payload`` with its ``tensors_digest``, written whole (``write_atomically``;
    ``option``: the setting that puts the file elsewhere)."""
    import torch

    record = {"genlab_digest": tensors_digest(payload), "payload": payload}
    write_atomically(path, lambda f: torch.save(record, f), option=option)


def load_checked(path: str | Path) -> Any:
    """The payload ``save_checked`` wrote at ``path``, read weights-only; None when the file is absent, cannot
    be read, was not written by ``save_checked`` or no longer has its digest (then the caller builds it again)."""
    import torch

    try:
        record = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # absent, damaged, a pickle that names code: not a cache genlab can use
        return None
    if not isinstance(record, dict) or set(record) != {"genlab_digest", "payload"}:
        return None
    return record["payload"] if record["genlab_digest"] == tensors_digest(record["payload"]) else None


def file_digest(path: str | Path, chunk: int = 1 << 22) -> str:
    """sha256 of a file's bytes, read in 4 MiB pieces (array caches can be gigabytes)."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()
