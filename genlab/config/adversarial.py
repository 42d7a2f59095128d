"""Schemas of the two-player family (genlab/models/two_player.py and its models: gan, infogan,
wgan_gp, cyclegan, toy_gan) and of their network builders (genlab/nets/gan.py, cyclegan.py)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from omegaconf import MISSING

from genlab.config.fields import ACTIVATIONS, opt

GAN_LOSSES = ("non_saturating", "minimax")


# ---- networks ------------------------------------------------------------------------------
@dataclass
class GANMLPNetConfig:
    _target_: str = "genlab.nets.gan.mlp_gan"
    _partial_: bool = True
    hidden: list[int] = opt([256, 256], gt=0)
    activation: str = opt("leaky_relu", choices=ACTIVATIONS)
    batch_norm: bool = False  # the generator's hidden layers only


@dataclass
class DCGANNetConfig:
    _target_: str = "genlab.nets.gan.dcgan"
    _partial_: bool = True
    width: int = opt(64, gt=0)  # channels of D's first layer, doubled per layer
    max_width: int = opt(512, gt=0)
    activation: str = opt("leaky_relu", choices=ACTIVATIONS)
    g_norm: str = opt("batch", choices=("batch", "none"))
    d_norm: str = opt("batch", choices=("batch", "layer", "none"))


@dataclass
class ResnetGeneratorConfig:
    _target_: str = "genlab.nets.cyclegan.resnet_generator"
    _partial_: bool = True
    channels: int = opt(32, gt=0)
    n_down: int = opt(1, ge=0)  # stride-2 convolutions (and transposed ones back)
    n_blocks: int = opt(3, ge=0)  # residual blocks at the lowest resolution
    norm: str = opt("instance", choices=("instance", "batch"))


@dataclass
class PatchDiscriminatorConfig:
    _target_: str = "genlab.nets.cyclegan.patch_discriminator"
    _partial_: bool = True
    channels: int = opt(32, gt=0)
    n_layers: int = opt(2, gt=0)  # stride-2 convolutions: more layers, larger patches
    norm: str = opt("instance", choices=("instance", "batch"))


# ---- models --------------------------------------------------------------------------------
@dataclass
class TwoPlayerConfig:
    """What every two-player model takes (genlab.models.two_player.TwoPlayerModel)."""

    _target_: str = MISSING
    grad_clip: Optional[float] = opt(None, gt=0)  # max gradient norm per player (trainer.gradient_clip_val is rejected)
    optimizer_g: Any = MISSING  # the generator side
    optimizer_d: Any = MISSING  # the discriminator side
    scheduler: Any = None  # made for each optimiser, stepped once per epoch
    compile: bool = False  # torch.compile the networks for training (CPU and GPU; the first steps compile)


@dataclass
class AdversarialConfig(TwoPlayerConfig):
    net: Any = MISSING
    latent_dim: int = opt(gt=0)  # the noise's size; as AutoencoderConfig's: each preset chooses
    prior: str = opt("normal", choices=("normal", "uniform"))
    d_steps: int = opt(1, gt=0)  # discriminator steps per generator step
    ema: Optional[float] = opt(None, ge=0, lt=1)  # decay of the generator's average that samples; null: none
    n_fixed: int = opt(64, gt=0)  # fixed noise vectors the validation terms use


@dataclass
class GANConfig(AdversarialConfig):
    loss: str = opt("non_saturating", choices=GAN_LOSSES)


@dataclass
class InfoGANConfig(GANConfig):
    n_categories: int = opt(10, ge=0)
    n_continuous: int = opt(2, ge=0)
    info_weight: float = opt(1.0, ge=0)
    continuous_loss: str = opt("gaussian", choices=("gaussian", "mse"))


@dataclass
class WGANGPConfig(AdversarialConfig):
    gp_weight: float = opt(10.0, ge=0)


@dataclass
class CycleGANConfig(TwoPlayerConfig):
    generator: Any = MISSING
    discriminator: Any = MISSING
    adversarial: str = opt("lsgan", choices=("lsgan", "non_saturating"))
    cycle_weight: float = opt(10.0, ge=0)  # λ_cyc
    identity_weight: float = opt(0.0, ge=0)  # λ_id (the paper's photo <-> painting runs: 0.5·λ_cyc)
    pool_size: int = opt(50, ge=0)  # history pool of fakes per discriminator; 0: none


@dataclass
class ToyGANConfig(TwoPlayerConfig):
    v_init: list[float] = opt([0.2, 0.98])  # the generator x = h·v
    d_weight_init: list[float] = opt([0.71, -0.71])  # the discriminator sig(|x₁|w₁ + |x₂|w₂ + b)
    d_bias_init: float = 0.0
    loss: str = opt("non_saturating", choices=GAN_LOSSES)
    plot_every: int = opt(25, gt=0)  # training steps between two state figures


SCHEMAS = {
    "net": {"gan_mlp": GANMLPNetConfig, "dcgan": DCGANNetConfig, "resnet": ResnetGeneratorConfig,
            "patchgan": PatchDiscriminatorConfig},
    "model": {"gan": GANConfig, "infogan": InfoGANConfig, "wgan_gp": WGANGPConfig, "cyclegan": CycleGANConfig,
              "toy_gan": ToyGANConfig},
}
