"""Captioned shapes: coloured sprites whose captions describe several attributes, for CLIP, a prior and an
unCLIP decoder (the lectures' DALLE-2) — and whose attribute combinations can be held out of training, so
that a model is asked for combinations it never saw ("a red heart" when no red heart was in training).

Each image draws a shape, a colour, a size and a position (a cell of a 3x3 grid) — the captionable
*attributes* — plus a rotation and a jitter within the cell that captions never mention. A caption is made
per draw (``Captioner``): one of several templates, a word choice per value ("small", "tiny", "little"), and
each attribute but the shape left out with probability ``omit``, so one caption matches many images.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from genlab.data.base import DataInfo, Split, Splits, TensorDataModule
from genlab.data.builtin import SHAPES, generator, render_sprites
from genlab.errors import UserError

# the captionable attributes and their values, in factor order: a sample's factors hold each value's index
ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "shape": SHAPES,
    "colour": ("red", "green", "blue", "yellow"),
    "size": ("small", "large"),
    "position": ("top left", "top", "top right", "left", "centre", "right", "bottom left", "bottom",
                 "bottom right"),
}
RGB = {"red": (1.0, 0.15, 0.1), "green": (0.1, 0.85, 0.2), "blue": (0.15, 0.35, 1.0), "yellow": (1.0, 0.9, 0.1)}
# sizes as multiples of builtin.SPRITE_RADIUS; a large square's corner (0.15 · 1.05 · √2 = 0.223 of the canvas)
# stays on the canvas when the centre of a border cell (0.25 from the edge) moves by the jitter (0.02)
SCALES = {"small": (0.6, 0.7), "large": (0.95, 1.05)}
CELL_JITTER = 0.02  # the sprite centre moves this far (canvas fractions) around its cell's centre
FACTORS = (*ATTRIBUTES, "scale", "rotation", "x", "y")

# the words a caption may use for each value (the first is the value's name)
SYNONYMS: dict[str, tuple[str, ...]] = {
    "square": ("square", "box"), "ellipse": ("ellipse", "oval"), "heart": ("heart",),
    "small": ("small", "tiny", "little"), "large": ("large", "big"),
    "red": ("red", "crimson"), "green": ("green",), "blue": ("blue",), "yellow": ("yellow", "golden"),
    "top left": ("top left", "upper left"), "top": ("top", "upper middle"), "top right": ("top right", "upper right"),
    "left": ("left", "middle left"), "centre": ("centre", "middle"), "right": ("right", "middle right"),
    "bottom left": ("bottom left", "lower left"), "bottom": ("bottom", "lower middle"),
    "bottom right": ("bottom right", "lower right"),
}


def known_words() -> str:
    """The words captions use for each attribute's values, for messages: "shape: square, box, ...; colour: ..."."""
    return "; ".join(f"{a}: " + ", ".join(w for v in values for w in SYNONYMS[v]) for a, values in ATTRIBUTES.items())


# [ ... ] is left out with the attribute named inside it; {shape} is always said
TEMPLATES = (
    "a [{size}] [{colour}] {shape} [in the {position}]",
    "[{position}:] a [{size}] [{colour}] {shape}",
    "there is a [{size}] [{colour}] {shape} [at the {position}]",
    "a [{colour}] {shape}[, {size},] [{position}]",
    "a picture of a [{size}] {shape}[ coloured {colour}] [in the {position}]",
)
TEST_TEMPLATES = (  # never used in training: zero-shot prompts and held-out captions
    "an image with a [{size}] [{colour}] {shape} [placed {position}]",
    "look: a [{colour}] [{size}] {shape} [in the {position}]",
)


@dataclass(frozen=True)
class CaptionDraw:
    """Captions of B samples as drawn: their texts, and which attributes each one names, ``said`` (B, A) bool
    in ATTRIBUTES order (a caption matches every image that has the values it names)."""

    texts: list[str]
    said: Tensor


