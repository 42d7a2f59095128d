"""The top level, the trainer, the paths, and what every model config has."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from omegaconf import MISSING

from genlab.config.fields import opt


@dataclass
class ModelConfig:
    _target_: str = MISSING
    optimizer: Any = MISSING
    scheduler: Any = None
    compile: bool = False  # torch.compile the networks for training (CPU and GPU; the first steps compile)
    # optimiser steps per loader batch, each on its next 1/n slice (set data.batch_size to n x the minibatch):
    # the same updates with Lightning's per-step cost paid once per n (not with DDP, gradient clipping or
    # accumulation, fp16, a scheduler, or views)
    updates_per_batch: int = opt(1, ge=1)


@dataclass
class TrainerConfig:
    _target_: str = "pytorch_lightning.Trainer"
    accelerator: str = "cpu"
    devices: Any = 1
    # data parallelism (Lightning's strategies): ddp on CPU uses gloo, on GPUs nccl; data.batch_size is per process,
    # so the global batch is devices x num_nodes x data.batch_size
    strategy: Any = "auto"
    num_nodes: int = opt(1, ge=1)
    sync_batchnorm: bool = False  # BatchNorm statistics over the global batch instead of each process's shard
    # genlab's loaders shard by rank themselves (as a DistributedSampler would, with genlab's seeded epoch orders)
    use_distributed_sampler: bool = False
    # not bf16-true or 64-true: genlab's evaluation and pictures feed float32 inputs to the model
    precision: Any = opt("32-true", choices=("32-true", "32", 32, "bf16-mixed", "16-mixed"))
    max_epochs: int = opt(30, ge=-1)
    min_epochs: Optional[int] = opt(None, ge=0)
    max_steps: int = opt(-1, ge=-1)
    max_time: Optional[str] = None
    # limit_*_batches and val_check_interval: a fraction of the epoch (at most 1.0) or a whole number of batches
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
    plugins: Any = None  # Lightning plugins: genlab's whole-file checkpoint IO (conf/trainer/default.yaml)
    nan_retries: int = opt(0, ge=0)  # genlab's: after a NaN/inf loss, retry from the newest checkpoint with lr halved


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

    tags: list[str] = opt(["dev"])
    float32_matmul_precision: str = opt("high", choices=("highest", "high", "medium"))
    data: Any = MISSING
    model: Any = MISSING
    trainer: Any = MISSING
    callbacks: Any = None
    logger: Any = None
    paths: Any = MISSING
    extras: Any = None
    task_name: str = "train"  # one folder name (checks.task_name_problem)
    seed: int = opt(0, ge=0, lt=2**32)  # what numpy's and Lightning's seeding accept
    train: bool = True
    test: bool = True
    ckpt_path: Optional[str] = None  # start from this checkpoint, in a new run folder
    resume: Optional[str] = None  # a run folder: continue that run, in its folder, from its last checkpoint
    trust: bool = False  # this command vouches for the folders and checkpoints it opens (genlab.safety)
    trusted_modules: list[str] = opt([])  # your modules, whose classes the folders this command opens may name
    optimized_metric: Optional[str] = None
    smoke: bool = False  # debug=fast: evaluation and pictures at a token budget (genlab.run.smoke_budget)


SCHEMAS = {"model": {"base": ModelConfig}, "trainer": {"trainer": TrainerConfig}, "paths": {"paths": PathsConfig}}
