"""The VAE family against independent computations: torch.distributions, an exactly solvable
linear-Gaussian model, hand loops over classes, and a real Trainer for the KL warm-up."""

from __future__ import annotations

import functools
import math

import pytest
import pytorch_lightning as pl
import torch
from torch import nn
from torch.distributions import Bernoulli, MultivariateNormal, Normal, kl_divergence

from genlab.callbacks.evaluator import configured_evaluator
from genlab.capabilities import Budget, CanBoundLikelihood, capable
from genlab.data.base import DataInfo, Split, TensorLoader
from genlab.data.builtin import DigitsDataModule
from genlab.errors import IncompatibleError, UserError
from genlab.models.vae import CVAE, VAE, gaussian_kl
from genlab.nets.autoencoder import conv_pair, mlp_pair
from genlab.nets.layers import Conditioned

IMG = DataInfo("img", (1, 8, 8), num_classes=10)
PTS = DataInfo("pts", (3,), bounded=False)


def mlp(hidden: list[int], act: str = "relu") -> functools.partial:
    return functools.partial(mlp_pair, hidden=hidden, activation=act)


def adam(lr: float = 1e-2) -> functools.partial:
    return functools.partial(torch.optim.Adam, lr=lr)


def binary_digits(n: int = 256) -> torch.Tensor:
    from sklearn.datasets import load_digits

    x = torch.from_numpy(load_digits().images[:n]).float().div(16).unsqueeze(1)  # (n, 1, 8, 8)
    return (x > 0.5).float()


def test_analytic_kl_matches_torch_distributions_and_monte_carlo() -> None:
    torch.manual_seed(0)
    mu, logvar = torch.randn(4, 3), torch.randn(4, 3)
    q, p = Normal(mu, (0.5 * logvar).exp()), Normal(0.0, 1.0)
    assert torch.allclose(gaussian_kl(mu, logvar), kl_divergence(q, p), atol=1e-6)
    h = q.sample((200_000,))  # (S, 4, 3)
    mc = (q.log_prob(h) - p.log_prob(h)).mean(0)
    assert torch.allclose(gaussian_kl(mu, logvar), mc, atol=0.03)


@pytest.mark.parametrize("likelihood,learn_sigma", [("bernoulli", False), ("gaussian", False), ("gaussian", True)])
def test_neg_elbo_matches_torch_distributions(likelihood: str, learn_sigma: bool) -> None:
    torch.manual_seed(0)
    model = VAE(data_info=IMG, net=mlp([16]), latent_dim=3, likelihood=likelihood, gaussian_sigma=0.7,
                learn_sigma=learn_sigma)
    if learn_sigma:
        with torch.no_grad():
            model.log_sigma.fill_(-0.4)
    x = binary_digits(5)
    torch.manual_seed(1)
    got = model.neg_elbo(x)
    torch.manual_seed(1)  # the same draw, by hand
    mu, logvar = model.encoder(x).chunk(2, dim=1)
    std = (0.5 * logvar).exp()
    out = model.decoder(mu + std * torch.randn_like(mu))
    if likelihood == "bernoulli":
        log_px = Bernoulli(logits=out).log_prob(x)
    else:
        log_px = Normal(out, math.exp(-0.4) if learn_sigma else 0.7).log_prob(x)
    kl = kl_divergence(Normal(mu, std), Normal(0.0, 1.0)).sum(1)
    assert torch.allclose(got, -log_px.flatten(1).sum(1) + kl, rtol=1e-5, atol=1e-4)
    if learn_sigma:  # σ is trained and logged
        terms = model.loss_terms({"x": x}, "train")
        terms["loss"].backward()
        assert model.log_sigma.grad is not None and terms["sigma"].item() == pytest.approx(math.exp(-0.4))


def test_learn_sigma_needs_a_gaussian_likelihood() -> None:
    with pytest.raises(UserError, match="learn_sigma"):
        VAE(data_info=IMG, net=mlp([8]), likelihood="bernoulli", learn_sigma=True)