class Captioner:
    """Captions of attribute values: ``draw(values)`` for (B, A) value indices in ATTRIBUTES order picks, per
    sample, a template, a word for each value and the attributes to name, from torch's random stream (so a
    resumed run draws what the uninterrupted one did). ``omit``: the probability that each attribute but the
    shape is left out."""

    def __init__(self, templates: Sequence[str] = TEMPLATES, omit: float = 0.3) -> None:
        self.templates, self.omit = tuple(templates), float(omit)

    def draw(self, values: Tensor, said: Tensor | None = None, generator: torch.Generator | None = None) -> CaptionDraw:
        """Captions of values (B, A); ``said`` (B, A) bool fixes what each names (None: drawn with ``omit``;
        the shape is always named)."""
        values = values.long().cpu()
        b, a = values.shape
        if said is None:
            said = torch.rand(b, a, generator=generator) >= self.omit
            said[:, 0] = True
        template = torch.randint(len(self.templates), (b,), generator=generator)
        word = torch.rand(b, a, generator=generator)  # which synonym, as a fraction of the value's list
        texts = [self.text(v, s, self.templates[t], w) for v, s, t, w in
                 zip(values.tolist(), said.tolist(), template.tolist(), word.tolist())]
        return CaptionDraw(texts, said.clone())

    @staticmethod
    def text(values: Sequence[int], said: Sequence[bool], template: str, word: Sequence[float] | None = None) -> str:
        """One caption: values and said in ATTRIBUTES order; ``word`` in [0, 1) picks each value's synonym (None:
        its name)."""
        out = template
        for i, (attribute, names) in enumerate(ATTRIBUTES.items()):
            choices = SYNONYMS[names[values[i]]]
            pick = choices[int(word[i] * len(choices))] if word is not None else choices[0]
            out = _fill(out, attribute, pick if said[i] else None)
        out = " ".join(out.replace(" ,", ",").split()).strip(" ,:")
        return re.sub(r"\ba (?=[aeiou])", "an ", out)  # "an oval"

    @staticmethod
    def vocabulary_texts(templates: Sequence[str]) -> list[str]:
        """Texts that hold every word captions from ``templates`` can use (a vocabulary is built from them)."""
        glue = [re.sub(r"[\[\]]|\{\w+\}", " ", t) for t in templates]  # the templates' own words
        return glue + [" ".join(w) for w in SYNONYMS.values()] + ["shape"]

    @staticmethod
    def longest(templates: Sequence[str]) -> int:
        """The most words a caption from ``templates`` can have (every attribute named with its longest word)."""
        most = {a: max(len(w.split()) for v in names for w in SYNONYMS[v]) for a, names in ATTRIBUTES.items()}
        return max(len(_fill_all(t, {a: " ".join(["x"] * n) for a, n in most.items()}).split()) for t in templates)


def matches(values: Tensor, said: Tensor, others: Tensor) -> Tensor:
    """(B, M) bool: caption i (its values (B, A) and ``said`` (B, A)) describes sample j of ``others`` (M, A),
    i.e. j has every value caption i names."""
    same = values[:, None, :] == others[None, :, :]  # (B, M, A)
    return (same | ~said[:, None, :]).all(-1)


def _fill_all(template: str, words: Mapping[str, str | None]) -> str:
    for attribute in ATTRIBUTES:
        template = _fill(template, attribute, words.get(attribute))
    return template


def _fill(template: str, attribute: str, word: str | None) -> str:
    """The template with {attribute} replaced by ``word``; None drops the [ ... ] around it (and a bare
    {shape} becomes the word "shape")."""
    slot = "{" + attribute + "}"
    while slot in template:
        i = template.index(slot)
        a, b = template.rfind("[", 0, i), template.find("]", i)
        bracketed = a != -1 and b != -1 and "]" not in template[a:i]
        if bracketed:
            inner = template[a + 1:b].replace(slot, word) if word is not None else ""
            template = template[:a] + inner + template[b + 1:]
        else:
            template = template.replace(slot, word if word is not None else attribute, 1)
    return template


def held_out_mask(factors: Tensor, holdout: Sequence[Mapping[str, str]]) -> Tensor:
    """(N,) True where a sample's attributes match one of the held-out combinations (attribute -> value)."""
    mask = torch.zeros(len(factors), dtype=torch.bool)
    names = list(ATTRIBUTES)
    for combo in holdout:
        hit = torch.ones(len(factors), dtype=torch.bool)
        for attribute, value in combo.items():
            hit &= factors[:, names.index(attribute)].long() == ATTRIBUTES[attribute].index(value)
        mask |= hit
    return mask


