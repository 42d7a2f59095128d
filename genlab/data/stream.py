"""Data larger than memory (``data.in_memory=false``): each split is decoded once into a memory-mapped
uint8 array (a ``.npy`` file in ``data.array_cache``, named by a checksum of what it holds), and batches
are read from it by a ``torch.utils.data.DataLoader`` with worker processes (and pinned memory when a
GPU is there), in the very order the in-memory path uses, so both paths train alike.

Image datasets whose files are decoded one by one (image_folder, celeba) hand their splits over as
``FileImages``: a list of files, reordered and subset like a tensor, decoded only here. A split held as
a tensor (the torchvision arrays) is written to its array as it is.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from genlab.errors import UserError

log = logging.getLogger(__name__)

CHUNK = 256  # images decoded per worker task while an array is built


@dataclass(frozen=True)
class FileImages:
    """Images still in their files: ``files`` decoded to uint8 (C, H, W) = ``sample_shape`` (converted,
    central square crop when ``square_crop``, resized), indexed like the (N, C, H, W) tensor they make."""

    files: tuple[str, ...]
    sample_shape: tuple[int, int, int]
    square_crop: bool = False

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self.files), *self.sample_shape)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, idx: Tensor | slice) -> FileImages:
        picked = self.files[idx] if isinstance(idx, slice) else tuple(self.files[i] for i in idx.tolist())
        return FileImages(picked, self.sample_shape, self.square_crop)

    def decode(self, start: int, stop: int) -> Tensor:
        """Images start..stop-1 as uint8 (n, C, H, W)."""
        from genlab.data.decode import read_images

        c, h, w = self.sample_shape
        return read_images(list(self.files[start:stop]), c, (h, w), square_crop=self.square_crop)

    def checksum(self) -> str:
        """Names the array these files make: the files, their sizes and times, and how they are decoded."""
        h = hashlib.sha256(repr((self.sample_shape, self.square_crop)).encode())
        for f in self.files:
            st = os.stat(f)
            h.update(f"{f}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        return h.hexdigest()[:24]


class Chunks(Dataset):
    """Chunk i of a FileImages, for the workers that build an array; a file that cannot be read comes
    back as its message (a worker's exception would reach the user wrapped in a traceback)."""

    def __init__(self, images: FileImages) -> None:
        self.images = images

    def __len__(self) -> int:
        return -(-len(self.images) // CHUNK)

    def __getitem__(self, i: int) -> Tensor | str:
        try:
            return self.images.decode(i * CHUNK, min((i + 1) * CHUNK, len(self.images)))
        except UserError as e:
            return str(e)


def tensor_checksum(x: Tensor) -> str:
    h = hashlib.sha256(repr((tuple(x.shape), str(x.dtype))).encode())
    h.update(x.contiguous().numpy().tobytes())
    return h.hexdigest()[:24]


def to_array(x: Tensor | FileImages, folder: Path, workers: int) -> tuple[Tensor, Path]:
    """``x`` as a memory-mapped uint8 tensor (N, C, H, W) backed by ``folder/<checksum>.npy``, built once
    (decoded by ``workers`` processes, written beside and renamed, so a stopped build leaves no array
    that looks whole). The array's sha256 is written beside it (``<checksum>.sha256``) and checked before
    the array is used: a damaged, truncated or swapped file, or one of another shape, is built again.
    Returns the tensor and the file."""
    if isinstance(x, Tensor) and x.dtype != torch.uint8:
        raise UserError(f"data.in_memory=false keeps uint8 images in files; this dataset holds {x.dtype} values "
                        "(it is generated in memory): leave data.in_memory=true.")
    path = folder / f"{x.checksum() if isinstance(x, FileImages) else tensor_checksum(x)}.npy"
    if not array_is_whole(path, tuple(x.shape)):
        build_array(x, path, workers)
    # copy-on-write: a writable tensor for torch, pages read from the file as they are used
    return torch.from_numpy(np.load(path, mmap_mode="c")), path


def digest_file(path: Path) -> Path:
    return path.with_suffix(".sha256")


def array_is_whole(path: Path, shape: tuple[int, ...]) -> bool:
    """Whether ``path`` is the uint8 array of ``shape`` that genlab wrote (its header, then its recorded sha256).
    A file that fails is logged and will be rebuilt."""
    from genlab.files import file_digest

    if not path.is_file():
        return False
    why = None
    try:
        arr = np.load(path, mmap_mode="r")  # reads only the header; allow_pickle stays False
        if arr.dtype != np.uint8 or tuple(arr.shape) != shape:
            why = f"it holds {arr.dtype} {tuple(arr.shape)}, not uint8 {shape}"
        del arr
        if why is None:
            recorded = digest_file(path).read_text().strip() if digest_file(path).is_file() else None
            if recorded is None:
                why = "it has no recorded checksum"
            elif recorded != file_digest(path):
                why = "its content no longer has the checksum recorded when it was written"
    except (OSError, ValueError) as e:  # truncated header, not an .npy file
        why = f"it cannot be read ({e})"
    if why is not None:
        log.warning("The array cache %s is not used (%s): building it again", path, why)
    return why is None


def build_array(x: Tensor | FileImages, path: Path, workers: int) -> None:
    from genlab.files import file_digest, free_bytes, write_atomically, write_error, write_failure

    folder = path.parent
    tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp.npy")
    need = int(np.prod(x.shape)) + (4 << 10)  # uint8 values and the .npy header
    free = free_bytes(folder)
    if free is not None and free < need:
        raise write_failure(path, "not enough space left on the device", need, "paths.cache_dir")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=tuple(x.shape))
        if hasattr(os, "posix_fallocate"):
            # the memory map's file is sparse: writing its pages on a disk that fills meanwhile kills the process
            # (SIGBUS); its blocks reserved now make that a refused call here
            with open(tmp, "r+b") as f:
                os.posix_fallocate(f.fileno(), 0, os.path.getsize(tmp))
    except OSError as e:
        tmp.unlink(missing_ok=True)
        failed = write_error(path, e, "paths.cache_dir")
        if failed is not None:
            raise failed from None
        raise UserError(f"data.array_cache={folder}: cannot write the array of the data there ({e.strerror}); "
                        "give a writable folder.") from None
    try:
        if isinstance(x, Tensor):
            out[:] = x.numpy()
        else:
            pos = 0
            for chunk in DataLoader(Chunks(x), batch_size=None, num_workers=workers):
                if isinstance(chunk, str):
                    raise UserError(chunk)
                out[pos : pos + len(chunk)] = chunk.numpy()
                pos += len(chunk)
        out.flush()
        del out
        digest = file_digest(tmp)
        # the digest first: an array beside a stale digest is rebuilt, never trusted
        write_atomically(digest_file(path), lambda f: f.write(digest.encode()), option="paths.cache_dir")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


class ArrayBatches(Dataset):
    """Batch ``idx`` of a split: x read from its array file (opened in each worker, so nothing large is
    sent to them), the small per-sample tensors (labels, factors) indexed in memory."""

    def __init__(self, path: Path, others: dict[str, Tensor]) -> None:
        self.path, self.others = path, others
        self.x: np.ndarray | None = None

    def __getitem__(self, idx: Tensor) -> dict[str, Tensor]:
        if self.x is None:
            self.x = np.load(self.path, mmap_mode="r")
        rows = np.ascontiguousarray(self.x[idx.numpy()])  # (n, C, H, W) uint8, read from the file
        return {"x": torch.from_numpy(rows), **{k: v[idx] for k, v in self.others.items()}}


class ArrayStream:
    """The batches of a list of index batches, read by a DataLoader's workers (the ``source`` of a
    TensorLoader under data.in_memory=false). One DataLoader serves every pass, its workers kept
    between passes; it is its own sampler, yielding the index batches of the current pass. The loader
    draws its workers' seeds from a generator of its own: the run's random stream (noise, binarisation)
    stays the in-memory path's."""

    def __init__(self, path: Path, others: dict[str, Tensor], workers: int) -> None:
        self.batches: list[Tensor] = []
        self.loader = DataLoader(ArrayBatches(path, others), batch_size=None, sampler=self, num_workers=workers,
                                 pin_memory=torch.cuda.is_available(), persistent_workers=workers > 0,
                                 prefetch_factor=4 if workers else None, generator=torch.Generator().manual_seed(0))

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Iterator[Tensor]:  # the sampler: read in the main process at each pass
        return iter(self.batches)

    def __call__(self, batches: Iterable[Tensor]) -> Iterator[dict[str, Tensor]]:
        self.batches = list(batches)
        if not self.batches:
            return iter(())
        return iter(self.loader)