def _exact_linear_gaussian(sigma: float = 0.5) -> tuple[VAE, MultivariateNormal]:
    """x = w h + b + σε with h ~ N(0, 1) in 3-D, the encoder set to the exact posterior
    (q = p(h|x): variance v = 1/(1 + wᵀw/σ²), mean v wᵀ(x − b)/σ²); and the exact p(x)."""
    torch.manual_seed(0)
    model = VAE(data_info=PTS, net=mlp([], act="none"), latent_dim=1, likelihood="gaussian", gaussian_sigma=sigma)
    dec, enc = model.decoder[0][0], model.encoder[1][0]  # Linear(1, 3), Linear(3, 2)
    w, b = torch.tensor([[1.0], [-0.5], [0.8]]), torch.tensor([0.2, 0.1, -0.3])
    v = 1.0 / (1.0 + (w.T @ w).item() / sigma**2)
    with torch.no_grad():
        dec.weight.copy_(w), dec.bias.copy_(b)
        enc.weight.copy_(torch.cat([v * w.T / sigma**2, torch.zeros(1, 3)]))
        enc.bias.copy_(torch.tensor([-(v * w.T @ b / sigma**2).item(), math.log(v)]))
    return model, MultivariateNormal(b, w @ w.T + sigma**2 * torch.eye(3))


def test_iwae_is_exact_with_the_exact_posterior_and_tightens_otherwise() -> None:
    model, px = _exact_linear_gaussian()
    x = px.sample((6,))
    nll = -px.log_prob(x)
    # every importance weight equals p(x): any k gives −log p(x), constants included
    assert torch.allclose(model.iwae_nll(x, k=3, chunk=2), nll, atol=1e-4)
    assert torch.allclose(model.neg_elbo(x.repeat(20000, 1)).view(20000, 6).mean(0), nll, atol=0.02)
    with torch.no_grad():
        model.encoder[1][0].bias[0] += 0.7  # a wrong posterior mean: the bounds are loose
    xs = x.repeat(400, 1)
    k1, k50 = (model.iwae_nll(xs, k=k, chunk=25).view(400, 6).mean(0) for k in (1, 50))
    assert (k1 > k50).all() and (k50 > nll - 0.01).all()
    assert (k50 - nll).abs().max() < 0.25 * (k1 - nll).min()


def test_iwae_with_one_sample_is_the_elbo_in_expectation() -> None:
    torch.manual_seed(0)
    model = VAE(data_info=IMG, net=mlp([16]), latent_dim=3)
    x = binary_digits(4).repeat(5000, 1, 1, 1)
    a, b = model.iwae_nll(x, k=1, chunk=1), model.neg_elbo(x)
    se = math.sqrt(a.var() / len(a) + b.var() / len(b))
    assert abs(a.mean() - b.mean()) < 4 * se


def test_iwae_with_many_samples_is_below_the_elbo_of_a_trained_model() -> None:
    torch.manual_seed(0)
    model = VAE(data_info=IMG, net=mlp([32]), latent_dim=4)
    opt, x = torch.optim.Adam(model.parameters(), lr=3e-3), binary_digits(256)
    for step in range(60):
        opt.zero_grad()
        model.loss_terms({"x": x[(step % 4) * 64 : (step % 4 + 1) * 64]}, "train")["loss"].backward()
        opt.step()
    with torch.no_grad():
        x = x[:32]
        elbo = torch.stack([model.neg_elbo(x) for _ in range(20)]).mean(0)
        iwae = model.iwae_nll(x, k=200, chunk=64)
    assert iwae.mean() < elbo.mean() - 0.2  # a tighter bound: Jensen gap of about 0.4 nats here
    assert (iwae < elbo + 0.5).all()


def test_chunked_iwae_equals_unchunked_for_the_same_draws() -> None:
    model = VAE(data_info=IMG, net=mlp([16]), latent_dim=3)
    x = binary_digits(7)
    torch.manual_seed(3)
    whole = model.iwae_nll(x, k=12, chunk=12)
    torch.manual_seed(3)
    assert torch.allclose(model.iwae_nll(x, k=12, chunk=5), whole, atol=1e-5)


