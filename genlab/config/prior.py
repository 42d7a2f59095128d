"""Schemas of DALLE-2's prior (genlab/models/prior.py: from a CLIP text embedding to a CLIP image embedding) and
decoder (genlab/models/unclip.py: from a CLIP image embedding to an image)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from omegaconf import MISSING

from genlab.config.core import ModelConfig
from genlab.config.diffusion import ConditionalDDPMConfig
from genlab.config.fields import opt


@dataclass
class DiffusionPriorConfig(ConditionalDDPMConfig):
    clip: str = MISSING  # a finished CLIP run folder on the same captioned data, frozen


@dataclass
class RegressionPriorConfig(ModelConfig):
    clip: str = MISSING  # as the diffusion prior's
    hidden: list[int] = opt(gt=0)  # the MLP's widths: the YAML chooses
    dropout: float = opt(ge=0, lt=1)


@dataclass
class UnCLIPDecoderConfig(ConditionalDDPMConfig):
    clip: str = MISSING  # as the prior's
    prior: Optional[str] = None  # a finished prior run on that CLIP run, frozen; null: captions condition directly


SCHEMAS = {"model": {"diffusion_prior": DiffusionPriorConfig, "regression_prior": RegressionPriorConfig,
                     "unclip": UnCLIPDecoderConfig}}