def check_holdout(holdout: Sequence[Mapping[str, str]]) -> list[dict[str, str]]:
    """The held-out combinations as plain dicts; UserError naming what is wrong with one."""
    out = []
    for combo in holdout or ():
        combo = {str(k): str(v) for k, v in dict(combo).items()}
        unknown = [k for k in combo if k not in ATTRIBUTES]
        if unknown:
            raise UserError(f"data.holdout: {unknown[0]!r} is not an attribute; the attributes are "
                            f"{', '.join(ATTRIBUTES)}.")
        for k, v in combo.items():
            if v not in ATTRIBUTES[k]:
                raise UserError(f"data.holdout: {k}={v!r} is not a value of {k}; its values are "
                                f"{', '.join(ATTRIBUTES[k])}.")
        if len(combo) < 2:
            raise UserError(f"data.holdout: {combo} names one attribute; a held-out combination names two or more "
                            "(e.g. {colour: red, shape: heart}), so that each value is still seen in training.")
        out.append(combo)
    return out


class CaptionedShapesDataModule(TensorDataModule):
    """Coloured sprites (3, S, S) with attributes shape/colour/size/position and captions of them; labels are
    the shape. ``holdout``: attribute combinations kept out of training and validation (every sample that
    has one is in the test split, beside 15% of the others); ``omit``: a caption's chance to leave out each
    attribute but the shape."""

    def __init__(self, *, image_size: int, n_samples: int, holdout: Sequence[Mapping[str, str]], omit: float,
                 **options: Any) -> None:
        super().__init__(**options)
        self.image_size, self.n_samples, self.omit = image_size, n_samples, omit
        self.holdout = check_holdout(holdout)

    @property
    def info(self) -> DataInfo:
        s = self.image_size
        return DataInfo("captioned_shapes", (3, s, s), len(SHAPES), FACTORS, class_names=SHAPES,
                        attributes=tuple(ATTRIBUTES.items()),
                        holdout=tuple(tuple(sorted(c.items())) for c in self.holdout), caption_omit=self.omit)

    def sample_factors(self, n: int | None = None, seed: int | None = None) -> Tensor:
        """(n, 8) factors (n: n_samples; seed: the data's): shape, colour, size, position indices, then scale,
        rotation, x, y."""
        n, g = n or self.n_samples, generator(self.options.seed if seed is None else seed)
        idx = [torch.randint(len(v), (n,), generator=g) for v in ATTRIBUTES.values()]
        shape, colour, size, position = idx
        lo = torch.tensor([SCALES[s][0] for s in ATTRIBUTES["size"]])[size]
        hi = torch.tensor([SCALES[s][1] for s in ATTRIBUTES["size"]])[size]
        scale = lo + (hi - lo) * torch.rand(n, generator=g)
        rotation = 2 * math.pi * torch.rand(n, generator=g)
        col, row = (position % 3).float(), (position // 3).float()  # cells left to right, top to bottom
        x = 0.25 + 0.25 * col + CELL_JITTER * (2 * torch.rand(n, generator=g) - 1)
        y = 0.25 + 0.25 * row + CELL_JITTER * (2 * torch.rand(n, generator=g) - 1)
        return torch.stack([shape.float(), colour.float(), size.float(), position.float(), scale, rotation, x, y], 1)

    def render(self, factors: Tensor) -> Tensor:
        """uint8 images (N, 3, S, S): the sprite's mask in its colour on black."""
        sprite = torch.stack([factors[:, 0], factors[:, 4], factors[:, 5], factors[:, 6], factors[:, 7]], 1)
        mask = render_sprites(sprite, SHAPES, self.image_size).float() / 255  # (N, 1, S, S)
        rgb = torch.tensor([RGB[c] for c in ATTRIBUTES["colour"]])[factors[:, 1].long()]  # (N, 3)
        return (mask * rgb[:, :, None, None] * 255).round().to(torch.uint8)

    def reference_split(self, n: int | None = None) -> Split:
        """n samples (default n_samples) of the generator with every attribute combination, the held-out ones
        included, from another seed than the data's: what classifiers of the true factors learn from, so that
        none learns a held-out combination's absence (a shape classifier that never saw a red heart reads red
        as "not a heart")."""
        factors = self.sample_factors(n, self.options.seed + 1_000_003)
        return Split(self.render(factors), factors[:, 0].long(), factors)

    def load(self) -> Splits:
        factors = self.sample_factors()
        data = Split(self.render(factors), factors[:, 0].long(), factors)
        held = held_out_mask(factors, self.holdout)
        seen = torch.nonzero(~held).squeeze(1)  # i.i.d. draws: a contiguous cut is a random split
        n_train = int(round(0.85 * len(seen)))
        test = torch.cat([seen[n_train:], torch.nonzero(held).squeeze(1)]).sort().values
        if n_train == 0:
            raise UserError(f"data.holdout leaves no training samples of the {self.n_samples} drawn.")
        return Splits(train=data.subset(seen[:n_train]), test=data.subset(test))

