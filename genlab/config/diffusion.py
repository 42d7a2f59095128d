"""Schemas of the diffusion family (genlab/models/diffusion.py, its samplers in genlab/models/schedulers.py) and
of its denoising networks (genlab/nets/unet.py)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from omegaconf import MISSING

from genlab.config.core import ModelConfig
from genlab.config.fields import opt


@dataclass
class DenoiserNetConfig:
    _target_: str = "genlab.nets.unet.denoiser"
    _partial_: bool = True  # the model completes it with the shape it denoises and its number of classes
    kind: str = opt("auto", choices=("auto", "unet", "mlp"))  # auto: the U-Net for images, the MLP for vectors
    channels: list[int] = opt([32, 64], gt=0)  # U-Net: channels per level, the resolution halved between levels
    blocks: int = opt(1, ge=1)  # U-Net: residual blocks per level
    attention: bool = True  # U-Net: self-attention at the lowest resolution
    hidden: list[int] = opt([256, 256, 256], gt=0)  # MLP: hidden widths
    emb_dim: int = opt(128, gt=0)  # the time (and class) embedding
    dropout: float = opt(0.0, ge=0, lt=1)
    groups: int = opt(8, ge=1)  # GroupNorm groups: must divide every U-Net width in channels


@dataclass
class DDPMConfig(ModelConfig):
    """The defaults equal conf/model/ddpm.yaml's values: cddpm and latent_ddpm merge their schemas after it."""

    net: Any = MISSING
    timesteps: int = opt(1000, ge=1)  # T
    schedule: str = opt("linear", choices=("linear", "cosine"))
    beta_start: float = opt(1e-4, gt=0, lt=1)  # linear schedule, for T = 1000 (scaled by 1000/T)
    beta_end: float = opt(0.02, gt=0, lt=1)
    prediction: str = opt("eps", choices=("eps", "v"))  # what the network predicts
    variance: str = opt("beta", choices=("beta", "posterior"))  # σ_t² of p(x_{t-1}|x_t): β_t or β̃_t
    # the scheduler that samples: genlab.models.schedulers.SCHEDULERS (tests/test_diffusion.py checks the names)
    sampler: str = opt("ddim", choices=("ddpm", "ddim", "dpm_solver"))  # DDIM, ancestral, or DPM-Solver++(2M)
    sample_steps: Optional[int] = opt(50, ge=1)  # reverse steps per sample unless the evaluator sets a budget; None: T
    ddim_eta: float = opt(0.0, ge=0)  # DDIM's noise: 0 deterministic, 1 the ancestral sampler's posterior variance
    ema: Optional[float] = opt(0.999, ge=0, lt=1)  # decay of the weights' moving average that samples; null: none
    clip_denoised: bool = True  # images: the predicted x_0 clipped to [-1, 1] at every reverse step


@dataclass
class ConditionalDDPMConfig(DDPMConfig):
    label_dropout: float = opt(0.1, ge=0, lt=1)  # share of training labels replaced by "no class"
    guidance_scale: float = opt(2.0, ge=0)  # s: ε_u + s(ε_c − ε_u); 0 unconditional, 1 conditional


@dataclass
class LatentDDPMConfig(DDPMConfig):
    autoencoder: str = MISSING  # a finished autoencoder or VAE run folder, frozen


@dataclass
class CaptionDDPMConfig(ConditionalDDPMConfig):
    clip: str = MISSING  # a finished CLIP run folder on the same data, frozen: its text embedding conditions


SCHEMAS = {
    "model": {"ddpm": DDPMConfig, "cddpm": ConditionalDDPMConfig, "latent_ddpm": LatentDDPMConfig,
              "caption_ddpm": CaptionDDPMConfig},
    "net": {"denoiser": DenoiserNetConfig},
}
