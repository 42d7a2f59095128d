"""model=stacked_ae model.pretrain=rbm: a stack of RBMs trained by CD-1, unrolled into the deep autoencoder."""

from __future__ import annotations

import functools
import json
import math
from pathlib import Path

import pytest
import torch
from conftest import FAST, TINY

from genlab.data.base import DataInfo
from genlab.errors import UserError
from genlab.models.stacked import LinearHiddenRBM, StackedAutoencoder
from genlab.nets.autoencoder import mlp_pair
from genlab.run import load_model
from genlab.train import train

IMG = DataInfo("tiny", (1, 8, 8))


def make(**kw: object) -> StackedAutoencoder:
    net = functools.partial(mlp_pair, hidden=[32, 16], activation="sigmoid")
    return StackedAutoencoder(data_info=IMG, net=net, latent_dim=4, likelihood="bernoulli", pretrain="rbm",
                              optimizer=functools.partial(torch.optim.Adam, lr=1e-3), **kw)


def digits() -> torch.Tensor:
    from sklearn.datasets import load_digits

    return torch.from_numpy(load_digits().images[:400]).float().div(16).unsqueeze(1)  # (400, 1, 8, 8)


def test_unrolled_network_starts_from_the_pretrained_rbms() -> None:
    torch.manual_seed(0)
    model = make(rbm_epochs=2)
    rbms = model.pretrain_rbms(digits(), batch_size=50)
    assert [type(r) for r in rbms][-1] is LinearHiddenRBM and len(rbms) == model.n_layers == 3
    assert [tuple(r.W.shape) for r in rbms] == [(64, 32), (32, 16), (16, 4)]
    for i, rbm in enumerate(rbms):
        enc, dec = model.enc_blocks[i][0], model.dec_blocks[model.n_layers - 1 - i][0]
        assert torch.equal(enc.weight, rbm.W.t()) and torch.equal(enc.bias, rbm.hidden_bias)
        assert torch.equal(dec.weight, rbm.W) and torch.equal(dec.bias, rbm.visible_bias)
    # the unrolled encoder computes the RBMs' hidden means: sigmoid probabilities, then the linear code
    x = digits()[:10]
    a = x.flatten(1)
    for rbm in rbms:
        a = rbm.p_h(a)
    assert torch.allclose(model.encode(x), a, atol=1e-5)


def test_rbm_pretraining_lowers_each_layers_reconstruction_error() -> None:
    torch.manual_seed(0)
    model = make(rbm_epochs=5)
    model.pretrain_rbms(digits(), batch_size=20)
    assert len(model.rbm_history) == 3 and all(len(h) == 6 for h in model.rbm_history)
    for i, history in enumerate(model.rbm_history, 1):
        assert all(math.isfinite(h) for h in history)
        assert history[-1] < history[0], (i, history)


def test_linear_hidden_rbm_free_energy_integrates_the_gaussian_code_out() -> None:
    """F(v) = −log ∫ e^{−E(v, h)} dh for E = −aᵀv + ½‖h − b‖² − vᵀWh, up to the constant H/2·log 2π."""
    torch.manual_seed(0)
    rbm = LinearHiddenRBM(data_info=DataInfo("v", (1, 1, 3)), n_hidden=1, init_std=0.5).double()
    with torch.no_grad():
        rbm.hidden_bias.fill_(0.3)
        rbm.visible_bias.copy_(torch.tensor([0.1, -0.2, 0.4]))
    v = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 1.0]], dtype=torch.float64)
    h = torch.linspace(-12, 12, 20001, dtype=torch.float64)[None, :]  # (1, N) grid over the one code unit
    energy = -(v @ rbm.visible_bias)[:, None] + 0.5 * (h - 0.3).pow(2) - (v @ rbm.W) * h  # (2, N)
    numeric = -torch.log(torch.exp(-energy).sum(1) * (h[0, 1] - h[0, 0])) + 0.5 * math.log(2 * math.pi)
    assert torch.allclose(rbm.free_energy(v), numeric, atol=1e-8)


def test_rbm_pretraining_needs_sigmoid_hidden_units() -> None:
    with pytest.raises(UserError, match="sigmoid"):
        StackedAutoencoder(data_info=IMG, net=functools.partial(mlp_pair, hidden=[8]), latent_dim=2,
                           pretrain="rbm")


def test_stacked_ae_with_rbm_pretraining_trains_and_tests(make_cfg) -> None:
    cfg = make_cfg("model=stacked_ae", "model.pretrain=rbm", "model.net.activation=sigmoid", "model.net.hidden=[32,16]",
                   "model.latent_dim=4", "model.rbm_epochs=2", "data=digits", *TINY["digits"], *FAST)
    metrics = train(cfg)
    assert math.isfinite(metrics["test/loss"]) and math.isfinite(metrics["test/sq_err_per_image"])
    out = Path(cfg.paths.output_dir)
    model = load_model(None, out / json.loads((out / "metrics.json").read_text())["best_checkpoint"])
    assert isinstance(model, StackedAutoencoder) and model.pretrain == "rbm"
    assert bool(model.rbm_pretrained)  # the checkpoint records it, so a resumed run does not pretrain again
