"""The restricted Boltzmann machine (genlab/models/rbm.py) against brute force on tiny machines: the free
energy, the exact log Z by enumeration, the CD gradient of its surrogate loss, and AIS's log Z."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import pytest
import torch
from conftest import FAST, TINY

from genlab.capabilities import (
    Budget,
    CanBoundLikelihood,
    CanEncode,
    CanReconstruct,
    CanSample,
    capable,
)
from genlab.data.base import DataInfo
from genlab.errors import UserError
from genlab.models.rbm import RBM


def tiny_rbm(d: int, h: int, visible: str = "bernoulli", scale: float = 1.0, seed: int = 0, **kwargs) -> RBM:
    """A (1, 1, d) 'image' RBM with random parameters of size ``scale``."""
    torch.manual_seed(seed)
    model = RBM(data_info=DataInfo(name="tiny", shape=(1, 1, d)), n_hidden=h, visible=visible, **kwargs)
    with torch.no_grad():
        model.W.copy_(scale * torch.randn(d, h))
        model.visible_bias.copy_(0.5 * scale * torch.randn(d))
        model.hidden_bias.copy_(0.5 * scale * torch.randn(h))
    return model.double()


def states(n: int) -> torch.Tensor:
    return torch.tensor(list(itertools.product([0.0, 1.0], repeat=n)), dtype=torch.float64)  # (2^n, n)


def energy(model: RBM, v: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """E(v, h) for every pair of rows: (Nv, D), (Nh, H) -> (Nv, Nh), written out from the definition."""
    a, b, W = model.visible_bias.detach(), model.hidden_bias.detach(), model.W.detach()
    return -(v @ a)[:, None] - (h @ b)[None, :] - v @ W @ h.T


def test_free_energy_marginalises_the_hidden_units() -> None:
    model = tiny_rbm(6, 4)
    v = states(6)
    brute = -torch.logsumexp(-energy(model, v, states(4)), dim=1)  # −log Σ_h e^{−E(v, h)}
    torch.testing.assert_close(model.free_energy(v).detach(), brute)


def test_exact_log_z_matches_brute_force_over_visible_and_hidden() -> None:
    model = tiny_rbm(6, 4)
    brute = torch.logsumexp(-energy(model, states(6), states(4)).flatten(), 0).item()
    assert model.exact_log_z() == pytest.approx(brute, abs=1e-9)
    assert model.exact_log_z(chunk=3) == pytest.approx(brute, abs=1e-9)  # chunks combine


def test_gaussian_exact_log_z_matches_numerical_integration() -> None:
    # one Gaussian visible unit, 3 hidden: Z = Σ_h ∫ exp(½‖v − a‖²·(−1) + bᵀh + vᵀWh) dv by quadrature
    model = tiny_rbm(1, 3, visible="gaussian")
    v = torch.linspace(-30, 30, 200001, dtype=torch.float64)[:, None]
    log_p_star = -model.free_energy(v).detach()
    log_z = (torch.logsumexp(log_p_star, 0) + math.log(v[1, 0] - v[0, 0])).item()
    assert model.exact_log_z() == pytest.approx(log_z, abs=1e-6)


def test_cd_surrogate_gradient_is_the_positive_minus_the_negative_phase() -> None:
    model = tiny_rbm(5, 3, weight_decay=0.0)
    torch.manual_seed(1)
    v_data = torch.rand(7, 5, dtype=torch.float64)
    v_model = torch.bernoulli(torch.full((9, 5), 0.5, dtype=torch.float64))  # fixed negative samples
    model.negative_samples = lambda v, stage: (v_model, None)  # the chain's output, held fixed
    terms = model.loss_terms({"x": v_data.view(7, 1, 1, 5)}, "train")
    model.zero_grad()
    terms["loss"].backward()
    W, b = model.W.detach(), model.hidden_bias.detach()
    q_data, q_model = torch.sigmoid(v_data @ W + b), torch.sigmoid(v_model @ W + b)
    # the log-likelihood gradient is <v hᵀ>_data − <v hᵀ>_model; the loss's gradient is its negative
    dW = v_data.T @ q_data / 7 - v_model.T @ q_model / 9
    da = v_data.mean(0) - v_model.mean(0)
    db = q_data.mean(0) - q_model.mean(0)
    torch.testing.assert_close(model.W.grad, -dW)
    torch.testing.assert_close(model.visible_bias.grad, -da)
    torch.testing.assert_close(model.hidden_bias.grad, -db)


def test_weight_decay_and_sparsity_add_their_gradients() -> None:
    model = tiny_rbm(5, 3, weight_decay=0.1, sparsity_target=0.1, sparsity_cost=0.5)
    v_data = torch.rand(4, 5, dtype=torch.float64)
    model.negative_samples = lambda v, stage: (v, None)  # negative phase = positive phase: only the penalties remain
    terms = model.loss_terms({"x": v_data.view(4, 1, 1, 5)}, "train")
    model.zero_grad()
    terms["loss"].backward()
    W, b = model.W.detach(), model.hidden_bias.detach()
    q = torch.sigmoid(v_data @ W + b)
    torch.testing.assert_close(model.hidden_bias.grad, 0.5 * (q - 0.1).mean(0))
    torch.testing.assert_close(model.W.grad, 0.1 * W + 0.5 * v_data.T @ (q - 0.1) / 4)
    assert terms["sparsity"].item() >= 0


def test_pcd_chains_persist_across_batches_and_checkpoints() -> None:
    model = tiny_rbm(5, 3, persistent=True, n_chains=6, cd_k=2)
    x = torch.rand(4, 1, 1, 5, dtype=torch.float64)
    model.loss_terms({"x": x}, "train")  # the chains start from this batch, repeated to 6
    assert model.chains.shape == (6, 5) and bool(model.chains_started)
    first = model.chains.clone()
    model.loss_terms({"x": x[:2]}, "train")  # a smaller batch: the chains keep their count and move on
    assert model.chains.shape == (6, 5) and not torch.equal(first, model.chains)
    kept = model.chains.clone()
    model.loss_terms({"x": x}, "val")  # evaluation does not move them
    torch.testing.assert_close(model.chains, kept)
    fresh = tiny_rbm(5, 3, persistent=True, n_chains=6)
    fresh.load_state_dict(model.state_dict())
    torch.testing.assert_close(fresh.chains, kept)
    assert bool(fresh.chains_started)


@pytest.mark.parametrize("visible", ["bernoulli", "gaussian"])
def test_ais_log_z_is_close_to_the_exact_value(visible: str) -> None:
    model = tiny_rbm(20, 10, visible=visible, scale=0.3).float()
    exact = model.exact_log_z()
    torch.manual_seed(0)
    log_z, se = model.ais_log_z(runs=200, betas=500)
    assert abs(log_z - exact) < 0.3, (log_z, exact, se)
    assert 0 <= se < 0.3


def test_ais_standard_error_is_the_spread_of_independent_estimates() -> None:
    # the reported standard error (the delta method on one estimate's importance weights) against the standard
    # deviation of 100 independent estimates of log Z; the spread of a 100-sample std is about 7%
    model = tiny_rbm(20, 10, scale=0.5).float()
    torch.manual_seed(1)
    estimates = torch.tensor([model.ais_log_z(runs=20, betas=50) for _ in range(100)], dtype=torch.float64)
    spread, reported = float(estimates[:, 0].std()), float(estimates[:, 1].mean())
    assert 0.75 < spread / reported < 1.33, (spread, reported)
    assert abs(float(estimates[:, 0].mean()) - model.exact_log_z()) < 3 * spread / math.sqrt(100) + 0.02


def test_capabilities_and_likelihood_bounds() -> None:
    model = tiny_rbm(8, 4, ais_runs=20, ais_betas=50, sample_steps=3).float()
    for cap in (CanSample, CanEncode, CanReconstruct, CanBoundLikelihood):
        assert capable(model, cap)
    x = torch.rand(3, 1, 1, 8)
    assert model.sample(5).shape == (5, 1, 1, 8) and model.sample(2, steps=0).shape == (2, 1, 1, 8)
    assert model.reconstruct(x).shape == x.shape and model.encode(x).shape == (3, 4)
    filters = model.filters(64)
    assert filters.shape == (4, 1, 1, 8) and filters.min() >= 0 and filters.max() <= 1
    bounds = {b.name: b for b in model.likelihood_bounds(Budget())}
    assert set(bounds) == {"ais_nll", "exact_nll"} and bounds["ais_nll"].unit == "nats"
    nll = bounds["exact_nll"].per_sample(x, None)
    assert nll.shape == (3,) and bool(torch.isfinite(nll).all())


def test_pcd_run_reports_its_likelihood_and_draws_its_filters(make_cfg) -> None:
    cfg = make_cfg("model=rbm", "data=digits", *TINY["digits"], *FAST, "model.n_hidden=12", "model.persistent=true",
                   "model.n_chains=20", "model.cd_k=2", "model.ais_runs=20", "model.ais_betas=100",
                   "callbacks.evaluator.sample_steps=5", "callbacks.evaluator.classifier_cache=null")
    from genlab.train import train

    metrics = train(cfg)
    out = Path(cfg.paths.output_dir)
    units = json.loads((out / "metrics.json").read_text())["units"]
    assert units["test/ais_nll"] == "nats" and units["test/exact_nll"] == "nats"
    # log Z beside the estimates: their difference is the two log Zs' difference, on the same test images
    assert metrics["test/ais_nll"] - metrics["test/exact_nll"] == pytest.approx(
        metrics["test/ais_log_z"] - metrics["test/exact_log_z"], abs=1e-3)
    assert 0 < metrics["test/ais_log_z_se"] < 1
    # 12 hidden units: AIS against the exact log Z, on the same test images
    assert metrics["test/ais_nll"] == pytest.approx(metrics["test/exact_nll"], abs=0.5)
    assert (out / "images" / "filters.png").is_file() and (out / "images" / "samples.png").is_file()
    assert (out / "images" / "gibbs_chains.png").is_file() and (out / "images" / "gibbs_from_noise.png").is_file()


def test_chains_from_data_start_at_the_data_and_follow_the_gibbs_sweeps() -> None:
    model = tiny_rbm(8, 4).float()
    x = torch.rand(3, 1, 1, 8).round()
    torch.manual_seed(4)
    frames = model.chain_frames(x, [0, 2, 5])
    assert frames.shape == (3, 3, 1, 1, 8) and torch.equal(frames[0], x)
    torch.manual_seed(4)  # the same draws by hand: 2 sweeps from x, then 3 more from that state
    v, mean2 = model.gibbs(x.flatten(1), 2)
    _, mean5 = model.gibbs(v, 3)
    assert torch.equal(frames[1].flatten(1), mean2) and torch.equal(frames[2].flatten(1), mean5)


def test_the_chains_from_noise_picture_has_a_row_per_chain_and_a_column_per_number_of_sweeps() -> None:
    from genlab.capabilities import PictureRequest

    model = tiny_rbm(8, 4, sample_steps=5).float()
    request = PictureRequest("test", model.data_info, 3, 10, 0, lambda split, n: torch.zeros(n, 1, 1, 8))
    spec = next(s for s in model.pictures(request) if s.file == "gibbs_from_noise.png")
    torch.manual_seed(7)
    (grid,) = spec.draw()
    torch.manual_seed(7)  # the same draws by hand: the sampler's random starts, then the sweeps 0, 1, 2, 5
    frames = model.chain_frames(model.random_visible(3).view(3, 1, 1, 8), [0, 1, 2, 5])  # (4, 3, 1, 1, 8)
    assert grid.columns == 4 and list(grid.column_labels) == ["0", "1", "2", "5"] and len(grid.row_labels) == 3
    assert torch.equal(grid.images.view(3, 4, 1, 1, 8), frames.transpose(0, 1))  # row i: chain i's frames
    assert set(grid.images.view(3, 4, -1)[:, 0].unique().tolist()) <= {0.0, 1.0}  # column 0: coin flips


# ---- the closed-form CD gradient (RBM.cd_gradients) against autograd of the surrogate ----------------------
PATH_CASES = [
    {},
    {"visible": "gaussian", "weight_decay": 0.05},
    {"weight_decay": 0.1, "sparsity_target": 0.1, "sparsity_cost": 0.5},
    {"persistent": True, "n_chains": 9, "cd_k": 2},
    {"train_recon": True},
    {"persistent": True, "n_chains": 9, "chain_state": "hidden"},
    {"persistent": True, "n_chains": 4, "cd_k": 2, "chain_state": "hidden"},
]


@pytest.mark.parametrize("kwargs", PATH_CASES)
def test_direct_gradients_equal_the_surrogates_autograd(kwargs: dict) -> None:
    model = tiny_rbm(5, 3, **kwargs)
    x = torch.rand(7, 1, 1, 5, dtype=torch.float64)
    if model.visible == "bernoulli":
        x = x.round()
    start = {k: v.clone() for k, v in model.state_dict().items()}
    torch.manual_seed(3)
    surrogate = model.loss_terms({"x": x}, "train")
    model.zero_grad()
    surrogate["loss"].backward()
    expected = {name: p.grad.clone() for name, p in model.named_parameters()}
    chains = model.chains.clone()
    model.load_state_dict(start)  # the same weights and (PCD) chains, the same random draws
    model.zero_grad()
    torch.manual_seed(3)
    terms = model.cd_gradients({"x": x})
    assert list(terms) == list(surrogate)  # the same terms in the same order: the epoch means keep their names
    for k in terms:
        torch.testing.assert_close(terms[k], surrogate[k].detach())
        assert not terms[k].requires_grad
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.grad, expected[name], msg=name)
    torch.testing.assert_close(model.chains, chains)
    assert model.hidden_chains.numel() == (kwargs["n_chains"] * 3 if kwargs.get("chain_state") == "hidden" else 0)
    assert ("recon" in terms) == model.train_recon and "recon" in model.loss_terms({"x": x}, "val")


def test_linear_hidden_rbm_takes_its_own_free_energy_in_the_positive_phase() -> None:
    from genlab.models.stacked import LinearHiddenRBM

    torch.manual_seed(0)
    model = LinearHiddenRBM(data_info=DataInfo(name="tiny", shape=(1, 1, 5)), n_hidden=3, init_std=0.3,
                            train_recon=True).double()
    v_data = torch.rand(4, 5, dtype=torch.float64).round()
    v_model = torch.rand(6, 5, dtype=torch.float64).round()
    model.negative_samples = lambda v, stage: (v_model, None)
    terms = model.loss_terms({"x": v_data.view(4, 1, 1, 5)}, "train")
    model.zero_grad()
    terms["loss"].backward()
    W, b = model.W.detach(), model.hidden_bias.detach()
    # linear hidden units: −∂F/∂W = vᵀ(b + vW), the hidden means, not their sigmoids
    dW = v_data.T @ (v_data @ W + b) / 4 - v_model.T @ (v_model @ W + b) / 6
    torch.testing.assert_close(model.W.grad, -dW)
    recon = (model.visible_mean(v_data @ W + b) - v_data).pow(2).sum(1).mean()
    torch.testing.assert_close(terms["recon"], recon)
    # the closed form follows the units' own hidden_free and hidden_mean: the same gradient and terms
    grads = {name: p.grad.clone() for name, p in model.named_parameters()}
    written = model.cd_gradients({"x": v_data.view(4, 1, 1, 5)})
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.grad, grads[name], msg=name)
    for k in terms:
        torch.testing.assert_close(written[k], terms[k].detach(), msg=k)


def trainer_options(**kw: object) -> object:
    """The Trainer attributes the training loop's refusals read."""
    from types import SimpleNamespace

    return SimpleNamespace(**{"world_size": 1, "accumulate_grad_batches": 1, "precision": "32-true",
                              "gradient_clip_val": None, **kw})