def test_free_bits_clamp_the_batch_mean_kl_of_each_dimension() -> None:
    model = VAE(data_info=IMG, net=mlp([8]), latent_dim=2, free_bits=0.5, beta=3.0)
    kl = torch.tensor([[0.1, 1.0], [0.3, 2.0]], requires_grad=True)  # batch means 0.2 and 1.5
    pen = model.kl_penalty(kl)
    assert pen.item() == pytest.approx(0.5 + 1.5)
    pen.backward()  # the dimension below λ gets no gradient
    assert torch.equal(kl.grad, torch.tensor([[0.0, 0.5], [0.0, 0.5]]))
    x = binary_digits(6)
    terms = model.loss_terms({"x": x}, "val")
    kl_dims = model.kl_per_dim(x)  # the KL is analytic: no dependence on the sample
    expected = 3.0 * kl_dims.mean(0).clamp(min=0.5).sum()
    assert (terms["loss"] - terms["recon"]).item() == pytest.approx(expected.item(), rel=1e-5)
    assert terms["kl"].item() == pytest.approx(kl_dims.sum(1).mean().item(), rel=1e-5)  # logged unclamped
    assert sorted(k for k in terms if k.startswith("kl_dim/")) == ["kl_dim/00", "kl_dim/01"]


def test_kl_warmup_ramps_beta_per_step_from_zero() -> None:
    torch.manual_seed(0)
    model = VAE(data_info=IMG, net=mlp([8]), latent_dim=2, beta=2.0, kl_warmup_epochs=2, optimizer=adam())
    seen: list[tuple[float, float]] = []
    loss_terms = model.loss_terms

    def spy(batch: dict, stage: str) -> dict:
        terms = loss_terms(batch, stage)
        seen.append((terms["beta"].item(), (terms["loss"] - terms["recon"]).item()))
        return terms

    model.loss_terms = spy  # type: ignore[method-assign]
    trainer = pl.Trainer(max_epochs=3, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, accelerator="cpu")
    trainer.fit(model, train_dataloaders=TensorLoader(Split(binary_digits(40)), 10, shuffle=False))
    assert [b for b, _ in seen] == pytest.approx([2.0 * min(1.0, (e + i / 4) / 2) for e in range(3) for i in range(4)])
    assert seen[0][1] == 0.0  # β = 0 at step 0: the loss is the reconstruction term alone
    assert model.kl_weight() == 2.0 and "beta" not in loss_terms({"x": binary_digits(4)}, "val")


def test_nets_with_a_condition_have_the_right_inputs_and_shapes() -> None:
    torch.manual_seed(0)
    c = torch.eye(10)[torch.tensor([1, 7])]  # (2, 10) one-hot
    enc, dec = mlp_pair(in_shape=(1, 8, 8), enc_out=6, latent_dim=3, hidden=[16], cond_dim=10)
    assert isinstance(enc, Conditioned) and enc.net[1][0].in_features == 64 + 10 and dec.net[0][0].in_features == 13
    x = torch.rand(2, 1, 8, 8)
    assert enc(x, c).shape == (2, 6) and dec(torch.randn(2, 3), c).shape == (2, 1, 8, 8)
    for size, channels in ((28, [8, 16]), (32, [8, 16]), (64, [8, 16, 32])):
        enc, dec = conv_pair(in_shape=(3, size, size), enc_out=6, latent_dim=3, channels=channels, cond_dim=10)
        x = torch.rand(2, 3, size, size)
        assert enc.net[0][0].in_channels == 3 + 10 and dec.net[0][0].in_features == 13
        assert enc(x, c).shape == (2, 6) and dec(torch.randn(2, 3), c).shape == (2, 3, size, size)
    planes = c[:, :, None, None].expand(-1, -1, 64, 64)  # the condition as constant input planes
    assert torch.equal(enc(x, c), enc.net(torch.cat([x, planes], dim=1)))
    assert isinstance(mlp_pair(in_shape=(4,), enc_out=2, latent_dim=2)[0], nn.Sequential)  # cond_dim = 0: unchanged
    with pytest.raises(ValueError, match="tied_weights"):
        mlp_pair(in_shape=(4,), enc_out=2, latent_dim=2, tied_weights=True, cond_dim=3)


