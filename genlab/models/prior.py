"""DALLE-2's prior (Ramesh et al. 2022), the second of its three parts: from the CLIP text embedding of a caption
to a CLIP image embedding of an image it describes, both from a finished, frozen CLIP run on captioned data
(``model.clip``; genlab-train experiment=captioned_clip). A caption that leaves attributes out describes many
images, so the map is one-to-many: the diffusion prior (diffusion_prior) draws an image embedding for the
caption; the regression prior (regression_prior) predicts one, the direction closest on average.

Training pairs each image with a caption drawn from its attributes as CLIP's training draws them; the image
embedding comes from CLIP's image side. Neither model samples images: the unCLIP decoder turns their
embeddings into pictures. Both are scored by ``genlab.metrics.prior``: the cosine of the predicted to the true
image embedding on test captions, against the text embedding itself.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from genlab.capabilities import (
    CanEmbed,
    CanEmbedText,
    CanPredictImageEmbedding,
    CanPromptAttributes,
    FrozenRun,
    PictureRequest,
    PictureSpec,
)
from genlab.data.base import Batch, DataInfo
from genlab.errors import IncompatibleError
from genlab.models.base import GenerativeModel, OptimizerFactory
from genlab.models.diffusion import GUIDANCE_SCALES, ConditionalDDPM

#: the frozen CLIP run both priors map within: an image side, a text side and the data's captions
CLIP_RUN = FrozenRun("CLIP on captioned data", can=(CanEmbed, CanEmbedText, CanPromptAttributes),
                     same_data=("shape", "attributes", "holdout"), how="genlab-train experiment=captioned_clip")


def check_captioned(info: DataInfo, who: str) -> None:
    """IncompatibleError unless ``info`` describes data whose samples have attributes to caption."""
    if not info.attributes:
        raise IncompatibleError(f"it maps captions of attributes to images, and '{info.name}' has none to caption: "
                                "pick captioned data (data=captioned_shapes)", who)


class CaptionPairs:
    """The training pairs of a prior: a caption drawn for each image of a batch, embedded by the frozen CLIP's
    text side (B, D), and the image's embedding by its image side (B, D)."""

    def __init__(self, clip: Any) -> None:
        self.clip = clip

    @torch.no_grad()
    def __call__(self, batch: Batch) -> tuple[Tensor, Tensor]:
        values = self.clip.attribute_values(batch["factors"])  # (B, A)
        return self.clip.draw_captions(values).float(), self.clip.embed(batch["x"]).float()