def test_the_closed_form_update_refuses_what_needs_a_backward_pass() -> None:
    import functools

    model = tiny_rbm(5, 3)
    for kw in ({}, {"precision": "bf16-mixed"}, {"gradient_clip_val": 1.0}, {"world_size": 2}):
        assert model.trainer_refusal(trainer_options(**kw)) is None, kw
    scheduled = tiny_rbm(5, 3, scheduler=functools.partial(torch.optim.lr_scheduler.StepLR, step_size=1))
    assert scheduled.trainer_refusal(trainer_options()) is None  # Lightning steps the scheduler
    assert "accumulation would overwrite" in model.trainer_refusal(trainer_options(accumulate_grad_batches=2))
    assert "Use bf16-mixed or 32-true" in model.trainer_refusal(trainer_options(precision="16-mixed"))
    with pytest.raises(UserError, match="model.compile=true: RBM writes its gradient in closed form"):
        tiny_rbm(5, 3, compile=True)


class AutogradRBM(RBM):
    """The same RBM trained by back-propagating its surrogate: the independent computation of the update."""

    writes_gradients = False


def test_hidden_chain_states_follow_sklearns_persistent_sweep() -> None:
    """PCD keeping hidden states (Tieleman 2008; scikit-learn's BernoulliRBM): each update samples the chains'
    visible units from the kept h, then keeps h' ~ p(h | v) for the next update; written out by hand."""
    model = tiny_rbm(5, 3, persistent=True, n_chains=4, chain_state="hidden")
    x = torch.rand(4, 1, 1, 5, dtype=torch.float64).round()
    model.negative_samples(model.flat(x), "train")  # starts the chains
    W, a, b = model.W.detach(), model.visible_bias.detach(), model.hidden_bias.detach()
    h = model.hidden_chains.clone()
    torch.manual_seed(5)
    v_model, s_model = model.negative_samples(model.flat(x), "train")
    torch.manual_seed(5)
    p_v = torch.sigmoid(a + h @ W.T)
    v_hand = (torch.rand_like(p_v) < p_v).double()
    q = torch.sigmoid(b + v_hand @ W)
    h_hand = (torch.rand_like(q) < q).double()
    torch.testing.assert_close(v_model, v_hand)
    torch.testing.assert_close(s_model, b + v_hand @ W)
    torch.testing.assert_close(model.hidden_chains, h_hand)


