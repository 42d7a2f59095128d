"""The schema of the captioned shapes (genlab/data/captioned.py): coloured sprites whose captions name their
shape, colour, size and position, with attribute combinations that can be held out of training."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from genlab.config.data import DataConfig
from genlab.config.fields import opt


@dataclass
class CaptionedShapesDataConfig(DataConfig):
    image_size: int = opt(32, ge=16)
    n_samples: int = opt(20000, gt=0)
    # combinations never in training or validation, each {attribute: value, ...} with two or more attributes
    # (attributes: shape, colour, size, position); their samples are all in the test split
    holdout: list[Any] = field(default_factory=list)
    omit: float = opt(0.3, ge=0, le=1)  # a caption's chance to leave out each attribute but the shape


SCHEMAS = {"data": {"captioned_shapes": CaptionedShapesDataConfig}}
