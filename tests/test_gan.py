"""The GAN family against independent computations: the losses from their textbook formulas,
the gradient penalty from per-sample autograd and a linear critic's closed form, optimiser
step counts, the EMA recursion by hand, InfoGAN's information term from torch.distributions,
and short real trainings (a NaN stops them with a clear error; a few hundred steps move
samples towards the ring of 8 modes)."""

from __future__ import annotations

import functools
import math

import pytest
import pytorch_lightning as pl
import torch
from torch import Tensor, nn
from torch.distributions import Categorical, Normal

from genlab.data.base import DataInfo
from genlab.data.builtin import Toy2dDataModule
from genlab.errors import IncompatibleError, UserError
from genlab.figures import grids_figure
from genlab.models.gan import CGAN, GAN
from genlab.models.infogan import InfoGAN
from genlab.models.wgan_gp import WGANGP, gradient_penalty
from genlab.nets.gan import dcgan, layer_sizes, mlp_gan
from genlab.run import load_model

PTS = DataInfo("pts", (2,), bounded=False)
IMG = DataInfo("img", (1, 8, 8), num_classes=10)


def mlp(hidden: tuple[int, ...] = (16,)) -> functools.partial:
    return functools.partial(mlp_gan, hidden=list(hidden))


def adam(lr: float = 1e-3) -> functools.partial:
    return functools.partial(torch.optim.Adam, lr=lr, betas=(0.5, 0.999))


def toy(n: int = 320, batch_size: int = 32) -> Toy2dDataModule:
    dm = Toy2dDataModule(kind="ring8", n_samples=n, batch_size=batch_size, val_fraction=0.1)
    dm.setup("fit")
    return dm


def fit(model: pl.LightningModule, dm: Toy2dDataModule, batches: int, callbacks: list | None = None,
        epochs: int = 1) -> pl.Trainer:
    trainer = pl.Trainer(
        max_epochs=epochs, limit_train_batches=batches, limit_val_batches=0, logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        callbacks=callbacks or [], accelerator="cpu",
    )
    trainer.fit(model, datamodule=dm)
    return trainer


def logits(model: GAN, x: Tensor) -> Tensor:
    return model.d_head(model.body(x)).squeeze(1)


@pytest.mark.parametrize("loss", ["non_saturating", "minimax"])
def test_gan_losses_match_the_textbook_formulas(loss: str) -> None:
    torch.manual_seed(0)
    model = GAN(data_info=PTS, net=mlp(), loss=loss, latent_dim=3)
    x = torch.randn(6, 2)
    torch.manual_seed(1)
    d_obj, d_terms = model.discriminator_objective(x, None)
    torch.manual_seed(1)  # the same noise, by hand: D(x) = σ(logit)
    d_real, d_fake = torch.sigmoid(logits(model, x)), torch.sigmoid(logits(model, model.generator(model.draw_noise(6))))
    hand_d = -(torch.log(d_real).mean() + torch.log(1 - d_fake).mean())
    assert torch.allclose(d_obj, hand_d, atol=1e-6) and torch.allclose(d_terms["d_loss"], hand_d, atol=1e-6)
    assert d_terms["d_real"].item() == pytest.approx(d_real.mean().item(), abs=1e-6)
    assert d_terms["d_fake"].item() == pytest.approx(d_fake.mean().item(), abs=1e-6)

    torch.manual_seed(2)
    g_obj, _ = model.generator_objective(5, None)
    torch.manual_seed(2)
    d_g = torch.sigmoid(logits(model, model.generator(model.draw_noise(5))))
    hand_g = torch.log(1 - d_g).mean() if loss == "minimax" else -torch.log(d_g).mean()
    assert torch.allclose(g_obj, hand_g, atol=1e-6)


def test_validation_terms_use_the_fixed_noise_and_report_the_js_estimate() -> None:
    torch.manual_seed(0)
    model = GAN(data_info=PTS, net=mlp(), latent_dim=3).eval()
    batch = {"x": torch.randn(7, 2)}
    with torch.no_grad():
        a, b = model.loss_terms(batch, "val"), model.loss_terms(batch, "val")
        fake_logits = logits(model, model.generator(model.fixed_noise))
    assert all(torch.equal(a[k], b[k]) for k in a)  # no random draw: comparable across epochs
    d_real, d_fake = torch.sigmoid(logits(model, batch["x"])), torch.sigmoid(fake_logits)
    d_loss = -torch.log(d_real).mean() - torch.log(1 - d_fake).mean()
    assert a["d_loss"].item() == pytest.approx(d_loss.item(), abs=1e-5)
    assert a["loss"].item() == pytest.approx(math.log(2) - 0.5 * d_loss.item(), abs=1e-5)