def fit_tiny(cls: type[RBM], trainer_kw: dict, ckpt_path: str | None = None, batch_size: int = 10,
             **model_kw: object) -> tuple[RBM, str, int]:
    """A few epochs of a 16-8 RBM of class ``cls`` on 60 binary vectors through a Lightning Trainer (from
    ``ckpt_path`` when given): (model, "automatic" or "manual" optimisation, global step)."""
    import functools
    import tempfile

    import pytorch_lightning as pl

    from genlab.data.base import Split, Splits, TensorDataModule

    data = (torch.rand(80, 1, 4, 4, generator=torch.Generator().manual_seed(0)) < 0.3).float()

    class Tiny(TensorDataModule):
        info = property(lambda self: DataInfo("tiny", (1, 4, 4)))

        def load(self) -> Splits:
            return Splits(train=Split(data[:60]), val=Split(data[60:]), test=Split(data[60:]))

    pl.seed_everything(0, verbose=False)
    dm = Tiny(batch_size=batch_size, binarize=False, seed=0)
    dm.setup("fit")
    model = cls(data_info=dm.info, n_hidden=8, init_std=0.1, **{"train_recon": True, **model_kw},
                optimizer=functools.partial(torch.optim.SGD, lr=0.1, momentum=0.5))
    trainer = pl.Trainer(accelerator="cpu", devices=1, limit_val_batches=0, num_sanity_val_steps=0,
                         enable_progress_bar=False, enable_model_summary=False,
                         logger=pl.loggers.CSVLogger(tempfile.mkdtemp(prefix="genlab-rbm-test-")),
                         log_every_n_steps=2, **{"max_epochs": 3, "enable_checkpointing": False, **trainer_kw})
    trainer.fit(model, datamodule=dm, ckpt_path=ckpt_path, weights_only=False)
    return model, "automatic" if model.automatic_optimization else "manual", trainer.global_step


