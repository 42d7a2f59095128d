"""Schemas of the autoencoder family (genlab/models/autoencoder.py, stacked.py, pca.py) and of
the encoder/decoder network builders (genlab/nets/autoencoder.py)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from omegaconf import MISSING

from genlab.config.core import ModelConfig
from genlab.config.fields import ACTIVATIONS, opt


@dataclass
class NetConfig:
    _target_: str = MISSING
    _partial_: bool = True  # the model completes it with the data's shape and its code size
    activation: str = opt("relu", choices=ACTIVATIONS)
    tied_weights: bool = False


@dataclass
class MLPNetConfig(NetConfig):
    hidden: list[int] = opt([512, 256], gt=0)
    batch_norm: bool = False
    dropout: float = opt(0.0, ge=0, lt=1)  # after every hidden layer of encoder and decoder


@dataclass
class ConvNetConfig(NetConfig):
    channels: list[int] = opt([32, 64], gt=0)
    kernel_size: int = opt(4, choices=(3, 4, 5))
    batch_norm: bool = False
    hidden: list[int] = opt([], gt=0)


@dataclass
class AutoencoderConfig(ModelConfig):
    # no default: each preset chooses its code size (conf/model/*.yaml) and a preset that extends it keeps it,
    # where a default would be merged over it with the extending preset's schema
    latent_dim: int = opt(gt=0)
    net: Any = MISSING
    likelihood: str = opt("auto", choices=("auto", "bernoulli", "gaussian"))
    code_activation: str = opt("none", choices=ACTIVATIONS)


@dataclass
class DenoisingAEConfig(AutoencoderConfig):
    noise: str = opt("gaussian", choices=("gaussian", "masking", "salt_and_pepper"))
    noise_level: float = opt(0.3, ge=0)


@dataclass
class SparseAEConfig(AutoencoderConfig):
    l1_weight: float = opt(1e-3, ge=0)
    sparsity_target: Optional[float] = opt(None, gt=0, lt=1)
    sparsity_weight: float = opt(0.0, ge=0)


@dataclass
class ContractiveAEConfig(AutoencoderConfig):
    contractive_weight: float = opt(0.1, ge=0)
    contractive: str = opt("exact", choices=("exact", "stochastic"))
    contractive_sigma: float = opt(0.1, gt=0)


@dataclass
class StackedAEConfig(AutoencoderConfig):
    pretrain: str = opt("ae", choices=("none", "ae", "rbm"))  # layer-wise pretraining before fine-tuning
    pretrain_epochs: int = opt(5, ge=0)  # pretrain=ae: epochs per layer (trainer epochs)
    rbm_epochs: int = opt(10, ge=0)  # pretrain=rbm: CD epochs per RBM, before the trainer's epochs
    rbm_lr: float = opt(0.1, gt=0)  # SGD step of the binary RBMs
    rbm_code_lr: float = opt(1e-3, gt=0)  # SGD step of the code layer's linear-Gaussian RBM
    rbm_cd_k: int = opt(1, gt=0)
    rbm_momentum: float = opt(0.9, ge=0, lt=1)
    rbm_weight_decay: float = opt(2e-4, ge=0)


@dataclass
class PCAConfig:
    _target_: str = MISSING
    latent_dim: int = opt(gt=0)  # as AutoencoderConfig's: the preset chooses
    whiten: bool = False


SCHEMAS = {
    "net": {"mlp": MLPNetConfig, "conv": ConvNetConfig},
    "model": {"autoencoder": AutoencoderConfig, "dae": DenoisingAEConfig, "sparse_ae": SparseAEConfig,
              "cae": ContractiveAEConfig, "stacked_ae": StackedAEConfig, "pca": PCAConfig},
}
