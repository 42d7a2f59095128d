"""Helpers shared by the evaluation and picture callbacks."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytorch_lightning as pl
import torch
from torch import Tensor

from genlab.data.base import Split, TensorDataModule


# ---- shared helpers ---------------------------------------------------------------------
def datamodule(trainer: pl.Trainer) -> TensorDataModule | None:
    """The trainer's datamodule when it is a loaded TensorDataModule, on global rank 0 only."""
    dm = trainer.datamodule
    if trainer.global_rank != 0 or not isinstance(dm, TensorDataModule) or not dm.splits:
        return None
    return dm


@contextmanager
def eval_mode(module: pl.LightningModule) -> Iterator[None]:
    """Eval mode and no gradients for the block; the previous mode comes back afterwards."""
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        module.train(was_training)


def map_batches(
    fn: Callable[..., Tensor], x: Tensor, device: torch.device, batch_size: int, y: Tensor | None = None
) -> Tensor:
    """fn over x (N, *shape) in batches on device, inputs scaled to float; outputs (N, ...) on CPU.

    With labels y (N,), each batch's labels are passed too, as ``fn(x_batch, y=y_batch)``.
    """
    outs = []
    for i in range(0, x.shape[0], batch_size):
        xb = TensorDataModule.scale(x[i : i + batch_size].to(device))
        out = fn(xb) if y is None else fn(xb, y=y[i : i + batch_size].to(device))
        outs.append(out.float().cpu())
    return torch.cat(outs)


def pick(split: Split, n: int, seed: int = 0) -> Split:
    """A fixed random subset of n samples: splits may be stored sorted by class."""
    idx = torch.randperm(len(split), generator=torch.Generator().manual_seed(seed))[:n]
    return split.subset(idx.sort().values)