@pytest.mark.parametrize("trainer_kw", [{}, {"gradient_clip_val": 0.05}], ids=["plain", "clipped"])
def test_closed_form_training_follows_the_autograd_trajectory(trainer_kw: dict) -> None:
    # PCD with momentum and weight decay: the same draws, updates, optimiser state, chains and epoch means
    model_kw = {"persistent": True, "n_chains": 10, "weight_decay": 0.01}
    fast, path, steps = fit_tiny(RBM, trainer_kw, **model_kw)
    slow, slow_path, slow_steps = fit_tiny(AutogradRBM, trainer_kw, **model_kw)
    assert path == ("automatic" if trainer_kw else "manual") and slow_path == "automatic"
    assert steps == slow_steps == 18 and fast.trained_batches == slow.trained_batches == 18
    for (name, a), b in zip(fast.state_dict().items(), slow.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)
    logged, slow_logged = fast.trainer.callback_metrics, slow.trainer.callback_metrics
    assert {k for k in logged if k.startswith("train/")} == {k for k in slow_logged if k.startswith("train/")}
    for k in ("train/loss", "train/cd", "train/recon", "train/free_energy", "train/weight_decay"):
        torch.testing.assert_close(logged[k], slow_logged[k], rtol=1e-5, atol=1e-6, msg=k)


