"""Contrastive embeddings: the InfoNCE loss every contrastive model shares, and SimCLR.

The lectures' self-supervised cost: disturb an image x into x̃, and train the embedding h so that h(x̃ᵢ)
is close to h(xᵢ) and far from the other images' embeddings,

    ℓᵢ = −log exp(sim(zᵢ, zᵢ⁺)/τ) / Σ_{j≠i} exp(sim(zᵢ, zⱼ)/τ),

with sim the cosine (or the dot product) and τ a temperature (NT-Xent, Chen et al. 2020). The softmax
runs over the batch; for the batches of ~2,000 the notes mention, the (2N × 2N) similarity matrix and
its gradient are what fill memory, so ``info_nce`` can work through the rows in chunks and recompute
each chunk's similarities in the backward pass (activation checkpointing): memory O(chunk · 2N)
instead of O(4N²), the same loss and gradients.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from genlab.capabilities import CanDisturb, CanEmbed, CanEncode, Needs
from genlab.data.augment import Disturbances, views
from genlab.data.base import Batch, DataInfo
from genlab.errors import UserError
from genlab.models.base import GenerativeModel, OptimizerFactory
from genlab.nets.autoencoder import EncoderDecoder

NetFactory = Callable[..., EncoderDecoder]  # a genlab.nets.autoencoder builder: its encoder is used


def info_nce(q: Tensor, k: Tensor, q_ids: Tensor | None, k_ids: Tensor | None, temperature: Tensor | float,
             self_index: Tensor | None = None, chunk: int | None = None, positive: Tensor | None = None) -> Tensor:
    """The mean over queries of −log Σ_{j∈P(i)} exp(qᵢ·kⱼ/τ) / Σ_{j} exp(qᵢ·kⱼ/τ).

    q (N, D) queries and k (M, D) keys, already normalised for cosine similarity. The positives P(i) of
    query i are the keys with k_ids == q_ids[i] (one for SimCLR's two views; every identical caption for
    CLIP), or, with ``positive`` (N, M) bool, the keys it marks (a caption naming some attributes: every image
    that has them). ``self_index`` (N,): the key that is query i itself, left out of both sums (SimCLR's
    j ≠ i); None: none is. ``chunk``: queries per chunk, each chunk's (chunk, M) logits recomputed in the
    backward pass; None: all at once. Returns a scalar.
    """
    if positive is None:
        positive = q_ids[:, None] == k_ids[None, :]  # (N, M)
    n = q.shape[0]
    if chunk is None or chunk >= n:
        return _rows(q, k, positive, temperature, self_index).mean()
    total = q.new_zeros(())
    for s in range(0, n, chunk):
        sl = slice(s, s + chunk)
        own = None if self_index is None else self_index[sl]
        total = total + checkpoint(_rows, q[sl], k, positive[sl], temperature, own, use_reentrant=False).sum()
    return total / n


def _rows(q: Tensor, k: Tensor, positive: Tensor, temperature: Tensor | float, self_index: Tensor | None) -> Tensor:
    """The loss (c,) of c queries q (c, D) against all keys k (M, D); ``positive`` (c, M)."""
    logits = q @ k.T / temperature  # (c, M)
    if self_index is not None:
        is_self = torch.zeros_like(positive).scatter_(1, self_index[:, None], True)
        logits = logits.masked_fill(is_self, float("-inf"))
        positive = positive & ~is_self
    return torch.logsumexp(logits, 1) - torch.logsumexp(logits.masked_fill(~positive, float("-inf")), 1)


def nt_xent(z1: Tensor, z2: Tensor, temperature: Tensor | float, chunk: int | None = None,
            gather: Callable[[Tensor], Tensor] | None = None, rank: int = 0) -> Tensor:
    """SimCLR's loss over N pairs of views z1, z2 (N, D): every one of the 2N views is a query whose
    positive is the other view of its image and whose negatives are the other 2N − 2 views.

    Under data parallelism ``gather`` (z (2N, D) -> every process's z in rank order, (world·2N, D), with
    gradients) makes the negatives those of the global batch: this process's 2N views (it is ``rank``) are
    the queries, every process's views the keys; the mean over processes is then the one-process loss of
    the global batch."""
    n = z1.shape[0]
    z = torch.cat([z1, z2])  # (2N, D)
    ids = torch.arange(n, device=z.device).repeat(2)  # view i and view i + N are of image i
    own = torch.arange(2 * n, device=z.device)
    if gather is None:
        return info_nce(z, z, ids, ids, temperature, own, chunk)
    keys = gather(z)  # (world·2N, D)
    world = keys.shape[0] // (2 * n)
    key_ids = torch.cat([ids + r * n for r in range(world)])  # image ids in the global batch
    return info_nce(z, keys, ids + rank * n, key_ids, temperature, own + rank * 2 * n, chunk)


class Projection(nn.Sequential):
    """The projection head g: h (B, rep_dim) -> z (B, out) through one hidden layer (Linear, BN, ReLU):
    the loss acts on z, and the representation h keeps what the disturbances would otherwise erase."""

    def __init__(self, rep_dim: int, hidden: int, out: int) -> None:
        super().__init__(nn.Linear(rep_dim, hidden), nn.BatchNorm1d(hidden), nn.ReLU(), nn.Linear(hidden, out))


class Temperature(nn.Module):
    """τ, fixed or learned (as log τ, so it stays positive); ``max_inverse`` caps 1/τ as CLIP does."""

    def __init__(self, value: float, learn: bool, max_inverse: float = 100.0) -> None:
        super().__init__()
        self.log_tau = nn.Parameter(torch.tensor(float(value)).log(), requires_grad=learn)
        self.min_log_tau = -torch.log(torch.tensor(max_inverse)).item()

    def forward(self) -> Tensor:
        return self.log_tau.clamp(min=self.min_log_tau).exp()


class ContrastiveModel(GenerativeModel):
    """What SimCLR and CLIP share: an image encoder from a ``genlab.nets.autoencoder`` builder (its
    representation h is what ``encode`` returns, so the probes, k-NN, novelty and code pictures apply), a
    projection head into the compared space, the similarity and the temperature. A lower val/loss is a
    better embedding at a fixed batch size, so checkpoints are ranked by it."""

    capabilities = frozenset({CanEncode, CanEmbed})

    def __init__(
        self, *, data_info: DataInfo, net: NetFactory, rep_dim: int = 128, proj_hidden: int = 256,
        proj_dim: int = 64, similarity: str = "cosine", temperature: float = 0.5, learn_temperature: bool = False,
        loss_chunk: int | None = None, optimizer: OptimizerFactory | None = None,
        scheduler: Callable[..., Any] | None = None, compile: bool = False, updates_per_batch: int = 1,
    ) -> None:
        super().__init__(data_info=data_info, optimizer=optimizer, scheduler=scheduler, builders=[net], compile=compile,
                         updates_per_batch=updates_per_batch)
        if similarity not in ("cosine", "dot"):
            raise UserError(f"model.similarity={similarity!r} is not one of cosine, dot")
        self.latent_dim = rep_dim
        self.encoder = net(in_shape=data_info.shape, enc_out=rep_dim, latent_dim=rep_dim).encoder
        self.head = Projection(rep_dim, proj_hidden, proj_dim)
        self.similarity, self.loss_chunk = similarity, loss_chunk
        self.temperature = Temperature(temperature, learn_temperature)

    def encode(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        return self.encoder(x)  # (B, rep_dim)

    def project(self, z: Tensor) -> Tensor:
        """Into the compared space: unit vectors for cosine similarity, as they are for the dot product."""
        return F.normalize(z, dim=1) if self.similarity == "cosine" else z

    def embed(self, x: Tensor) -> Tensor:
        """x (B, *shape) -> (B, proj_dim) unit vectors: the projected representation, normalised (also for
        the dot product, so alignment and uniformity compare like with like)."""
        return F.normalize(self.head(self.encode(x)), dim=1)

    def positive_pairs(self, x: Tensor, y: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """What each model counts as a related pair (``CanEmbed``): two views (SimCLR), an image and its caption
        (CLIP)."""
        raise NotImplementedError


class SimCLR(ContrastiveModel):
    """SimCLR: two disturbed views of every image (``views``, drawn by the datamodule), one encoder and
    projection head for both, NT-Xent over the batch."""

    capabilities = ContrastiveModel.capabilities | {CanDisturb}

    needs: ClassVar[Needs] = Needs(image=True, views=2, batch=2)

    def __init__(self, *, views: Disturbances, gather_negatives: bool = True, **kwargs: Any) -> None:
        """``views``: the disturbances (genlab.data.augment); ``gather_negatives``: under data parallelism,
        contrast with every process's views (the global batch) rather than this process's; ``kwargs``: see
        ContrastiveModel."""
        super().__init__(**kwargs)
        self.views = views.fit(self.data_info.shape)
        self.gather_negatives = gather_negatives

    def disturb(self, x: Tensor) -> Tensor:
        return self.views(x)

    def positive_pairs(self, x: Tensor, y: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self.embed(self.disturb(x)), self.embed(self.disturb(x))

    def loss_terms(self, batch: Batch, stage: str) -> dict[str, Tensor]:
        v = batch.get("views")  # (2, B, C, H, W), drawn by the datamodule on the device
        if v is None:  # batches made outside a datamodule
            v = views(self.views, batch["x"])
        n = v.shape[1]
        z = self.project(self.head(self.encode(v.flatten(0, 1))))  # (2B, proj_dim): both views in one pass
        z1, z2 = z[:n], z[n:]
        gather, rank = None, 0
        if self.gather_negatives and self.attached and self.trainer.world_size > 1:
            # the global batch's views are the negatives, with gradients flowing back to each process
            gather, rank = (lambda t: self.all_gather(t, sync_grads=True).flatten(0, 1)), self.trainer.global_rank
        loss = nt_xent(z1, z2, self.temperature(), self.loss_chunk, gather, rank)
        with torch.no_grad():  # how close the positives are: the cosine of the two views' embeddings
            agree = F.cosine_similarity(z1, z2, dim=1).mean()
        return {"positive_cosine": agree, "loss": loss}
