"""Schema of the VAE family (genlab/models/vae.py); its networks are the autoencoder builders."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from omegaconf import MISSING

from genlab.config.core import ModelConfig
from genlab.config.fields import opt


@dataclass
class VAEConfig(ModelConfig):
    latent_dim: int = opt(gt=0)  # as AutoencoderConfig's: each preset chooses
    net: Any = MISSING
    likelihood: str = opt("auto", choices=("auto", "bernoulli", "gaussian"))
    gaussian_sigma: float = opt(1.0, gt=0)  # σ of a gaussian p(x|h); the initial value when learned
    learn_sigma: bool = False  # one learned scalar log σ shared by all dimensions
    beta: float = opt(1.0, ge=0)
    kl_warmup_epochs: int = opt(0, ge=0)
    free_bits: float = opt(0.0, ge=0)  # λ nats per code dimension


SCHEMAS = {"model": {"vae": VAEConfig}}