def test_several_updates_per_batch_are_the_run_of_the_smaller_batches() -> None:
    """A loader batch of 20 cut into 2 updates follows the run with batches of 10 (the same permutation each
    epoch), update for update: the same weights, chains, optimiser steps and epoch means."""
    model_kw = {"persistent": True, "n_chains": 10, "chain_state": "hidden"}
    small, _, steps = fit_tiny(RBM, {}, **model_kw)
    split, path, split_steps = fit_tiny(RBM, {}, batch_size=20, updates_per_batch=2, **model_kw)
    assert path == "manual" and steps == split_steps == 18 and split.trained_batches == 9
    for (name, a), b in zip(small.state_dict().items(), split.state_dict().values()):
        torch.testing.assert_close(a, b, msg=name)
    for k in ("train/loss", "train/recon", "train/free_energy"):
        torch.testing.assert_close(small.trainer.callback_metrics[k], split.trainer.callback_metrics[k], msg=k)
    with pytest.raises(UserError, match="updates_per_batch=2 needs genlab's own update loop"):
        fit_tiny(RBM, {"gradient_clip_val": 0.05}, batch_size=20, updates_per_batch=2)


def test_a_manual_run_resumed_from_a_checkpoint_ends_where_the_uninterrupted_one_does(tmp_path: Path) -> None:
    import pytorch_lightning as pl

    model_kw = {"persistent": True, "n_chains": 10}
    whole, path, steps = fit_tiny(RBM, {}, **model_kw)
    saver = pl.callbacks.ModelCheckpoint(dirpath=tmp_path, save_top_k=-1, every_n_epochs=1)
    fit_tiny(RBM, {"max_epochs": 1, "callbacks": [saver], "enable_checkpointing": True}, **model_kw)
    (ckpt,) = tmp_path.glob("*.ckpt")
    resumed, resumed_path, resumed_steps = fit_tiny(RBM, {}, ckpt_path=str(ckpt), **model_kw)
    assert path == resumed_path == "manual" and steps == resumed_steps == 18
    for (name, a), b in zip(whole.state_dict().items(), resumed.state_dict().values()):
        torch.testing.assert_close(a, b, msg=name)


