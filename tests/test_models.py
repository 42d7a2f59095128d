"""Model behaviour against independent computations: autograd Jacobians, PCA, hand loops."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch
from scipy.linalg import subspace_angles
from torch import nn

from genlab.data.base import DataInfo
from genlab.errors import IncompatibleError, UserError
from genlab.models.autoencoder import (
    Autoencoder,
    ContractiveAutoencoder,
    DenoisingAutoencoder,
    SparseAutoencoder,
    contractive_penalty,
)
from genlab.models.pca import PCA
from genlab.models.plumbing import make_optimizer
from genlab.models.stacked import StackedAutoencoder
from genlab.nets.autoencoder import conv_pair, mlp_pair

IMG = DataInfo("img", (1, 8, 8), num_classes=10)
PTS = DataInfo("pts", (2,), bounded=False)


def mlp(hidden: list[int], act: str = "relu", **kw: object) -> functools.partial:
    return functools.partial(mlp_pair, hidden=hidden, activation=act, **kw)


def adam(lr: float = 1e-2) -> functools.partial:
    return functools.partial(torch.optim.Adam, lr=lr)


@pytest.mark.parametrize("size", [8, 28, 32, 64, 7])
@pytest.mark.parametrize("k", [3, 4, 5])
def test_conv_pair_returns_the_input_size(size: int, k: int) -> None:
    channels = [8, 16] if size >= 8 else [8]
    enc, dec = conv_pair(in_shape=(3, size, size), enc_out=6, latent_dim=5, channels=channels, kernel_size=k)
    x = torch.rand(2, 3, size, size)
    assert enc(x).shape == (2, 6)
    assert dec(torch.randn(2, 5)).shape == (2, 3, size, size)


def test_conv_pair_rejects_points() -> None:
    with pytest.raises(IncompatibleError, match="image data"):
        conv_pair(in_shape=(2,), enc_out=2, latent_dim=2)


def test_tied_weights_share_the_encoder_matrix() -> None:
    enc, dec = mlp_pair(in_shape=(1, 8, 8), enc_out=4, latent_dim=4, hidden=[16], tied_weights=True)
    untied_enc, untied_dec = mlp_pair(in_shape=(1, 8, 8), enc_out=4, latent_dim=4, hidden=[16])
    h = torch.randn(3, 4)
    # decoder layer 1 uses W_e2ᵀ: the same numbers as an explicit transpose
    w2 = enc[2][0].weight  # (4, 16)
    assert torch.allclose(dec[0][0](h), h @ w2 + dec[0][0].bias)
    n = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert n(dec) == 16 + 64  # biases only
    assert n(untied_dec) == 4 * 16 + 16 + 16 * 64 + 64
    c_enc, c_dec = conv_pair(in_shape=(1, 8, 8), enc_out=4, latent_dim=4, channels=[4], tied_weights=True)
    assert c_dec(torch.randn(2, 4)).shape == (2, 1, 8, 8)
    assert sum(p.numel() for p in c_dec.parameters()) == 4 * 16 + 1  # biases only


def test_exact_contractive_penalty_matches_autograd_jacobian() -> None:
    torch.manual_seed(0)
    model = ContractiveAutoencoder(
        data_info=PTS, net=mlp([7, 5], act="tanh"), latent_dim=3, code_activation="sigmoid", contractive_weight=1.0
    )
    x = torch.randn(4, 2)
    expected = torch.stack(
        [torch.autograd.functional.jacobian(lambda v: model.encode(v[None])[0], xi).pow(2).sum() for xi in x]
    )
    assert torch.allclose(model.jacobian_norm(x), expected, atol=1e-6)
    # the penalty is differentiable with respect to the encoder's weights
    model.jacobian_norm(x).sum().backward()
    assert model.encoder[1][0].weight.grad is not None


def test_closed_form_sigmoid_layer_penalty_matches_autograd() -> None:
    torch.manual_seed(1)
    model = ContractiveAutoencoder(data_info=IMG, net=mlp([]), latent_dim=5, code_activation="sigmoid")
    blocks = [m for m in model.encoder if not isinstance(m, nn.Flatten)]
    assert len(blocks) == 1  # the closed-form path is the one exercised
    x = torch.rand(3, 1, 8, 8)
    general = contractive_penalty(model.encode, x)
    expected = torch.stack(
        [torch.autograd.functional.jacobian(lambda v: model.encode(v[None])[0], xi).pow(2).sum() for xi in x]
    )
    assert torch.allclose(model.jacobian_norm(x), expected, atol=1e-6)
    assert torch.allclose(general, expected, atol=1e-6)


def test_stochastic_contractive_penalty_estimates_the_exact_one() -> None:
    torch.manual_seed(2)
    model = ContractiveAutoencoder(
        data_info=PTS, net=mlp([8], act="tanh"), latent_dim=3, code_activation="sigmoid",
        contractive="stochastic", contractive_sigma=1e-3,
    )
    x = torch.randn(2000, 2)
    h = model.encode(x)
    est = torch.stack([model.penalties(x, h)["contractive"] for _ in range(20)]).mean()
    exact = model.jacobian_norm(x).mean() * model.weight
    assert torch.allclose(est, exact, rtol=0.05)


def test_linear_autoencoder_learns_the_pca_subspace() -> None:
    torch.manual_seed(0)
    # 6-D data with a clear 2-D principal subspace (distinct eigenvalues)
    basis = torch.linalg.qr(torch.randn(6, 6))[0]
    scales = torch.tensor([3.0, 2.0, 0.5, 0.3, 0.2, 0.1])
    x = (torch.randn(2000, 6) * scales) @ basis.T + 1.0
    info = DataInfo("pts6", (6,), bounded=False)
    model = Autoencoder(data_info=info, net=mlp([], act="none"), latent_dim=2, likelihood="gaussian")
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(1500):
        opt.zero_grad()
        model.loss_terms({"x": x}, "train")["loss"].backward()
        opt.step()
    decoder_cols = model.decoder[0][0].weight.detach().numpy()  # (6, 2): spans the learned subspace
    pca = PCA(data_info=info, latent_dim=2)
    pca.fit(x)
    angles = subspace_angles(decoder_cols, pca.components.numpy())
    assert np.max(angles) < 1e-2, angles


def test_pca_model_matches_numpy_svd() -> None:
    torch.manual_seed(0)
    x = torch.randn(200, 1, 8, 8).abs()
    model = PCA(data_info=IMG, latent_dim=5)
    model.fit(x)
    flat = x.flatten(1).double().numpy()
    mu = flat.mean(0)
    _, _, vt = np.linalg.svd(flat - mu, full_matrices=False)
    v = vt[:5].T
    rec = (flat - mu) @ v @ v.T + mu
    assert np.allclose(model.reconstruct(x).flatten(1).double().numpy(), rec, atol=1e-4)
    with pytest.raises(UserError, match=rf"latent_dim=100 exceeds the data dimension {IMG.dim} .*: set "
                                        rf"model.latent_dim={IMG.dim} or less"):
        PCA(data_info=IMG, latent_dim=100)


def test_denoising_corruptions() -> None:
    torch.manual_seed(0)
    x = torch.full((100, 1, 8, 8), 0.5)
    for noise, check in [
        ("masking", lambda t: ((t == 0).float().mean() - 0.3).abs() < 0.03),
        ("salt_and_pepper", lambda t: (((t == 0) | (t == 1)).float().mean() - 0.3).abs() < 0.03),
        ("gaussian", lambda t: ((t - 0.5).std() - 0.3).abs() < 0.03 and t.min() >= 0 and t.max() <= 1),
    ]:
        model = DenoisingAutoencoder(data_info=IMG, net=mlp([8]), latent_dim=2, noise=noise, noise_level=0.3)
        assert check(model.corrupt(x)), noise
        # validation sees the clean input: the loss is deterministic
        model.eval()
        a = model.loss_terms({"x": x}, "val")["loss"]
        assert torch.equal(a, model.loss_terms({"x": x}, "val")["loss"])


def test_sparse_penalties_match_hand_computation() -> None:
    torch.manual_seed(0)
    model = SparseAutoencoder(
        data_info=IMG, net=mlp([16]), latent_dim=4, code_activation="sigmoid",
        l1_weight=0.5, sparsity_target=0.1, sparsity_weight=2.0,
    )
    x = torch.rand(10, 1, 8, 8)
    terms = model.loss_terms({"x": x}, "train")
    h = model.encode(x)
    l1 = 0.5 * sum(h[i].abs().sum() for i in range(10)) / 10
    rho_hat = h.mean(0)
    kl = sum(0.1 * np.log(0.1 / r) + 0.9 * np.log(0.9 / (1 - r)) for r in rho_hat.tolist())
    assert torch.allclose(terms["l1"], l1)
    assert abs(terms["kl_sparsity"].item() - 2.0 * kl) < 1e-4
    assert torch.allclose(terms["loss"], terms["recon"] + terms["l1"] + terms["kl_sparsity"])
    with pytest.raises(UserError, match="code_activation=sigmoid"):
        SparseAutoencoder(data_info=IMG, net=mlp([16]), latent_dim=4, sparsity_target=0.1)


def test_bernoulli_reconstruction_loss_is_bce_in_nats_per_image() -> None:
    torch.manual_seed(0)
    model = Autoencoder(data_info=IMG, net=mlp([16]), latent_dim=3)
    x = torch.rand(5, 1, 8, 8)
    p = model.reconstruct(x)
    bce = -(x * p.log() + (1 - x) * (1 - p).log()).flatten(1).sum(1).mean()
    assert torch.allclose(model.loss_terms({"x": x}, "val")["recon"], bce, atol=1e-4)
    with pytest.raises(UserError, match="unbounded"):
        Autoencoder(data_info=PTS, net=mlp([4]), latent_dim=1, likelihood="bernoulli")


def test_stacked_autoencoder_trains_one_layer_pair_per_phase() -> None:
    torch.manual_seed(0)
    model = StackedAutoencoder(data_info=IMG, net=mlp([16, 8]), latent_dim=4, pretrain_epochs=2, optimizer=adam())
    assert [model.phase_at(e) for e in range(8)] == [1, 1, 2, 2, 3, 3, 0, 0]
    x = torch.rand(6, 1, 8, 8)
    for layer in [1, 2, 3, 0]:
        model.zero_grad(set_to_none=True)
        terms = model.layer_terms(x, layer) if layer else model.loss_terms({"x": x}, "val")
        terms["loss"].backward()
        enc = [b[0].weight for b in model.enc_blocks]
        dec = [b[0].weight for b in model.dec_blocks]
        for i in range(3):  # only the pair around block `layer` learns; all of them when fine-tuning
            trained = layer == 0 or i == layer - 1
            assert (enc[i].grad is not None) == trained, (layer, i)
            assert (dec[2 - i].grad is not None) == trained, (layer, i)
    # the innermost pair reconstructs the frozen 8-unit codes of the two blocks below it
    with torch.no_grad():
        a = model.enc_blocks[1](model.enc_blocks[0](x.flatten(1)))
        rec = model.dec_blocks[0](model.enc_blocks[2](a))
    assert torch.allclose(model.layer_terms(x, 3)["loss"], 0.5 * (rec - a).pow(2).sum(1).mean())


@pytest.mark.parametrize(
    ("factory", "precision", "fused"),
    [
        (adam(), "32-true", True),  # the config left it open: the fused kernel
        (adam(), "bf16-mixed", True),
        (adam(), "16-mixed", False),  # fp16 AMP's scaler unscales outside the step
        (functools.partial(torch.optim.Adam, lr=1e-2, fused=False), "32-true", False),  # the user's choice
        (functools.partial(torch.optim.Adam, lr=1e-2, foreach=True), "32-true", False),
        (functools.partial(torch.optim.SGD, lr=0.1), "32-true", True),
        (functools.partial(torch.optim.RMSprop, lr=0.1), "32-true", None),  # no fused kernel at all
    ],
)
def test_optimisers_use_the_fused_kernel_unless_told_otherwise(factory, precision: str, fused: bool | None) -> None:
    model = Autoencoder(data_info=IMG, net=mlp([16]), latent_dim=4, optimizer=factory)
    opt = make_optimizer(factory, model.parameters(), precision)  # what configure_optimizers calls
    assert opt.defaults.get("fused") == fused or (fused is False and not opt.defaults.get("fused"))
    # the same update as torch's default loop implementation
    ref = Autoencoder(data_info=IMG, net=mlp([16]), latent_dim=4, optimizer=factory)
    ref.load_state_dict(model.state_dict())
    ref_opt = factory(params=list(ref.parameters()))
    x = torch.rand(5, 1, 8, 8)
    for m, o in ((model, opt), (ref, ref_opt)):
        o.zero_grad()
        m.loss_terms({"x": x}, "train")["loss"].backward()
        o.step()
    for a, b in zip(model.parameters(), ref.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
