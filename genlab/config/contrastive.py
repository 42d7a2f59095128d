"""Schemas of the contrastive family (genlab/models/contrastive.py, clip.py), of the disturbances that
make SimCLR's views (genlab/data/augment.py) and of CLIP's text encoder (genlab/nets/text.py). The image
encoders are the autoencoder family's builders (genlab/config/autoencoders.py)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from omegaconf import MISSING

from genlab.config.core import ModelConfig
from genlab.config.fields import opt


@dataclass
class DisturbancesConfig:
    _target_: str = "genlab.data.augment.Disturbances"
    crop_scale: Optional[list[float]] = field(default_factory=lambda: [0.5, 1.0])  # area kept by the crop; null: none
    flip: bool = False  # horizontal flips (not for digits: a flipped 2 is no 2)
    # the ranges are declared in Disturbances' signature (Bounds) and checked with the full key
    rotation: float = 15.0  # degrees, ±
    translate: float = 0.1  # fraction of the size, ±
    colour: float = 0.0  # colour-jitter strength s (RGB only)
    colour_p: float = 0.8
    grayscale_p: float = 0.0  # RGB only
    blur_sigma: Optional[list[float]] = field(default_factory=lambda: [0.1, 1.0])  # null: no blur
    blur_p: float = 0.5
    noise_std: float = 0.1
    noise_p: float = 0.5


@dataclass
class TextEncoderConfig:
    kind: str = opt("transformer", choices=("transformer", "gru"))
    width: int = opt(64, gt=0)
    layers: int = opt(2, gt=0)
    heads: int = opt(4, gt=0)  # transformer only; width must be a multiple


@dataclass
class ContrastiveConfig(ModelConfig):
    net: Any = MISSING  # the image encoder: a genlab.nets.autoencoder builder (its decoder is not used)
    rep_dim: int = opt(128, gt=0)  # the representation h that encode returns
    proj_hidden: int = opt(256, gt=0)
    proj_dim: int = opt(64, gt=0)  # the compared space
    similarity: str = opt("cosine", choices=("cosine", "dot"))
    temperature: float = opt(0.5, gt=0)
    learn_temperature: bool = False
    loss_chunk: Optional[int] = opt(None, gt=0)  # queries per chunk of the memory-bounded loss; null: all at once


@dataclass
class SimCLRConfig(ContrastiveConfig):
    views: Any = MISSING  # DisturbancesConfig
    gather_negatives: bool = True  # data parallelism: the negatives are the global batch's views


@dataclass
class CLIPConfig(ContrastiveConfig):
    templates: list[str] = opt([])  # each with one {word} slot
    test_templates: list[str] = opt([])  # held out: zero-shot prompts and retrieval captions
    class_words: Optional[list[Any]] = None  # one list of words per class; null: the dataset's class names
    word_dropout: float = opt(0.1, ge=0, lt=1)
    text: TextEncoderConfig = field(default_factory=TextEncoderConfig)


SCHEMAS = {"views": {"disturbances": DisturbancesConfig},
           "model": {"simclr": SimCLRConfig, "clip": CLIPConfig}}
