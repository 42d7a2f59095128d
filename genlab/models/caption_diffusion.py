"""A small DALLE-2 (the lectures' last model): a diffusion model conditioned on the frozen CLIP text embedding
of a caption. DALLE-2 has three parts: CLIP's text encoder, a prior from the text embedding to an image
embedding, and a diffusion decoder that starts from noise x_T and steps x_{t−1} = f(x_t, m) towards an
image, depending on the embedding m. Here m is the text embedding itself (as GLIDE and unCLIP's ablation
without a prior do): with captions made from class words, the text embedding already carries all the
image-level information a prior would add.

Training pairs each image with one of its class's training captions (the templates CLIP trained on), embeds
it with the frozen CLIP run and drops it to the zero vector with probability ``label_dropout``, so one
network predicts with and without a caption; sampling guides with ε̃ = ε_u + s(ε_c − ε_u). Asked for a class
(the evaluator's per-class grids and its sample class accuracy), the model draws a caption of a held-out
template — a sentence the whole pipeline never trained on; asked for free text (``genlab-sample --prompt``),
it embeds the text.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor

from genlab.capabilities import CanEmbedText, CanSampleFromText, FrozenRun
from genlab.data.base import DataInfo
from genlab.errors import UserError
from genlab.models.diffusion import ConditionalDDPM


class CaptionTable:
    """Caption embeddings grouped by class, to draw one of class y's captions per label: vectors (N, D)
    and classes (N,) sorted by class, with the first row and the count of each class."""

    def __init__(self, vectors: Tensor, classes: Tensor, num_classes: int) -> None:
        order = torch.argsort(classes, stable=True)
        self.vectors, self.classes = vectors[order], classes[order]
        self.count = torch.bincount(self.classes, minlength=num_classes)
        self.first = torch.cumsum(self.count, 0) - self.count


class CaptionDDPM(ConditionalDDPM):
    """DDPM (pixel space, the U-Net) conditioned on the CLIP text embedding of a caption, with classifier-free
    guidance. ``clip``: the tested model of a finished CLIP run on the same data, frozen (the config gives the
    run's folder and the recipe loads it). ``label_dropout``: the
    share of training captions dropped to "no caption"; ``guidance_scale`` s. ``sample(n, y)``: y classes
    (n,) give held-out captions of those classes, y vectors (n, D) condition directly; ``sample_texts``
    samples for free captions. The likelihood bound is −log p(x | a held-out caption of x's class)."""

    capabilities = ConditionalDDPM.capabilities | {CanSampleFromText}
    frozen_runs: ClassVar[dict[str, FrozenRun]] = {
        "clip": FrozenRun("CLIP", can=(CanEmbedText,), same_data=("shape", "num_classes"),
                          how="genlab-train experiment=mnist_clip")}  # the captions name the CLIP run's classes

    def __init__(self, *, clip: Any, data_info: DataInfo, **kwargs: Any) -> None:
        with torch.no_grad():  # the caption tables: CLIP is frozen, so its embeddings are fixed
            train_vectors, train_classes = clip.training_captions()
            test_vectors, test_classes = clip.held_out_captions()
        self.cond_dim = int(train_vectors.shape[1])  # set before the net is built (net_conditioning)
        super().__init__(data_info=data_info, **kwargs)
        self.clip = clip.requires_grad_(False).eval()
        n = self.num_classes
        for name, table in (("train", CaptionTable(train_vectors, train_classes, n)),
                            ("test", CaptionTable(test_vectors, test_classes, n))):
            if bool((table.count == 0).any()):
                raise UserError(f"the CLIP run's {name} captions leave some classes without a caption")
            # from the CLIP run at build time: buffers that move with the model, not saved
            for field in ("vectors", "first", "count"):
                self.register_buffer(f"{name}_{field}", getattr(table, field), persistent=False)

    def train(self, mode: bool = True) -> CaptionDDPM:
        super().train(mode)
        self.clip.eval()  # frozen: its dropout stays off
        return self

    # ---- conditions --------------------------------------------------------------------------------------
    def captions(self, y: Tensor, split: str) -> Tensor:
        """(B, D) embeddings of one ``split`` caption of each label's class, drawn at random."""
        y = y.long().to(self.device)
        first, count = getattr(self, f"{split}_first")[y], getattr(self, f"{split}_count")[y]
        idx = first + (torch.rand(y.shape, device=y.device) * count).long().clamp(max=count - 1)
        return getattr(self, f"{split}_vectors")[idx]

    def condition(self, n: int, y: Tensor | None) -> Tensor:
        if y is not None and y.is_floating_point():  # condition vectors given as they are
            if tuple(y.shape) != (n, self.cond_dim):
                raise ValueError(f"{n} samples but condition vectors of shape {tuple(y.shape)}")
            return y.to(self.device)
        return self.captions(super().condition(n, y), "test")

    def train_labels(self, y: Tensor | None) -> Tensor:
        if y is None:
            raise UserError("the caption-conditioned diffusion needs labelled batches to caption (batch['y'])")
        return self.dropped(self.captions(y, "train"))

    def bound_labels(self, y: Tensor | None) -> Tensor | None:
        return None if y is None else self.captions(y, "test")

    # ---- sampling from text ----------------------------------------------------------------------------------
    @torch.no_grad()
    def sample_texts(self, texts: Sequence[str], n: int, steps: int | None = None) -> Tensor:
        """n samples for each caption, caption by caption: (len(texts)·n, *shape)."""
        if not texts:
            raise ValueError("no captions to sample for")
        vectors = self.clip.embed_texts(list(texts)).float()  # (k, D)
        return self.sample(len(texts) * n, vectors.repeat_interleave(n, 0), steps)

    def unknown_words(self, text: str) -> list[str]:
        """The words of ``text`` the CLIP run never saw in a caption (they read as <unk>)."""
        return self.clip.unknown_words(text)
