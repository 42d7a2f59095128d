"""Schemas of the normalizing-flow family (genlab/models/flow.py) and of its coupling networks
(genlab/nets/flow.py)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from omegaconf import MISSING

from genlab.config.core import ModelConfig
from genlab.config.fields import opt


@dataclass
class CouplingNetConfig:
    _target_: str = "genlab.nets.flow.coupling_net"
    _partial_: bool = True  # the flow completes it with the shapes of each coupling's kept and moved parts
    kind: str = opt("auto", choices=("auto", "conv", "mlp"))  # auto: the ResNet for images, the MLP for vectors
    hidden: list[int] = opt([128, 128], gt=0)  # MLP: hidden widths
    channels: int = opt(64, gt=0)  # ResNet: the width of its residual blocks
    blocks: int = opt(2, ge=0)  # ResNet: residual blocks


@dataclass
class RealNVPConfig(ModelConfig):
    net: Any = MISSING
    couplings: Optional[int] = opt(None, ge=1)  # per scale on images (null: 3), in all on points (null: 8)
    scales: int = opt(2, ge=1)  # images: scales of the multi-scale architecture (sides halve between them)
    alpha: float = opt(0.05, gt=0, lt=0.5)  # images: logit(α + (1 − 2α)·v) keeps the logit's input off 0 and 1
    temperature: float = opt(1.0, gt=0)  # the prior's standard deviation when sampling


SCHEMAS = {"model": {"realnvp": RealNVPConfig}, "net": {"coupling": CouplingNetConfig}}
