"""Schema of the restricted Boltzmann machine (genlab/models/rbm.py)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from genlab.config.core import ModelConfig
from genlab.config.fields import opt


@dataclass
class RBMConfig(ModelConfig):
    n_hidden: int = opt(64, gt=0)
    visible: str = opt("bernoulli", choices=("bernoulli", "gaussian"))  # gaussian: unit variance, real values
    cd_k: int = opt(1, ge=1)  # Gibbs sweeps per update
    persistent: bool = False  # PCD: the negative chains persist across batches
    n_chains: int = opt(100, ge=1)  # PCD's persistent chains, started from the first training batch
    weight_decay: float = opt(0.0, ge=0)  # ½λ‖W‖² added to the loss
    sparsity_target: Optional[float] = opt(None, gt=0, lt=1)  # ρ: the wanted mean hidden probability
    sparsity_cost: float = opt(0.0, ge=0)
    ais_runs: Optional[int] = opt(100, ge=1)  # None: the evaluator's likelihood budget (samples)
    ais_betas: int = opt(1000, ge=2)  # AIS inverse temperatures, evenly spaced in [0, 1]
    sample_steps: int = opt(1000, ge=1)  # Gibbs sweeps per sample when the evaluator sets no budget
    init_std: float = opt(0.01, gt=0)  # the initial weights' standard deviation
    # train/recon, the reconstruction error of the training batches: one more (B, H) x (H, D) product per
    # update, a sixth of a 784-500 update, so off by default; val/recon and test/recon are reported regardless,
    # and train/ and val/free_energy are the usual overfitting watch (Hinton's practical guide, section 6)
    train_recon: bool = False
    # PCD's chain state kept between updates: visible (the chains' images, resampled through h under the new
    # weights) or hidden (h sampled from the last update's p(h | v_model), as scikit-learn's BernoulliRBM and
    # Tieleman 2008: one product fewer per update)
    chain_state: str = opt("visible", choices=("visible", "hidden"))


SCHEMAS = {"model": {"rbm": RBMConfig}}