def test_a_stop_asked_for_on_the_last_batch_waits_for_the_epochs_end(tmp_path: Path) -> None:
    """Lightning resumes a checkpoint taken at the end of an epoch's last batch as a finished epoch, without
    the epoch's end (its train means, validation, checkpoints): a stop asked for there is made at the end of
    the epoch instead, and the resumed run ends where the uninterrupted one does, train means included."""
    import signal

    import pytorch_lightning as pl

    from genlab.callbacks.interrupt import GracefulStop, Interrupted

    class AskAt(pl.Callback):  # a SIGTERM as it would arrive during the last batch of epoch 1 (6 batches an epoch)
        def __init__(self, stop: GracefulStop) -> None:
            self.stop = stop

        def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: object,
                                 batch_idx: int) -> None:
            if trainer.current_epoch == 1 and batch_idx == 5:
                self.stop.requested = signal.SIGTERM

    model_kw = {"persistent": True, "n_chains": 10}
    whole, _, steps = fit_tiny(RBM, {}, **model_kw)
    stop = GracefulStop()
    with pytest.raises(Interrupted):
        fit_tiny(RBM, {"callbacks": [stop, AskAt(stop)], "default_root_dir": str(tmp_path),
                      "enable_checkpointing": True}, **model_kw)
    ckpt = tmp_path / "checkpoints" / "last.ckpt"
    state = torch.load(ckpt, weights_only=False)
    assert state["global_step"] == 12  # the whole of epoch 1, its end included
    resumed, _, resumed_steps = fit_tiny(RBM, {"callbacks": [GracefulStop()], "enable_checkpointing": True},
                                         ckpt_path=str(ckpt), **model_kw)
    assert resumed_steps == steps == 18
    for (name, a), b in zip(whole.state_dict().items(), resumed.state_dict().values()):
        torch.testing.assert_close(a, b, msg=name)
    for k in ("train/loss", "train/recon", "train/free_energy"):  # the last epoch's means, of its batches alone
        torch.testing.assert_close(resumed.trainer.callback_metrics[k], whole.trainer.callback_metrics[k], msg=k)
