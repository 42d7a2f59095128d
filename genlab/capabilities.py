"""What a model can do and what it needs: the contract the evaluator, the pictures and train.py read.

A model declares what it can do on its class, ``capabilities = frozenset({CanEncode, CanDecode})`` (a
subclass extends its parent's: ``capabilities = VAE.capabilities | {HasCodeKL}``), and callers ask
``capable(model, CanSample)``, never a model's name. The declaration is checked against the class's methods
when the class is made (``check_capabilities``): a declared capability whose method is missing or misspelt,
or a capability's method on a class that does not declare it, is a TypeError at import. Every method that
looks at data takes an optional ``y``: the labels (B,) — or conditioning vectors (B, D) — that conditional
models (``model.conditional``) use and the others ignore.

Pictures a model draws of itself (an RBM's filters, a diffusion model's trajectory) come from its
``pictures(request)`` as ``PictureSpec``s; the pictures every model with a capability gets are chosen in
``genlab.callbacks.images``.

What a model needs from the data is declared, not discovered: ``Needs`` on the model class (and
on its network builders, see ``genlab.nets.layers.needs``), checked against the dataset's
``DataInfo`` before anything is loaded.
"""

from __future__ import annotations

import difflib
import inspect
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Protocol, TypeVar

from torch import Tensor

from genlab.errors import IncompatibleError, with_article

if TYPE_CHECKING:  # the figure types only; matplotlib is imported where a figure is drawn
    from matplotlib.figure import Figure
    from typing_extensions import TypeIs

    from genlab.data.base import DataInfo
    from genlab.figures import Grid

T = TypeVar("T")


