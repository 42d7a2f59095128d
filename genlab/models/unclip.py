"""DALLE-2's decoder (unCLIP, Ramesh et al. 2022), the third of its three parts: pixel-space diffusion conditioned
on a CLIP *image* embedding. With the prior (genlab/models/prior.py) in front of it, a caption becomes an image:
text -> CLIP text embedding -> prior -> image embedding -> decoder -> image.

Training conditions each image on its own embedding by the frozen CLIP run's image side (``model.clip``), dropped
to "no embedding" (the zero vector) with probability ``label_dropout`` for classifier-free guidance. Sampling
needs an image embedding: given directly (variations of an image: its embedding), from a caption through the
frozen prior run (``model.prior``), or — without a prior, the ablation of the DALLE-2 paper — the caption's text
embedding in its place. Asked for a class (the evaluator's grids, sample class accuracy), the caption is a
held-out one naming that class's shape.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from genlab import figures
from genlab.capabilities import (
    Budget,
    CanBoundLikelihood,
    CanPredictImageEmbedding,
    CanSample,
    CanSampleFromText,
    CanVary,
    FrozenRun,
    LikelihoodBound,
    PictureRequest,
    PictureSpec,
)
from genlab.data.base import Batch, DataInfo
from genlab.errors import UserError
from genlab.models.diffusion import ConditionalDDPM
from genlab.models.prior import CLIP_RUN, check_captioned

VARIATIONS = 6  # samples per image in variations.png
INTERPOLATION_STEPS = 8  # columns of interpolation.png, both ends included
#: the ends of caption_interpolation.png's rows
CAPTION_PAIRS = (("a large red square in the top left", "a small blue ellipse in the bottom right"),
                 ("a large green heart in the centre", "a large yellow heart in the centre"))


def slerp(a: Tensor, b: Tensor, steps: int) -> Tensor:
    """Spherical interpolation between unit vectors a and b (D,): (steps, D) unit vectors from a to b, evenly
    spaced in angle (the straight line where they are parallel)."""
    w = torch.linspace(0, 1, steps, device=a.device, dtype=a.dtype)[:, None]
    angle = torch.arccos((a @ b).clamp(-1, 1))
    if float(angle) < 1e-6:
        return F.normalize((1 - w) * a + w * b, dim=1)
    return (torch.sin((1 - w) * angle) * a + torch.sin(w * angle) * b) / torch.sin(angle)


class UnCLIPDecoder(ConditionalDDPM):
    """DDPM over images (the U-Net) conditioned on a CLIP image embedding (B, D), with classifier-free guidance.
    ``clip``: the tested model of a finished CLIP run on the same captioned data; ``prior``: that of a finished
    prior run on the same CLIP run, or None (captions then condition through their text embedding).
    ``sample(n, y)``: y vectors (n, D) are image embeddings; y classes (n,) (or None: random classes) give
    held-out captions of those shapes, through the prior. The likelihood bound is −log p(x | x's embedding)."""

    capabilities = frozenset({CanSample, CanSampleFromText, CanVary, CanBoundLikelihood})
    frozen_runs: ClassVar[dict[str, FrozenRun]] = {
        "clip": CLIP_RUN,
        "prior": FrozenRun("prior", can=(CanPredictImageEmbedding,), same_data=("shape", "attributes", "holdout"),
                           how="genlab-train model=diffusion_prior model.clip=<the same CLIP run>", optional=True)}

    def __init__(self, *, clip: Any, prior: Any | None, data_info: DataInfo, **kwargs: Any) -> None:
        check_captioned(data_info, type(self).__name__)
        clip = clip.requires_grad_(False).eval()
        with torch.no_grad():
            self.cond_dim = int(clip.embed_texts(["a heart"]).shape[1])  # set before the net is built
        super().__init__(data_info=data_info, **kwargs)
        self.clip = clip
        self.prior: Any | None = None
        self.use_prior(prior)

    def use_prior(self, prior: Any | None) -> None:
        """Sample from captions through ``prior`` (a finished prior run's model on this decoder's CLIP run), or
        with None through the text embeddings themselves. UserError for a prior of another CLIP run."""
        if prior is not None:
            probe = ["a small red heart in the centre"]
            with torch.no_grad():
                mine, theirs = self.clip.embed_texts(probe), prior.frozen_clip().to(self.device).embed_texts(probe)
            if theirs.shape != mine.shape or not torch.allclose(theirs, mine, atol=1e-5):
                raise UserError("model.prior was trained on the embeddings of another CLIP run than model.clip: give "
                                "the prior run made with model.clip=<this CLIP run>.")
            prior = prior.requires_grad_(False).eval().to(self.device)
        self.prior = prior

    def train(self, mode: bool = True) -> UnCLIPDecoder:
        super().train(mode)
        self.clip.eval()  # frozen components stay in evaluation mode
        if self.prior is not None:
            self.prior.eval()
        return self

    # ---- conditions -------------------------------------------------------------------------------------------
    @torch.no_grad()
    def embed_images(self, x: Tensor) -> Tensor:
        """Images (B, *shape) -> their CLIP image embeddings (B, D)."""
        return self.clip.embed(x).float()

    @torch.no_grad()
    def through_prior(self, texts: Tensor) -> Tensor:
        """Caption embeddings (n, D) -> the image embeddings the decoder is conditioned on: the prior's draw, or
        without a prior the text embeddings themselves."""
        return texts.float() if self.prior is None else self.prior.image_embeddings(texts).float()

    def batch_pair(self, batch: Batch, stage: str) -> tuple[Tensor, Tensor]:
        cond = self.embed_images(batch["x"])
        return self.to_space(batch["x"]), self.dropped(cond) if stage == "train" else cond

    def condition(self, n: int, y: Tensor | None) -> Tensor:
        if y is not None and y.is_floating_point():  # image embeddings given as they are
            if tuple(y.shape) != (n, self.cond_dim):
                raise ValueError(f"{n} samples but embeddings of shape {tuple(y.shape)}")
            return y.to(self.device)
        classes = super().condition(n, y)
        with torch.no_grad():
            return self.through_prior(self.clip.caption_embeddings(classes))

    def bound_labels(self, y: Tensor | None) -> Tensor | None:
        return y if y is not None and y.is_floating_point() else None

    def likelihood_bounds(self, budget: Budget) -> list[LikelihoodBound]:
        """−log p(x | x's CLIP image embedding), in bits per dimension (the discretised decoder)."""
        scale = 1.0 / (self.data_info.dim * math.log(2))

        def per_sample(x: Tensor, y: Tensor | None) -> Tensor:
            return scale * self.nll_bound(x, self.embed_images(x), budget.samples, budget.chunk)

        return [LikelihoodBound("bpd", "bits/dim", per_sample,
                                "variational bound of −log p(x | its CLIP image embedding), discretised decoder")]

    # ---- from text --------------------------------------------------------------------------------------------
    @torch.no_grad()
    def sample_texts(self, texts: Sequence[str], n: int, steps: int | None = None) -> Tensor:
        """n samples for each caption, caption by caption: (len(texts)·n, *shape); each sample from its own draw
        of the prior."""
        if not texts:
            raise ValueError("no captions to sample for")
        vectors = self.clip.embed_texts(list(texts)).float().repeat_interleave(n, 0)  # (k·n, D)
        return self.sample(len(vectors), self.through_prior(vectors), steps)

    def unknown_words(self, text: str) -> list[str]:
        return self.clip.unknown_words(text)

    @torch.no_grad()
    def variations(self, x: Tensor, n: int, steps: int | None = None) -> Tensor:
        """n samples sharing each image's CLIP embedding: (len(x)·n, *shape), image by image."""
        return self.sample(len(x) * n, self.embed_images(x).repeat_interleave(n, 0), steps)

    @torch.no_grad()
    def interpolate(self, a: Tensor, b: Tensor, steps: int, noise_seed: int = 0) -> Tensor:
        """Decodings of ``steps`` embeddings spherically interpolated from a to b (unit (D,)): (steps, *shape),
        every one from the same noise, so only the embedding changes."""
        path = slerp(a.float().to(self.device), b.float().to(self.device), steps)
        generator = torch.Generator(device=self.device).manual_seed(noise_seed)
        x_t = self.prior_noise(1, generator).expand(steps, *self.space_shape()).contiguous()
        devices = [self.device.index or 0] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(noise_seed)
            x, _ = self.reverse(x_t, path)
        return self.from_space(x)

    def pictures(self, request: PictureRequest) -> list[PictureSpec]:
        """The trajectory and guidance sweep (``ConditionalDDPM.pictures``) and at the test's end
        ``variations.png`` (test images, left, and VARIATIONS samples from each one's embedding) and
        ``interpolation.png`` (rows: two test images' embeddings, spherically interpolated, decoded from the
        same noise), ``caption_interpolation.png`` (the same between the image embeddings of CAPTION_PAIRS)."""
        out = super().pictures(request)
        if request.moment != "test":
            return out

        def variations() -> list[figures.Grid]:
            x = request.pick("test", 4).to(self.device)
            made = self.variations(x, VARIATIONS).view(len(x), VARIATIONS, *x.shape[1:])
            images = torch.cat([x[:, None].float(), made.float()], 1).flatten(0, 1).cpu()
            title = "variations: a test image (left) and samples from its CLIP image embedding"
            return [figures.Grid(images, VARIATIONS + 1, (), title, ["image", *[""] * VARIATIONS], separators=(1,))]

        def interpolation() -> list[figures.Grid]:
            x = request.pick("test", 6).to(self.device)
            e = self.embed_images(x)
            rows = [self.interpolate(e[i], e[i + 1], INTERPOLATION_STEPS).float().cpu() for i in (0, 2, 4)]
            title = "between two test images' CLIP embeddings (spherical), each row from one noise"
            return [figures.Grid(torch.cat(rows), INTERPOLATION_STEPS, (), title)]

        def between_captions() -> list[figures.Grid]:
            pairs = CAPTION_PAIRS
            with torch.no_grad():
                ends = self.through_prior(self.clip.embed_texts([t for pair in pairs for t in pair]).float())
            rows = [self.interpolate(ends[2 * i], ends[2 * i + 1], INTERPOLATION_STEPS).float().cpu()
                    for i in range(len(pairs))]
            how = "through the prior" if self.prior is not None else "text embeddings, no prior"
            title = f"between two captions' image embeddings ({how}), each row from one noise"
            labels = [f"{a} → {b}" for a, b in pairs]
            return [figures.Grid(torch.cat(rows), INTERPOLATION_STEPS, labels, title)]

        return [*out, PictureSpec("test/variations", "variations.png", variations),
                PictureSpec("test/interpolation", "interpolation.png", interpolation),
                PictureSpec("test/caption_interpolation", "caption_interpolation.png", between_captions)]
