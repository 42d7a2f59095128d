"""Structured-config schemas, registered in Hydra's ConfigStore under ``schema/``.

Each YAML file extends one of these (``defaults: [/schema/model/autoencoder@_here_, _self_]``),
so OmegaConf rejects a wrong type (``model.latent_dim=abc``) or an unknown key while the
config is composed. Ranges and choices are declared as field metadata and checked by
``validate`` before any work, with the full key in the message.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from genlab.errors import UserError

ACTIVATIONS = ("relu", "leaky_relu", "elu", "gelu", "silu", "tanh", "sigmoid", "none")


def opt(default: Any = MISSING, *, ge: float | None = None, gt: float | None = None,
        le: float | None = None, lt: float | None = None, choices: tuple | None = None) -> Any:
    """A dataclass field with a range or a set of choices that ``validate`` enforces."""
    meta = {k: v for k, v in dict(ge=ge, gt=gt, le=le, lt=lt, choices=choices).items() if v is not None}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


# ---- data -------------------------------------------------------------------------
@dataclass
class DataConfig:
    _target_: str = MISSING
    batch_size: int = opt(128, gt=0)
    eval_batch_size: int = opt(512, gt=0)
    val_fraction: float = opt(0.1, ge=0, lt=1)
    seed: int = 0
    binarize: bool = False
    holdout_class: Optional[int] = opt(None, ge=0)
    root: str = "data"
    download: bool = False
    max_train: Optional[int] = opt(None, gt=0)


@dataclass
class DigitsDataConfig(DataConfig):
    image_size: int = opt(8, ge=4)


@dataclass
class ShapesDataConfig(DataConfig):
    image_size: int = opt(32, ge=16)
    n_samples: int = opt(20000, gt=0)
    shapes: list[str] = opt(["square", "ellipse", "heart"])


@dataclass
class Toy2dDataConfig(DataConfig):
    kind: str = opt("ring8", choices=("line", "swiss_roll", "moons", "ring8", "grid25"))
    n_samples: int = opt(10000, gt=0)
    noise: float = opt(0.05, ge=0)


@dataclass
class VisionDataConfig(DataConfig):
    image_size: Optional[int] = opt(None, ge=4)  # resize; None keeps the native size


@dataclass
class CelebADataConfig(VisionDataConfig):
    image_size: Optional[int] = opt(64, ge=4)
    attribute: Optional[str] = None  # one of the 40 attributes as a binary label; None: unlabelled


@dataclass
class ImageFolderDataConfig(VisionDataConfig):
    path: str = MISSING
    channels: int = opt(3, choices=(1, 3))


# two unpaired domains (genlab/data/unpaired.py)
@dataclass
class DigitsInvertedDataConfig(DataConfig):
    image_size: int = opt(16, ge=4)


@dataclass
class MNISTColourDataConfig(VisionDataConfig):
    colour: list[float] = opt([1.0, 0.55, 0.1], ge=0, le=1)  # domain B: x·colour + (1 − x)·background
    background: list[float] = opt([0.05, 0.1, 0.35], ge=0, le=1)


@dataclass
class ShapesColourDataConfig(ShapesDataConfig):
    n_samples: int = opt(10000, gt=0)  # split between the two domains
    colour_a: list[float] = opt([1.0, 0.25, 0.2], ge=0, le=1)
    colour_b: list[float] = opt([0.2, 0.8, 1.0], ge=0, le=1)


@dataclass
class UnpairedFolderDataConfig(DataConfig):
    path: str = MISSING  # with trainA/, trainB/, testA/, testB/
    channels: int = opt(3, choices=(1, 3))
    image_size: int = opt(64, ge=4)


# ---- networks and models -------------------------------------------------------------
@dataclass
class NetConfig:
    _target_: str = MISSING
    _partial_: bool = True  # the model completes it with the data's shape and its code size
    activation: str = opt("relu", choices=ACTIVATIONS)
    tied_weights: bool = False


@dataclass
class MLPNetConfig(NetConfig):
    hidden: list[int] = opt([512, 256])
    batch_norm: bool = False


@dataclass
class ConvNetConfig(NetConfig):
    channels: list[int] = opt([32, 64])
    kernel_size: int = opt(4, choices=(3, 4, 5))
    batch_norm: bool = False
    hidden: list[int] = opt([])


@dataclass
class ModelConfig:
    _target_: str = MISSING
    optimizer: Any = MISSING
    scheduler: Any = None


@dataclass
class AutoencoderConfig(ModelConfig):
    latent_dim: int = opt(32, gt=0)
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
    pretrain_epochs: int = opt(5, ge=0)


@dataclass
class VAEConfig(ModelConfig):
    latent_dim: int = opt(20, gt=0)
    net: Any = MISSING
    likelihood: str = opt("auto", choices=("auto", "bernoulli", "gaussian"))
    gaussian_sigma: float = opt(1.0, gt=0)  # σ of a gaussian p(x|h); the initial value when learned
    learn_sigma: bool = False  # one learned scalar log σ shared by all dimensions
    beta: float = opt(1.0, ge=0)
    kl_warmup_epochs: int = opt(0, ge=0)
    free_bits: float = opt(0.0, ge=0)  # λ nats per code dimension


@dataclass
class PCAConfig:
    _target_: str = MISSING
    latent_dim: int = opt(32, gt=0)
    whiten: bool = False


# ---- the GAN family (genlab/models/gan.py) ----------------------------------------------
@dataclass
class GANMLPNetConfig:
    _target_: str = "genlab.models.gan_nets.mlp_gan"
    _partial_: bool = True
    hidden: list[int] = opt([256, 256], gt=0)
    activation: str = opt("leaky_relu", choices=ACTIVATIONS)
    batch_norm: bool = False  # the generator's hidden layers only


@dataclass
class DCGANNetConfig:
    _target_: str = "genlab.models.gan_nets.dcgan"
    _partial_: bool = True
    width: int = opt(64, gt=0)  # channels of D's first layer, doubled per layer
    max_width: int = opt(512, gt=0)
    activation: str = opt("leaky_relu", choices=ACTIVATIONS)
    g_norm: str = opt("batch", choices=("batch", "none"))
    d_norm: str = opt("batch", choices=("batch", "layer", "none"))


@dataclass
class AdversarialConfig:
    _target_: str = MISSING
    net: Any = MISSING
    latent_dim: int = opt(100, gt=0)
    prior: str = opt("normal", choices=("normal", "uniform"))
    d_steps: int = opt(1, gt=0)  # discriminator steps per generator step
    ema: Optional[float] = opt(None, ge=0, lt=1)  # decay of the generator's EMA copy that samples; null: none
    grad_clip: Optional[float] = opt(None, gt=0)  # max gradient norm per player (trainer.gradient_clip_val is rejected)
    n_fixed: int = opt(64, gt=0)  # fixed noise vectors the validation terms use
    optimizer_g: Any = MISSING
    optimizer_d: Any = MISSING


@dataclass
class GANConfig(AdversarialConfig):
    loss: str = opt("non_saturating", choices=("non_saturating", "minimax"))


@dataclass
class InfoGANConfig(GANConfig):
    latent_dim: int = opt(62, gt=0)
    n_categories: int = opt(10, ge=0)
    n_continuous: int = opt(2, ge=0)
    info_weight: float = opt(1.0, ge=0)
    continuous_loss: str = opt("gaussian", choices=("gaussian", "mse"))


@dataclass
class WGANGPConfig(AdversarialConfig):
    gp_weight: float = opt(10.0, ge=0)
    d_steps: int = opt(5, gt=0)


# ---- CycleGAN (genlab/models/cyclegan.py) and the lectures' toy GAN (genlab/models/toy_gan.py) ----
@dataclass
class ResnetGeneratorConfig:
    _target_: str = "genlab.models.cyclegan.resnet_generator"
    _partial_: bool = True
    channels: int = opt(32, gt=0)
    n_down: int = opt(1, ge=0)  # stride-2 convolutions (and transposed ones back)
    n_blocks: int = opt(3, ge=0)  # residual blocks at the lowest resolution
    norm: str = opt("instance", choices=("instance", "batch"))


@dataclass
class PatchDiscriminatorConfig:
    _target_: str = "genlab.models.cyclegan.patch_discriminator"
    _partial_: bool = True
    channels: int = opt(32, gt=0)
    n_layers: int = opt(2, gt=0)  # stride-2 convolutions: more layers, larger patches
    norm: str = opt("instance", choices=("instance", "batch"))


@dataclass
class CycleGANConfig:
    _target_: str = MISSING
    generator: Any = MISSING
    discriminator: Any = MISSING
    adversarial: str = opt("lsgan", choices=("lsgan", "non_saturating"))
    cycle_weight: float = opt(10.0, ge=0)  # λ_cyc
    identity_weight: float = opt(0.0, ge=0)  # λ_id (the paper's photo <-> painting runs: 0.5·λ_cyc)
    pool_size: int = opt(50, ge=0)  # history pool of fakes per discriminator; 0: none
    grad_clip: Optional[float] = opt(None, gt=0)  # max gradient norm per player
    optimizer_g: Any = MISSING  # both generators
    optimizer_d: Any = MISSING  # both discriminators
    scheduler: Any = None  # made for each optimiser, stepped once per epoch


@dataclass
class ToyGANConfig:
    _target_: str = MISSING
    v_init: list[float] = opt([0.2, 0.98])  # the generator x = h·v
    d_weight_init: list[float] = opt([0.71, -0.71])  # the discriminator sig(|x₁|w₁ + |x₂|w₂ + b)
    d_bias_init: float = 0.0
    loss: str = opt("non_saturating", choices=("non_saturating", "minimax"))
    plot_every: int = opt(25, gt=0)  # training steps between two state figures
    optimizer_g: Any = MISSING
    optimizer_d: Any = MISSING


# ---- trainer, paths, top level --------------------------------------------------------
@dataclass
class TrainerConfig:
    _target_: str = "pytorch_lightning.Trainer"
    accelerator: str = "cpu"
    devices: Any = 1
    precision: Any = opt("32-true", choices=("32-true", "32", 32, "bf16-mixed", "16-mixed", "bf16-true", "64-true"))
    max_epochs: int = opt(30, ge=-1)
    min_epochs: Optional[int] = opt(None, ge=0)
    max_steps: int = opt(-1, ge=-1)
    max_time: Optional[str] = None
    limit_train_batches: Optional[float] = opt(None, ge=0)
    limit_val_batches: Optional[float] = opt(None, ge=0)
    limit_test_batches: Optional[float] = opt(None, ge=0)
    val_check_interval: Optional[float] = opt(None, gt=0)
    check_val_every_n_epoch: Optional[int] = opt(1, gt=0)
    num_sanity_val_steps: Optional[int] = opt(None, ge=-1)
    log_every_n_steps: Optional[int] = opt(50, gt=0)
    gradient_clip_val: Optional[float] = opt(None, ge=0)
    accumulate_grad_batches: int = opt(1, gt=0)
    deterministic: Any = False
    benchmark: Optional[bool] = None
    fast_dev_run: Any = False
    enable_progress_bar: bool = True
    enable_model_summary: bool = True
    default_root_dir: Optional[str] = None


@dataclass
class PathsConfig:
    root_dir: str = MISSING
    data_dir: str = MISSING
    log_dir: str = MISSING
    output_dir: str = MISSING
    cache_dir: str = MISSING


@dataclass
class TrainConfig:
    """Top level: groups are typed by their own schemas; scalars are typed here."""

    data: Any = MISSING
    model: Any = MISSING
    trainer: Any = MISSING
    callbacks: Any = None
    logger: Any = None
    paths: Any = MISSING
    extras: Any = None
    task_name: str = "train"
    tags: list[str] = opt(["dev"])
    seed: int = 0
    train: bool = True
    test: bool = True
    ckpt_path: Optional[str] = None
    optimized_metric: Optional[str] = None
    float32_matmul_precision: str = opt("high", choices=("highest", "high", "medium"))


def register() -> None:
    cs = ConfigStore.instance()
    cs.store(name="train_schema", node=TrainConfig)
    for name, node in {
        "base": DataConfig, "digits": DigitsDataConfig, "shapes": ShapesDataConfig,
        "toy2d": Toy2dDataConfig, "vision": VisionDataConfig, "celeba": CelebADataConfig,
        "image_folder": ImageFolderDataConfig, "digits_inverted": DigitsInvertedDataConfig,
        "mnist_colour": MNISTColourDataConfig, "shapes_colour": ShapesColourDataConfig,
        "unpaired_folder": UnpairedFolderDataConfig,
    }.items():
        cs.store(group="schema/data", name=name, node=node)
    for name, node in {"mlp": MLPNetConfig, "conv": ConvNetConfig}.items():
        cs.store(group="schema/net", name=name, node=node)
    for name, node in {
        "base": ModelConfig, "autoencoder": AutoencoderConfig, "dae": DenoisingAEConfig, "sparse_ae": SparseAEConfig,
        "cae": ContractiveAEConfig, "stacked_ae": StackedAEConfig, "pca": PCAConfig, "vae": VAEConfig,
    }.items():
        cs.store(group="schema/model", name=name, node=node)
    for name, node in {"gan_mlp": GANMLPNetConfig, "dcgan": DCGANNetConfig}.items():
        cs.store(group="schema/net", name=name, node=node)
    for name, node in {"gan": GANConfig, "infogan": InfoGANConfig, "wgan_gp": WGANGPConfig}.items():
        cs.store(group="schema/model", name=name, node=node)
    for name, node in {"resnet": ResnetGeneratorConfig, "patchgan": PatchDiscriminatorConfig}.items():
        cs.store(group="schema/net", name=name, node=node)
    for name, node in {"cyclegan": CycleGANConfig, "toy_gan": ToyGANConfig}.items():
        cs.store(group="schema/model", name=name, node=node)
    cs.store(group="schema/trainer", name="trainer", node=TrainerConfig)
    cs.store(group="schema/paths", name="paths", node=PathsConfig)


# ---- validation ---------------------------------------------------------------------
def _check_field(key: str, value: Any, meta: dict) -> str | None:
    if value is None or isinstance(value, bool) and "choices" not in meta:
        return None
    if "choices" in meta and value not in meta["choices"]:
        return f"{key}={value!r} is not one of {', '.join(map(str, meta['choices']))}"
    for op, bound, ok in (("ge", ">=", lambda a, b: a >= b), ("gt", ">", lambda a, b: a > b),
                          ("le", "<=", lambda a, b: a <= b), ("lt", "<", lambda a, b: a < b)):
        if op in meta:
            values = value if isinstance(value, list) else [value]
            for v in values:
                if isinstance(v, (int, float)) and not ok(v, meta[op]):
                    return f"{key}={value} is out of range: it must be {bound} {meta[op]}"
    return None


def _walk(obj: Any, prefix: str, errors: list[str]) -> None:
    if not dataclasses.is_dataclass(obj):
        return
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        key = f"{prefix}.{f.name}" if prefix else f.name
        if f.metadata:
            msg = _check_field(key, value, dict(f.metadata))
            if msg:
                errors.append(msg)
        _walk(value, key, errors)


def _structured_nodes(cfg: DictConfig) -> Any:
    """Top-level nodes typed by a schema, and typed children of untyped ones (callbacks.x)."""
    for key, node in cfg.items():
        if not isinstance(node, DictConfig):
            continue
        if dataclasses.is_dataclass(OmegaConf.get_type(node)):
            yield str(key), node
        else:
            for sub_key, sub in node.items():
                if isinstance(sub, DictConfig) and dataclasses.is_dataclass(OmegaConf.get_type(sub)):
                    yield f"{key}.{sub_key}", sub


def validate(cfg: DictConfig) -> None:
    """Check every schema-typed node's ranges and choices; raise one UserError listing all."""
    errors: list[str] = []
    for key, node in _structured_nodes(cfg):
        try:
            obj = OmegaConf.to_object(node)
        except Exception as e:  # a missing mandatory value, a bad interpolation
            raise UserError(f"Config error in {key}: {e}") from None
        _walk(obj, key, errors)
    if errors:
        raise UserError("Invalid config:\n  " + "\n  ".join(errors))


def project_root() -> str:
    """The folder holding conf/ (this package's parent in a source checkout)."""
    from pathlib import Path

    return str(Path(__file__).resolve().parent.parent)


def setup_hydra() -> None:
    """Register the schemas and resolvers; safe to call more than once."""
    register()
    if not OmegaConf.has_resolver("genlab_root"):
        OmegaConf.register_new_resolver("genlab_root", project_root)