def test_gradient_penalty_matches_per_sample_autograd_and_a_linear_critic() -> None:
    torch.manual_seed(0)
    critic = nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 1))
    real, fake, eps = torch.randn(5, 3), torch.randn(5, 3), torch.rand(5)
    got = gradient_penalty(lambda v: critic(v).squeeze(1), real, fake, eps)
    hand = []
    for i in range(5):  # one interpolate at a time
        x_hat = (eps[i] * real[i] + (1 - eps[i]) * fake[i]).requires_grad_(True)
        (g,) = torch.autograd.grad(critic(x_hat[None]).sum(), x_hat)
        hand.append((g.norm() - 1) ** 2)
    assert got.item() == pytest.approx(torch.stack(hand).mean().item(), rel=1e-5)
    got.backward()  # differentiable with respect to the critic's weights
    assert critic[0].weight.grad is not None and critic[0].weight.grad.abs().sum() > 0
    w = torch.tensor([0.3, -2.0, 1.0])  # D(x) = w·x: ∇D = w everywhere
    assert gradient_penalty(lambda v: v @ w, real, fake, eps).item() == pytest.approx((w.norm().item() - 1) ** 2)


def test_wgan_gp_critic_objective_by_hand_and_no_batch_norm() -> None:
    torch.manual_seed(0)
    model = WGANGP(data_info=PTS, net=mlp(), gp_weight=10.0, latent_dim=3)
    x = torch.randn(6, 2)
    torch.manual_seed(1)
    obj, terms = model.discriminator_objective(x, None)
    torch.manual_seed(1)  # noise first, then the interpolation weights
    fake = model.generator(model.draw_noise(6))
    eps = torch.rand(6)
    gp = gradient_penalty(lambda v: logits(model, v), x, fake, eps)
    wasserstein = logits(model, x).mean() - logits(model, fake).mean()
    assert terms["d_loss"].item() == pytest.approx(-wasserstein.item(), abs=1e-5)
    assert obj.item() == pytest.approx(-wasserstein.item() + 10.0 * gp.item(), abs=1e-4)
    assert model.divergence(terms["d_loss"]).item() == pytest.approx(wasserstein.item(), abs=1e-5)
    with pytest.raises(UserError, match="d_norm"):
        WGANGP(data_info=DataInfo("img", (1, 16, 16)), net=functools.partial(dcgan, width=4, d_norm="batch"))
    WGANGP(data_info=DataInfo("img", (1, 16, 16)), net=functools.partial(dcgan, width=4, d_norm="layer"))


@pytest.mark.parametrize(
    "size,sizes", [(28, [28, 14, 7]), (32, [32, 16, 8, 4]), (64, [64, 32, 16, 8, 4]), (8, [8, 4]), (7, [7, 3])]
)
def test_dcgan_layer_plan_and_shapes(size: int, sizes: list[int]) -> None:
    assert [h for h, _ in layer_sizes(size, size)] == sizes
    for c in (1, 3):
        torch.manual_seed(0)
        model = CGAN(data_info=DataInfo("img", (c, size, size), num_classes=4), net=functools.partial(dcgan, width=8))
        x = model.sample(3, y=torch.tensor([0, 1, 3]))
        assert x.shape == (3, c, size, size) and 0 <= x.min() and x.max() <= 1  # tanh mapped to [0, 1]
        assert model.critic(2 * x - 1, model.condition(torch.tensor([0, 1, 3]), 3)).shape == (3,)


def test_mlp_gan_shapes_for_points_and_flattened_images() -> None:
    torch.manual_seed(0)
    points = GAN(data_info=PTS, net=mlp((8, 8)), latent_dim=2).sample(4)
    assert points.shape == (4, 2) and points.abs().max() > 0  # linear output: unbounded
    assert GAN(data_info=IMG, net=mlp()).sample(4).shape == (4, 1, 8, 8)
    with pytest.raises(IncompatibleError, match="image data"):
        GAN(data_info=PTS, net=functools.partial(dcgan))


def test_cgan_samples_depend_on_the_class() -> None:
    torch.manual_seed(0)
    model = CGAN(data_info=IMG, net=mlp()).eval()
    draw = lambda y: (torch.manual_seed(3), model.sample(4, y=torch.full((4,), y)))[1]
    assert torch.equal(draw(2), draw(2))
    assert not torch.allclose(draw(2), draw(5), atol=1e-4)
    with pytest.raises(ValueError, match="labels"):
        model.sample(3, y=torch.tensor([1]))
    with pytest.raises(IncompatibleError, match=r"conditional on class labels, and '.*' has none\. Pick a labelled "
                                                r"dataset \(e\.g\. data=digits, toy2d\)"):
        CGAN(data_info=PTS, net=mlp())