def test_cvae_samples_the_requested_classes_from_a_decoder_that_uses_them() -> None:
    torch.manual_seed(0)
    model = CVAE(data_info=IMG, net=mlp([16]), latent_dim=3)
    y = torch.tensor([0, 3, 3, 9])
    torch.manual_seed(5)
    samples = model.sample(4, y=y)
    torch.manual_seed(5)
    assert torch.allclose(samples, model.decode(torch.randn(4, 3), y=y))  # h ~ N(0, I) decoded with y
    assert samples.shape == (4, 1, 8, 8) and model.sample(6).shape == (6, 1, 8, 8)
    h, x = torch.randn(4, 3), binary_digits(4)
    assert not torch.allclose(model.decode(h, y=torch.zeros(4)), model.decode(h, y=torch.ones(4)))
    assert not torch.allclose(model.encode(x, y=torch.zeros(4)), model.encode(x, y=torch.ones(4)))
    assert capable(model, CanBoundLikelihood) and model.iwae_nll(x, 4, 3, y=y).shape == (4,)
    bounds = {b.name: b for b in model.likelihood_bounds(Budget(samples=4, chunk=3))}
    assert set(bounds) == {"neg_elbo", "iwae_nll"} and {b.unit for b in bounds.values()} == {"nats"}
    torch.manual_seed(6)
    via_bound = bounds["iwae_nll"].per_sample(x, y)
    torch.manual_seed(6)
    assert torch.equal(via_bound, model.iwae_nll(x, 4, 3, y=y))  # the bound is the model's IWAE with k = samples


def test_cvae_without_labels_uses_the_class_with_the_best_elbo() -> None:
    torch.manual_seed(0)
    model = CVAE(data_info=IMG, net=mlp([16]), latent_dim=3)
    x = binary_digits(6)
    scores = []
    for k in range(10):  # by hand: the plug-in ELBO of x under each class
        yk = torch.full((6,), k)
        mu, logvar = model.posterior(x, y=yk)
        log_px = Bernoulli(logits=model.decoder_raw(mu, torch.eye(10)[yk])).log_prob(x).flatten(1).sum(1)
        scores.append(log_px - gaussian_kl(mu, logvar).sum(1))
    best = torch.stack(scores).argmax(0)
    assert torch.equal(model.infer_labels(x), best)
    assert torch.allclose(model.reconstruct(x), model.reconstruct(x, y=best))


def test_cvae_rejects_unlabelled_data() -> None:
    with pytest.raises(IncompatibleError, match="labels"):
        CVAE(data_info=DataInfo("unlabelled", (1, 8, 8), num_classes=None), net=mlp([8]))


@pytest.mark.parametrize("cls", [VAE, CVAE])
def test_evaluator_scores_likelihoods_reproducibly(cls: type[VAE], monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(0)
    dm = DigitsDataModule(max_train=200, binarize=True)
    dm.setup()
    model = cls(data_info=dm.info, net=mlp([32]), latent_dim=4).eval()
    monkeypatch.setattr(CVAE, "infer_labels", lambda *a: pytest.fail("the evaluator must pass the labels"))
    ev = configured_evaluator(overrides=["metrics.probes.max_train=200", "metrics.likelihood.samples=20",
                                         "metrics.likelihood.chunk=7"])
    state = torch.get_rng_state()
    first, again = ev.evaluate(model, dm), ev.evaluate(model, dm)
    assert torch.equal(torch.get_rng_state(), state)  # training's random stream is untouched
    assert first == again and first["test/iwae_nll"] < first["test/neg_elbo"]
    assert first.units == {"test/neg_elbo": "nats", "test/iwae_nll": "nats"}  # named by the model's own bounds
    test = dm.tensors("test")
    with torch.no_grad():
        mu = model.encode(test.x, y=test.y) if cls is CVAE else model.encode(test.x)
    assert first["test/active_units"] == (mu.var(0) > 0.01).sum().item()