# ---- what a model can do ------------------------------------------------------------------
class CanEncode(Protocol):
    def encode(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """x (B, *shape) -> code h (B, latent_dim); deterministic (the mean for stochastic encoders)."""
        ...


class CanDecode(Protocol):
    def decode(self, h: Tensor, y: Tensor | None = None) -> Tensor:
        """code h (B, latent_dim) -> x̂ (B, *shape) in data space."""
        ...


class CanReconstruct(Protocol):
    def reconstruct(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """x (B, *shape) -> x̂ (B, *shape) in data space."""
        ...


class CanSample(Protocol):
    def sample(self, n: int, y: Tensor | None = None, steps: int | None = None) -> Tensor:
        """n new samples (n, *shape) in data space.

        y: the classes (n,) or conditioning vectors (n, D) of a conditional model, None for a free
        draw. steps: the step budget of an iterative sampler (Gibbs or diffusion steps); None is
        the model's own default, and one-shot samplers ignore it.
        """
        ...


class CanSampleFromText(Protocol):
    """Samplers conditioned on a caption (the small DALLE-2: a diffusion model on a CLIP text embedding)."""

    def sample_texts(self, texts: Sequence[str], n: int, steps: int | None = None) -> Tensor:
        """n samples for each text, text by text: (len(texts)·n, *shape) in data space."""
        ...

    def unknown_words(self, text: str) -> list[str]:
        """The words of ``text`` the text encoder has no embedding for (they read as <unk>)."""
        ...


class CanVary(Protocol):
    """Samplers conditioned on an image's embedding (unCLIP): new images that share what the embedding keeps."""

    def variations(self, x: Tensor, n: int, steps: int | None = None) -> Tensor:
        """n samples for each image of x (B, *shape), image by image: (B·n, *shape) in data space."""
        ...


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


class CanBoundLikelihood(Protocol):
    def likelihood_bounds(self, budget: Budget) -> list[LikelihoodBound]:
        """The bounds on −log p(x) this model reports, each computed within ``budget``."""
        ...


class HasCodeKL(Protocol):
    """Stochastic encoders with a prior: how much information each code dimension carries."""

    def kl_per_dim(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """(B, latent_dim) KL(q(h_d|x) ‖ p(h_d)) per code dimension, in nats."""
        ...


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


class CanDisturb(Protocol):
    """Models trained on disturbed views of their inputs (``Needs.views``): the datamodule draws the views
    with the model's disturbances, on the batch's device."""

    def disturb(self, x: Tensor) -> Tensor:
        """x (B, *shape) -> one randomly disturbed view (B, *shape), drawn independently per image."""
        ...


class CanZeroShot(Protocol):
    """Models with a text side (CLIP): images are classified by comparing them with prompts for each class."""

    def held_out_captions(self) -> tuple[Tensor, Tensor]:
        """Every caption of the templates training never saw, embedded: (M, D) unit vectors and their
        classes (M,); a class's mean is its zero-shot prompt."""
        ...

    def caption_embeddings(self, y: Tensor) -> Tensor:
        """(B, D) unit vectors of one held-out caption for each label of y (B,), drawn at random."""
        ...


class CanPromptAttributes(Protocol):
    """Models with a text side on captioned data (CLIP on captioned_shapes): prompts for each attribute's values
    and captions of given values, in the space images embed into."""

    def attribute_prompts(self) -> dict[str, Tensor]:
        """For each attribute (the data's order), (V, D) unit prompts of its V values."""
        ...

    def describe(self, values: Tensor) -> Tensor:
        """(n, D) unit embeddings of a held-out caption naming every attribute of each row of values (n, A)."""
        ...

    def draw_captions(self, values: Tensor) -> Tensor:
        """(n, D) unit embeddings of one caption of each row of values (n, A), drawn as training draws them
        (its templates and synonyms, some attributes left out)."""
        ...


class CanPredictImageEmbedding(Protocol):
    """DALLE-2's priors: from a caption's text embedding to an image embedding, in a frozen CLIP's space."""

    def image_embeddings(self, texts: Tensor, scale: float | None = None, steps: int | None = None) -> Tensor:
        """(n, D) unit text embeddings -> (n, D) predicted unit image embeddings. ``scale``: the guidance scale
        of a guided prior (None: its own; others ignore it); ``steps``: an iterative prior's step budget."""
        ...

    def guidance_scales(self) -> tuple[float, ...]:
        """The guidance scales worth comparing for this prior; () when it has no guidance."""
        ...

    def frozen_clip(self) -> CanPromptAttributes:
        """The frozen CLIP whose spaces the prior maps between (it embeds images with ``embed``)."""
        ...


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


# ---- the declaration and its check ---------------------------------------------------------
#: every capability a model may declare
CAPABILITIES: tuple[type, ...] = (CanEncode, CanDecode, CanReconstruct, CanSample, CanSampleFromText, CanVary,
                                  CanTranslate, CanBoundLikelihood, HasCodeKL, CanEmbed, CanDisturb, CanZeroShot,
                                  CanPromptAttributes, CanEmbedText, CanPredictImageEmbedding)


def methods_of(capability: type) -> list[str]:
    """The methods a capability protocol asks for, in the order it lists them."""
    return [name for name, value in vars(capability).items() if callable(value) and not name.startswith("_")]


def capable(model: object, capability: type[T]) -> TypeIs[T]:
    """Whether ``model``'s class declares ``capability`` (one of ``CAPABILITIES``)."""
    return capability in getattr(type(model), "capabilities", ())


def check_capabilities(cls: type) -> None:
    """TypeError unless ``cls.capabilities`` matches the class's methods: every method of a declared capability
    exists, is callable and takes the protocol's parameters (by name, in order; more only with defaults), and
    no method of an undeclared capability is there (a declaration forgotten would drop the model from the
    metrics and pictures of that capability)."""
    declared = frozenset(getattr(cls, "capabilities", ()))
    unknown = [c for c in declared if c not in CAPABILITIES]
    if unknown:
        raise TypeError(f"{cls.__name__}.capabilities holds {unknown[0]!r}, which is not one of genlab.capabilities."
                        f"CAPABILITIES ({', '.join(c.__name__ for c in CAPABILITIES)})")
    covered = set()
    for cap in sorted(declared, key=CAPABILITIES.index):
        for name in methods_of(cap):
            covered.add(name)
            method = getattr(cls, name, None)
            if not callable(method):
                near = difflib.get_close_matches(name, [n for n in dir(cls) if not n.startswith("_")], n=1)
                hint = f" (is {near[0]!r} a misspelling?)" if near else ""
                raise TypeError(f"{cls.__name__} declares {cap.__name__} but has no method {name!r}{hint}")
            problem = _parameter_problem(cls, name, getattr(cap, name))
            if problem:
                raise TypeError(f"{cls.__name__}.{name} does not fit {cap.__name__}.{name}: {problem}")
    for cap in CAPABILITIES:
        for name in methods_of(cap):
            if cap not in declared and name not in covered and callable(getattr(cls, name, None)):
                raise TypeError(f"{cls.__name__} has the method {name!r} of {cap.__name__} but does not declare "
                                f"it: add {cap.__name__} to {cls.__name__}.capabilities (or rename the method)")


def _parameter_problem(cls: type, name: str, wanted: Callable) -> str | None:
    """Why ``cls``'s method ``name`` cannot be called as the protocol's ``wanted`` is, or None."""
    static = isinstance(inspect.getattr_static(cls, name), (staticmethod, classmethod))
    have = list(inspect.signature(getattr(cls, name)).parameters.values())[0 if static else 1:]
    want = list(inspect.signature(wanted).parameters.values())[1:]
    if any(p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in have):
        return None
    names = [p.name for p in have]
    if names[: len(want)] != [p.name for p in want]:
        return f"its parameters are ({', '.join(names)}), the protocol's ({', '.join(p.name for p in want)})"
    extra = [p.name for p in have[len(want):] if p.default is p.empty]
    return f"its parameters {extra} have no default" if extra else None


# ---- pictures a model draws of itself ----------------------------------------------------------
@dataclass(frozen=True)
class PictureRequest:
    """When the image logger asks a model for its own pictures, and what it may draw them from."""

    moment: str  # "test" (the test's end), "train_batch" (before each training batch) or "train_end"
    info: DataInfo
    columns: int  # images per grid row
    points: int  # points in a scatter
    step: int  # the training batches seen (the step of the model's logged terms)
    pick: Callable[[str, int], Tensor]  # (split, n) -> n fixed samples of the split (n, *shape), scaled, on the CPU


@dataclass(frozen=True)
class PictureSpec:
    """One picture: the TensorBoard ``tag`` (test/<name>) and, when named, the PNG ``file`` under
    ``<run>/images``. ``draw`` makes it only when it is written, under the logger's seed and in evaluation
    mode: labelled image grids (``genlab.figures.Grid``, stacked top to bottom) or a figure."""

    tag: str
    file: str | None
    draw: Callable[[], Sequence[Grid] | Figure]
    step: int | None = None  # the TensorBoard step; None: the trainer's global step
    bounded: bool | None = None  # grids' images in [0, 1] (clamped) or min-max scaled; None: as the data are


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
    optional: bool = False  # null in the config hands in None: the model works without it

    def problems(self, model: object, info: DataInfo | None) -> list[str]:
        """Why ``model`` cannot serve as this component of a run on data ``info`` (None: any data); [] when it
        can."""
        out = []
        missing = [verb(p) for p in self.can if not capable(model, p)]
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