def test_fixed_noise_is_a_saved_buffer_that_moves_with_the_module() -> None:
    a, b = (GAN(data_info=PTS, net=mlp(), latent_dim=3, n_fixed=10) for _ in range(2))
    assert "fixed_noise" in a.state_dict() and a.fixed_noise.shape == (10, 3)
    assert torch.equal(a.fixed_noise, b.fixed_noise)  # drawn from a fixed seed
    assert a.to(torch.float64).fixed_noise.dtype == torch.float64
    b.fixed_noise.zero_()
    b.load_state_dict(a.state_dict())
    assert torch.equal(a.fixed_noise, b.fixed_noise)
    uniform = GAN(data_info=PTS, net=mlp(), latent_dim=3, prior="uniform", n_fixed=500).fixed_noise
    assert uniform.min() >= -1 and uniform.max() <= 1 and uniform.std() == pytest.approx(1 / math.sqrt(3), rel=0.1)


def test_k_discriminator_steps_per_generator_step() -> None:
    torch.manual_seed(0)
    model = GAN(data_info=PTS, net=mlp(), latent_dim=2, d_steps=3, optimizer_g=adam(), optimizer_d=adam())
    trainer = fit(model, toy(), batches=6)
    opt_g, opt_d = trainer.optimizers
    steps = lambda opt: {int(s["step"]) for s in opt.state.values()}  # Adam counts its own steps
    assert steps(opt_d) == {6} and steps(opt_g) == {2}


