"""What a model can do and what it needs: the contract the evaluator, the pictures and train.py read.

A model opts into a capability by having its method; callers test ``isinstance(model, CanSample)``
and never a model's name. Every method that looks at data takes an optional ``y``: the labels
(B,) — or conditioning vectors (B, D) — that conditional models (``model.conditional``) use and the
others ignore.

What a model needs from the data is declared, not discovered: ``Needs`` on the model class (and
on its network builders, see ``genlab.nets.layers.needs``), checked against the dataset's
``DataInfo`` before anything is loaded.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from torch import Tensor

from genlab.errors import IncompatibleError, with_article

if TYPE_CHECKING:  # the figure type only; matplotlib is imported where a figure is drawn
    from matplotlib.figure import Figure

    from genlab.data.base import DataInfo


# ---- what a model can do ------------------------------------------------------------------
@runtime_checkable
class CanEncode(Protocol):
    def encode(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """x (B, *shape) -> code h (B, latent_dim); deterministic (the mean for stochastic encoders)."""
        ...


@runtime_checkable
class CanDecode(Protocol):
    def decode(self, h: Tensor, y: Tensor | None = None) -> Tensor:
        """code h (B, latent_dim) -> x̂ (B, *shape) in data space."""
        ...


@runtime_checkable
class CanReconstruct(Protocol):
    def reconstruct(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """x (B, *shape) -> x̂ (B, *shape) in data space."""
        ...


@runtime_checkable
class CanSample(Protocol):
    def sample(self, n: int, y: Tensor | None = None, steps: int | None = None) -> Tensor:
        """n new samples (n, *shape) in data space.

        y: the classes (n,) or conditioning vectors (n, D) of a conditional model, None for a free
        draw. steps: the step budget of an iterative sampler (Gibbs or diffusion steps); None is
        the model's own default, and one-shot samplers ignore it.
        """
        ...


@runtime_checkable
class CanSampleFromText(Protocol):
    """Samplers conditioned on a caption (the small DALLE-2: a diffusion model on a CLIP text embedding)."""

    def sample_texts(self, texts: Sequence[str], n: int, steps: int | None = None) -> Tensor:
        """n samples for each text, text by text: (len(texts)·n, *shape) in data space."""
        ...


@runtime_checkable
class CanTranslate(Protocol):
    def translate(self, x: Tensor, direction: str) -> Tensor:
        """x (B, *shape) from the source domain -> its translation (B, *shape); direction "a2b" or "b2a"."""
        ...


@dataclass(frozen=True)
class Budget:
    """How much work a Monte-Carlo likelihood estimate may do (the evaluator's settings)."""

    samples: int = 100  # draws per estimate: IWAE's k, AIS runs, diffusion time steps
    chunk: int = 50  # draws evaluated at once: the memory knob


@dataclass(frozen=True)
class LikelihoodBound:
    """One estimate or bound of −log p(x) that a model reports, named by the model itself.

    ``per_sample(x, y)`` gives it for a batch x (B, *shape) as (B,) values in ``unit`` — "nats"
    (per sample) or "bits/dim" — so the evaluator reports ``test/<name>`` as the test mean
    without knowing what kind of model made it.
    """

    name: str  # e.g. neg_elbo, iwae_nll, ais_nll, bpd
    unit: str  # "nats" or "bits/dim"
    per_sample: Callable[[Tensor, Tensor | None], Tensor]
    description: str = ""
    #: figures behind the estimate, reported beside it as test/<key>: (value, unit), e.g. AIS's log Z and its
    #: standard error
    extras: dict[str, tuple[float, str]] = field(default_factory=dict)


@runtime_checkable
class CanBoundLikelihood(Protocol):
    def likelihood_bounds(self, budget: Budget) -> list[LikelihoodBound]:
        """The bounds on −log p(x) this model reports, each computed within ``budget``."""
        ...


@runtime_checkable
class HasCodeKL(Protocol):
    """Stochastic encoders with a prior: how much information each code dimension carries."""

    def kl_per_dim(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """(B, latent_dim) KL(q(h_d|x) ‖ p(h_d)) per code dimension, in nats."""
        ...


@dataclass(frozen=True)
class Traversal:
    """One grid of a code traversal, with what the model knows its codes mean."""

    images: Tensor  # (rows·steps, *shape), row-major, in data space
    title: str  # what the columns sweep
    row_labels: tuple[str, ...] = ()  # what each row holds ("category 2")
    column_labels: tuple[str, ...] = ()  # the swept values, "" where unmarked


@runtime_checkable
class CanTraverseCodes(Protocol):
    """Generators with interpretable input codes (InfoGAN)."""

    def code_traversals(self, steps: int = 8) -> list[Traversal]:
        """One grid per code, each sweeping it along ``steps`` columns."""
        ...


@runtime_checkable
class CanShowFilters(Protocol):
    """Models with one weight vector per unit over the input (an RBM's rows of W): drawn as images."""

    def filters(self, n: int) -> Tensor:
        """The first n units' weights as images (≤ n, *shape), each scaled to [0, 1] on its own."""
        ...


@runtime_checkable
class CanRunChains(Protocol):
    """Models that sample by a Markov chain (an RBM's Gibbs sweeps): the chain can start from data."""

    def chain_frames(self, x: Tensor, sweeps: Sequence[int]) -> Tensor:
        """The chains' means after each number of ``sweeps`` (increasing), started from the data x
        (B, *shape): (len(sweeps), B, *shape); 0 sweeps is x itself."""
        ...


@runtime_checkable
class CanShowTrajectory(Protocol):
    """Models that sample by denoising step by step (diffusion): the way from noise to a sample."""

    def trajectory(self, n: int, frames: int) -> Tensor:
        """n samples' way from the start (pure noise) to the end (the samples), in data space at ``frames``
        evenly spaced points of the sampler's loop: (frames, n, *shape)."""
        ...


@runtime_checkable
class CanSweepGuidance(Protocol):
    """Conditional samplers with a guidance scale (classifier-free guidance): one noise, several scales."""

    def guidance_sweep(self, y: Tensor, scales: Sequence[float]) -> Tensor:
        """Samples for the classes y (n,) at each guidance scale, every scale from the same noise:
        (len(scales), n, *shape) in data space."""
        ...


@runtime_checkable
class CanEmbed(Protocol):
    """Models trained to place related inputs close together (contrastive embeddings): the space their
    loss acts on, and what they count as a related pair."""

    def embed(self, x: Tensor) -> Tensor:
        """x (B, *shape) -> unit vectors (B, D) in the space the contrastive loss compares."""
        ...

    def positive_pairs(self, x: Tensor, y: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Embeddings (B, D) and (B, D) of B positive pairs made from x: two disturbed views of each image,
        or an image and a caption of it (y: its labels)."""
        ...


@runtime_checkable
class CanDisturb(Protocol):
    """Models trained on disturbed views of their inputs (``Needs.views``): the datamodule draws the views
    with the model's disturbances, on the batch's device."""

    def disturb(self, x: Tensor) -> Tensor:
        """x (B, *shape) -> one randomly disturbed view (B, *shape), drawn independently per image."""
        ...


@runtime_checkable
class CanZeroShot(Protocol):
    """Models with a text side (CLIP): images are classified by comparing them with prompts for each class."""

    def held_out_captions(self) -> tuple[Tensor, Tensor]:
        """Every caption of the templates training never saw, embedded: (M, D) unit vectors and their
        classes (M,); a class's mean is its zero-shot prompt."""
        ...

    def caption_embeddings(self, y: Tensor) -> Tensor:
        """(B, D) unit vectors of one held-out caption for each label of y (B,), drawn at random."""
        ...


@runtime_checkable
class CanPromptAttributes(Protocol):
    """Models with a text side on captioned data (CLIP on captioned_shapes): prompts for each attribute's values
    and captions of given values, in the space images embed into."""

    def attribute_prompts(self) -> dict[str, Tensor]:
        """For each attribute (the data's order), (V, D) unit prompts of its V values."""
        ...

    def describe(self, values: Tensor) -> Tensor:
        """(n, D) unit embeddings of a held-out caption naming every attribute of each row of values (n, A)."""
        ...


@runtime_checkable
class CanEmbedText(Protocol):
    """Text encoders whose embeddings condition other models (CLIP for the caption-to-image diffusion)."""

    def embed_texts(self, texts: Sequence[str]) -> Tensor:
        """Free texts -> (n, D) unit vectors; words the encoder never saw count as unknown."""
        ...

    def training_captions(self) -> tuple[Tensor, Tensor]:
        """Every training caption, embedded: (N, D) unit vectors and their classes (N,)."""
        ...

    def held_out_captions(self) -> tuple[Tensor, Tensor]:
        """As CanZeroShot's: the captions of the templates training never saw, (M, D) and (M,)."""
        ...

    def unknown_words(self, text: str) -> list[str]:
        """The words of ``text`` the encoder has no embedding for (they read as <unk>)."""
        ...


@runtime_checkable
class CanPlotState(Protocol):
    """Models that draw their own training state (the toy GAN) every ``state_every`` training batches."""

    state_name: str  # the TensorBoard tag <state_name>/state and the PNGs <state_name>_step_XXXXX.png
    state_every: int

    def state_figure(self, data: Tensor, step: int | None = None) -> Figure:
        """The model's state over training points data (N, *shape), titled with the step."""
        ...


# ---- what a model needs ------------------------------------------------------------------
@dataclass(frozen=True)
class Needs:
    """What a model (or a network builder) needs from the data; ``a | b`` needs both."""

    image: bool = False  # samples are images (C, H, W)
    labels: bool = False  # class labels
    domains: int = 1  # 2: two unpaired domains (batches carry x and x_b)
    shape: tuple[int, ...] | None = None  # exactly this sample shape (the toy GAN: (2,))
    views: int = 1  # 2: every batch also carries batch["views"] (2, B, *shape), disturbed views (CanDisturb)
    batch: int = 1  # samples every training batch must hold (contrastive losses: the others are the negatives)

    def __or__(self, other: Needs) -> Needs:
        if self.shape is not None and other.shape is not None and self.shape != other.shape:
            raise ValueError(f"needs contradict each other: shape {self.shape} and {other.shape}")
        return replace(self, image=self.image or other.image, labels=self.labels or other.labels,
                       domains=max(self.domains, other.domains), shape=self.shape or other.shape,
                       views=max(self.views, other.views), batch=max(self.batch, other.batch))

    def problems(self, info: DataInfo) -> list[str]:
        """Why data described by ``info`` cannot serve, one sentence each; [] when it can."""
        out = []
        if self.image and not info.is_image:
            out.append(f"it needs image data (C, H, W), but '{info.name}' provides {info.dim}-D points. "
                       "Pick an image dataset (e.g. data=digits) or an MLP model (e.g. model=ae).")
        if self.labels and not info.has_labels:
            out.append(f"it is conditional on class labels, and '{info.name}' has none. "
                       "Pick a labelled dataset (e.g. data=digits, toy2d).")
        if self.domains > max(1, len(info.domains)):
            out.append(f"it translates between {self.domains} unpaired domains, but '{info.name}' provides one; "
                       "pick a two-domain dataset (e.g. data=digits_inverted, shapes_colour, unpaired_folder).")
        if self.views > 1 and not info.is_image:
            out.append(f"it learns from disturbed views of images (rotations, crops, blur), but '{info.name}' "
                       f"provides {info.dim}-D points. Pick an image dataset (e.g. data=digits).")
        if self.shape is not None and tuple(info.shape) != tuple(self.shape):
            kind = "images " + "x".join(map(str, info.shape)) if info.is_image else f"{info.dim}-D points"
            if self.shape == (2,):
                out.append(f"it needs 2-D points, but '{info.name}' provides {kind}. Pick a dataset of 2-D points "
                           "(e.g. data=toy2d).")
            else:
                out.append(f"it needs samples of shape {self.shape}, but '{info.name}' provides {kind}.")
        return out

    def check(self, info: DataInfo, who: str) -> None:
        """Raise IncompatibleError naming ``who`` and every reason when the data cannot serve."""
        problems = self.problems(info)
        if problems:
            raise IncompatibleError(" Also, ".join(problems), who)


@dataclass(frozen=True)
class FrozenRun:
    """A constructor argument that is the tested model of another, finished run, kept frozen (latent
    diffusion's autoencoder, caption diffusion's CLIP). The config gives the run's folder; the recipe
    (``genlab.checkpoints.build_model``) loads its model, checks it against this declaration and hands it
    to the constructor, so a model never opens a folder. Declared on the model class, by argument name:
    ``frozen_runs = {"autoencoder": FrozenRun("autoencoder or VAE", can=(CanEncode, CanDecode))}``."""

    what: str  # the kind of run wanted, for messages ("autoencoder or VAE")
    can: tuple[type, ...] = ()  # the capabilities (protocols above) its model must have
    unconditional: bool = False  # its model must not depend on a class (codes of x alone)
    same_data: tuple[str, ...] = ("shape",)  # DataInfo fields it must share with this run's data
    how: str = ""  # how to make such a run, for messages ("genlab-train experiment=mnist_clip")

    def problems(self, model: object, info: DataInfo | None) -> list[str]:
        """Why ``model`` cannot serve as this component of a run on data ``info`` (None: any data); [] when it
        can."""
        out = []
        missing = [verb(p) for p in self.can if not isinstance(model, p)]
        if missing:
            out.append(f"holds {with_article(type(model).__name__)}, which cannot {' or '.join(missing)}")
        if self.unconditional and getattr(model, "conditional", False):
            out.append(f"holds a conditional {type(model).__name__}, whose output depends on a class")
        theirs = getattr(model, "data_info", None)
        known = theirs is not None and info is not None
        differ = [f for f in self.same_data if known and getattr(theirs, f) != getattr(info, f)]
        if differ:
            mine, other = ("; ".join(f"{f} {getattr(i, f)}" for f in self.same_data) for i in (info, theirs))
            out.append(f"was trained on {theirs.name} ({other}), but this run's data is {info.name} ({mine}): "
                       "train on that run's data")
        return out


def verb(protocol: type) -> str:
    """What a capability protocol can do, in words: CanEmbedText -> "embed text"."""
    return re.sub(r"(?<!^)(?=[A-Z])", " ", protocol.__name__.removeprefix("Can")).lower()


def needs_of(builders: Iterable[object]) -> Needs:
    """The union of what network builders declare (``@needs(...)``); undeclared builders need nothing.

    Builders arrive as ``functools.partial`` objects from config (``_partial_: true``).
    """
    out = Needs()
    for b in builders:
        fn = getattr(b, "func", b)  # a partial's function, or the builder itself
        declared = getattr(fn, "needs", None)
        if isinstance(declared, Needs):
            out = out | declared
    return out