class DiffusionPrior(ConditionalDDPM):
    """DALLE-2's diffusion prior: a DDPM over CLIP image embeddings (unit vectors scaled by √D, so that a
    dimension has unit variance on average) with the MLP denoiser, conditioned on the caption's text embedding
    (B, D) and trained with it dropped to the zero vector with probability ``label_dropout`` for classifier-free
    guidance at ``guidance_scale``. ``image_embeddings(texts)`` runs the configured sampler and returns unit
    vectors. ``clip``: the tested model of a finished CLIP run on the same captioned data (the recipe loads it)."""

    capabilities = frozenset({CanPredictImageEmbedding})
    frozen_runs: ClassVar[dict[str, FrozenRun]] = {"clip": CLIP_RUN}
    # DDPM's images, bound and pictures are of the data it diffuses: here embeddings, which no picture shows and
    # whose density is no likelihood of images
    sample = None  # type: ignore[assignment]
    likelihood_bounds = None  # type: ignore[assignment]

    def __init__(self, *, clip: Any, data_info: DataInfo, **kwargs: Any) -> None:
        check_captioned(data_info, type(self).__name__)
        clip = clip.requires_grad_(False).eval()
        with torch.no_grad():
            # the condition (a text embedding) and the diffused image embedding share CLIP's width D
            self.cond_dim = int(clip.embed(torch.zeros(1, *data_info.shape)).shape[1])  # before the net is built
        super().__init__(data_info=data_info, **kwargs)
        self.clip = clip
        self.pairs = CaptionPairs(self.clip)

    # ---- the space: CLIP image embeddings; the condition: CLIP text embeddings ---------------------------
    @property
    def image_space(self) -> bool:
        return False

    def space_shape(self) -> tuple[int, ...]:
        return (self.cond_dim,)

    def to_space(self, e: Tensor) -> Tensor:
        """Unit image embeddings (B, D) -> x_0 (B, D) scaled by √D."""
        return e * math.sqrt(self.cond_dim)

    def from_space(self, z: Tensor) -> Tensor:
        """x_0 (B, D) -> unit image embeddings (B, D)."""
        return F.normalize(z, dim=1)

    def train(self, mode: bool = True) -> DiffusionPrior:
        super().train(mode)
        self.clip.eval()  # frozen: its dropout and batch norm stay in evaluation mode
        return self

    def batch_pair(self, batch: Batch, stage: str) -> tuple[Tensor, Tensor]:
        """x_0: the batch's image embeddings (B, D) scaled; the condition: a caption of each drawn and embedded,
        in training dropped to "no caption" with probability ``label_dropout``."""
        texts, images = self.pairs(batch)
        return self.to_space(images), self.dropped(texts) if stage == "train" else texts

    def pictures(self, request: PictureRequest) -> list[PictureSpec]:
        return []

    # ---- CanPredictImageEmbedding ---------------------------------------------------------------------------
    @torch.no_grad()
    def image_embeddings(self, texts: Tensor, scale: float | None = None, steps: int | None = None) -> Tensor:
        z, _ = self.reverse(self.prior_noise(len(texts)), texts.float().to(self.device), steps,
                            denoiser=self.guided(scale))
        return self.from_space(z)

    def guidance_scales(self) -> tuple[float, ...]:
        return GUIDANCE_SCALES

    def frozen_clip(self) -> Any:
        return self.clip


class RegressionPrior(GenerativeModel):
    """The deterministic baseline of a prior: an MLP from the caption's text embedding (B, D) to a unit image
    embedding (B, D), trained to maximise their cosine (loss 1 − cos). A caption that describes many images gets
    the normalised mean direction of theirs. ``hidden``: the MLP's widths; ``clip`` as DiffusionPrior's."""

    capabilities = frozenset({CanPredictImageEmbedding})
    frozen_runs: ClassVar[dict[str, FrozenRun]] = {"clip": CLIP_RUN}

    def __init__(self, *, clip: Any, data_info: DataInfo, hidden: list[int], dropout: float,
                 optimizer: OptimizerFactory | None = None, scheduler: Callable[..., Any] | None = None,
                 compile: bool = False, updates_per_batch: int = 1) -> None:
        check_captioned(data_info, type(self).__name__)
        super().__init__(data_info=data_info, optimizer=optimizer, scheduler=scheduler, compile=compile,
                         updates_per_batch=updates_per_batch)
        clip = clip.requires_grad_(False).eval()
        with torch.no_grad():
            dim = int(clip.embed(torch.zeros(1, *data_info.shape)).shape[1])
        sizes = [dim, *hidden]
        layers: list[nn.Module] = []
        for a, b in zip(sizes[:-1], sizes[1:]):
            layers += [nn.Linear(a, b), nn.SiLU(), nn.Dropout(dropout)]
        self.net = nn.Sequential(*layers, nn.Linear(sizes[-1], dim))
        self.clip = clip
        self.pairs = CaptionPairs(self.clip)

    def train(self, mode: bool = True) -> RegressionPrior:
        super().train(mode)
        self.clip.eval()
        return self

    def loss_terms(self, batch: Batch, stage: str) -> dict[str, Tensor]:
        texts, images = self.pairs(batch)
        cos = (F.normalize(self.net(texts), dim=1) * images).sum(1)  # (B,)
        return {"loss": 1 - cos.mean(), "cosine": cos.mean().detach()}

    @torch.no_grad()
    def image_embeddings(self, texts: Tensor, scale: float | None = None, steps: int | None = None) -> Tensor:
        return F.normalize(self.net(texts.float().to(self.device)), dim=1)

    def guidance_scales(self) -> tuple[float, ...]:
        return ()

    def frozen_clip(self) -> Any:
        return self.clip