def test_ema_follows_the_recursion() -> None:
    torch.manual_seed(0)
    model = GAN(data_info=PTS, net=mlp(), latent_dim=2, ema=0.3, optimizer_g=adam(1e-2), optimizer_d=adam(1e-2))
    seen: list[list[Tensor]] = []

    class Record(pl.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            seen.append([p.detach().clone() for p in pl_module.generator.parameters()])

    fit(model, toy(), batches=6, callbacks=[Record()])
    expected = seen[0]  # the first update copies G's weights (torch's AveragedModel)
    for t, theta in enumerate(seen[1:], start=1):  # then after every generator step, the decay warming up
        d = min(0.3, (1 + t) / (10 + t))  # 0.18, 0.25, then 0.3
        expected = [d * e + (1 - d) * p for e, p in zip(expected, theta)]
    for e, got in zip(expected, model.generator_ema.module.parameters()):
        assert torch.allclose(got, e, atol=1e-6)
    assert int(model.generator_ema.n_averaged) == 6 and "generator_ema.n_averaged" in model.state_dict()
    assert not torch.allclose(seen[-1][0], expected[0])  # it lags the generator
    assert not any(p.requires_grad for p in model.generator_ema.parameters())  # no optimiser touches it


def test_grad_clip_bounds_each_players_update_and_trainer_clipping_is_refused(make_cfg) -> None:
    from genlab.train import train

    torch.manual_seed(0)
    sgd = functools.partial(torch.optim.SGD, lr=1.0)
    model = GAN(data_info=PTS, net=mlp(), latent_dim=2, grad_clip=1e-3, optimizer_g=sgd, optimizer_d=sgd)
    d_before = torch.cat([p.detach().flatten().clone() for p in model.body.parameters()])
    fit(model, toy(), batches=1)
    moved = (torch.cat([p.detach().flatten() for p in model.body.parameters()]) - d_before).norm()
    assert 0 < moved <= 1e-3 * 1.0001  # the head shares the clipped norm, so the body moves at most lr·c

    cfg = make_cfg("model=gan", "data=toy2d", "data.n_samples=200", "trainer=debug", "logger=csv",
                   "trainer.gradient_clip_val=0.5")
    with pytest.raises(UserError, match="model.grad_clip=0.5"):
        train(cfg)


def test_a_nan_stops_training_naming_the_player_term_and_step(monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(0)
    model = GAN(data_info=PTS, net=mlp(), latent_dim=2, optimizer_g=adam(), optimizer_d=adam())

    class Poison(pl.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
            if batch_idx == 2:
                with torch.no_grad():
                    pl_module.d_head.bias.fill_(float("nan"))

    with pytest.raises(UserError, match=r"discriminator's loss term 'd_loss' is nan at global step 4"):
        fit(model, toy(), batches=5, callbacks=[Poison()])  # 2 batches: 2 D + 2 G steps before

    model = GAN(data_info=PTS, net=mlp(), latent_dim=2, optimizer_g=adam(), optimizer_d=adam())
    objective = model.generator_objective

    def poisoned(n: int, c: Tensor | None) -> tuple[Tensor, dict[str, Tensor]]:
        loss, terms = objective(n, c)
        return loss, {**terms, "g_loss": terms["g_loss"] * float("inf")}

    monkeypatch.setattr(model, "generator_objective", poisoned)
    with pytest.raises(UserError, match=r"generator's loss term 'g_loss' is (inf|-inf) at global step 1"):
        fit(model, toy(), batches=3)


def test_infogan_information_term_matches_torch_distributions() -> None:
    torch.manual_seed(0)
    for continuous_loss in ("gaussian", "mse"):
        model = InfoGAN(data_info=IMG, net=mlp(), n_categories=3, n_continuous=2, latent_dim=4,
                        continuous_loss=continuous_loss)
        inputs = model.generator_input(6)  # (6, 4 + 3 + 2)
        assert inputs.shape == (6, 9) and torch.equal(inputs[:, 4:7].sum(1), torch.ones(6))
        feats = torch.randn(6, model.d_head.in_features)
        terms = model.info_terms(inputs, feats)
        q = model.q_head(feats)
        c, u = inputs[:, 4:7].argmax(1), inputs[:, 7:]
        ce = -Categorical(logits=q[:, :3]).log_prob(c).mean()
        if continuous_loss == "gaussian":
            cont = -Normal(q[:, 3:5], q[:, 5:7].exp()).log_prob(u).sum(1).mean()
        else:
            cont = 0.5 * (u - q[:, 3:5]).pow(2).sum(1).mean()
        assert terms["info_cat"].item() == pytest.approx(ce.item(), rel=1e-5)
        assert terms["info_cont"].item() == pytest.approx(cont.item(), rel=1e-5)
        assert terms["info"].item() == pytest.approx((ce + cont).item(), rel=1e-5)


def test_infogan_code_traversals() -> None:
    torch.manual_seed(0)
    model = InfoGAN(data_info=IMG, net=mlp(), n_categories=3, n_continuous=2, latent_dim=4).eval()
    traversals = model.code_traversals(steps=5)
    grids = torch.stack([t.images for t in traversals])
    assert grids.shape == (2, 3 * 5, 1, 8, 8)
    assert [t.row_labels for t in traversals] == [("category 0", "category 1", "category 2")] * 2
    assert [t.title.split(":")[0] for t in traversals] == ["continuous code u1", "continuous code u2"]
    assert traversals[0].column_labels[0] == "u=−1" and traversals[0].column_labels[-1] == "u=1"
    z = model.fixed_noise[:1, :4]
    for j, r, k in [(0, 0, 0), (1, 2, 4), (1, 1, 2)]:  # grid j, row r (category), column k (code j)
        u = torch.zeros(1, 2)
        u[0, j] = torch.linspace(-1, 1, 5)[k]
        expected = (torch.tanh(model.generator(model.with_codes(z, torch.tensor([r]), u))) + 1) / 2
        assert torch.allclose(grids[j, r * 5 + k], expected[0], atol=1e-6)
    fig = grids_figure(traversals)  # one labelled block per code, as code_traversals.png shows them
    assert len(fig.axes) == 2 and all(ax.get_yticklabels()[0].get_text() == "category 0" for ax in fig.axes)
    only_categories = InfoGAN(data_info=IMG, net=mlp(), n_categories=3, n_continuous=0, latent_dim=4)
    (only_categories,) = only_categories.code_traversals(steps=4)
    assert only_categories.images.shape == (12, 1, 8, 8) and "different noise" in only_categories.title


def test_infogan_reloads_from_its_checkpoint(tmp_path) -> None:
    torch.manual_seed(0)
    model = InfoGAN(data_info=IMG, net=mlp(), n_categories=3, n_continuous=1, latent_dim=4, ema=0.9,
                    optimizer_g=adam(), optimizer_d=adam())
    trainer = pl.Trainer(logger=False, enable_checkpointing=False, accelerator="cpu")
    trainer.strategy.connect(model)
    net = {"_target_": "genlab.nets.gan.mlp_gan", "_partial_": True, "hidden": [16]}
    model.config_record = {"_target_": "genlab.models.infogan.InfoGAN", "n_categories": 3, "n_continuous": 1,
                           "latent_dim": 4, "ema": 0.9, "net": net}
    trainer.save_checkpoint(tmp_path / "m.ckpt")  # plain data: weights and the config, no pickled objects
    again = load_model(None, tmp_path / "m.ckpt").eval()
    assert again.n_categories == 3 and torch.equal(again.fixed_noise, model.fixed_noise)
    assert torch.equal(again.traversal_images(3), model.eval().traversal_images(3))


def test_a_short_training_moves_samples_towards_the_ring() -> None:
    torch.manual_seed(0)
    dm = toy(n=2000, batch_size=64)
    model = GAN(data_info=dm.info, net=mlp((64, 64)), latent_dim=4, optimizer_g=adam(2e-3), optimizer_d=adam(2e-3))
    to_ring = lambda: torch.cdist(model.eval().sample(1000), dm.modes).min(1).values.mean().item()
    with torch.no_grad():
        before = to_ring()
    fit(model, dm, batches=25, epochs=10)  # 230 steps of each player (23 batches an epoch)
    with torch.no_grad():
        after = to_ring()
    assert before > 1.0 and after < 0.6 * before
