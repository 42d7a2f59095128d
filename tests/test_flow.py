"""RealNVP (genlab/models/flow.py, genlab/nets/flow.py): its log-likelihood against an independent change of
variables (the Jacobian by autograd, point by point), its invertibility, its samples, a density that
integrates to one, and its run through genlab-train with the unchanged evaluator."""

from __future__ import annotations

import functools
import json
import math
from pathlib import Path

import pytest
import torch
from conftest import FAST, TINY
from torch.autograd.functional import jacobian

from genlab.capabilities import Budget
from genlab.data.base import DataInfo
from genlab.errors import UserError
from genlab.metrics.sample_quality import mode_coverage
from genlab.models.flow import RealNVP
from genlab.nets.flow import coupling_net
from genlab.run import load_model
from genlab.train import train

POINTS = DataInfo("toy2d", (2,), bounded=False)
IMAGES = DataInfo("tiny", (1, 4, 4), num_classes=2)  # two scales: checkerboard, squeeze, channel couplings


def flow_model(info: DataInfo, seed: int = 0, std: float = 0.2, **kwargs) -> RealNVP:
    """A small RealNVP in float64 with random weights: the zero-initialised last layers would make every
    coupling the identity, and the tests would check nothing."""
    torch.manual_seed(seed)
    net = functools.partial(coupling_net, hidden=[16, 16], channels=8, blocks=1)
    model = RealNVP(data_info=info, net=net, **kwargs).double().eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, std)
    return model


def change_of_variables(fn, v: torch.Tensor) -> torch.Tensor:
    """log N(fn(v); 0, I) + log|det ∂fn/∂v| for one input v (*shape), the Jacobian by autograd."""
    z = fn(v.unsqueeze(0))[0]
    jac = jacobian(lambda a: fn(a.unsqueeze(0))[0], v).reshape(z.numel(), v.numel())
    return -0.5 * (z.pow(2).sum() + z.numel() * math.log(2 * math.pi)) + torch.linalg.slogdet(jac)[1]


def test_the_log_likelihood_of_points_is_the_change_of_variables() -> None:
    model = flow_model(POINTS)
    x = 1.5 * torch.randn(6, 2, dtype=torch.float64)
    flow = lambda a: model.flow(a)[0]  # noqa: E731  (B, 2) -> (B, 2)
    expected = torch.stack([change_of_variables(flow, xi) for xi in x])
    assert torch.allclose(model.log_density(x, 0.0), expected, atol=1e-10)
    assert torch.allclose(model.nll(x), -expected, atol=1e-10)  # nats per point
    assert (model.likelihood_bounds(Budget())[0].name, model.likelihood_bounds(Budget())[0].unit) == ("nll", "nats")


def test_the_bound_on_images_is_the_change_of_variables_of_the_dequantised_pixels() -> None:
    """log p(v) of the dequantised pixels v = (255x + u)/256 through the logit transform and the multi-scale
    flow, against autograd's Jacobian of v -> z; the bound in bits/dim adds 8 bits (D log 256) to it."""
    model = flow_model(IMAGES)
    alpha = model.alpha
    x = torch.randint(0, 256, (3, *IMAGES.shape)).double() / 255
    u = torch.rand_like(x)
    v = (255 * x + u) / 256

    def v_to_z(a: torch.Tensor) -> torch.Tensor:
        return model.flow(torch.logit(alpha + (1 - 2 * alpha) * a))[0]

    expected = torch.stack([change_of_variables(v_to_z, vi) for vi in v])
    assert torch.allclose(model.log_density(x, u), expected, atol=1e-9)
    d = IMAGES.dim
    torch.manual_seed(1)
    bpd = model.nll(x)
    torch.manual_seed(1)
    noise = torch.rand_like(x)  # the draw nll made
    assert torch.allclose(bpd, (-model.log_density(x, noise) / d + math.log(256)) / math.log(2), atol=1e-10)
    bound = model.likelihood_bounds(Budget())[0]
    assert (bound.name, bound.unit) == ("bpd", "bits/dim")  # ddpm's key and unit


@pytest.mark.parametrize("info", [POINTS, IMAGES, DataInfo("rgb", (3, 8, 8), num_classes=10)],
                         ids=["points", "grey", "rgb"])
def test_decode_inverts_encode_and_samples_have_the_data_shape(info: DataInfo) -> None:
    model = flow_model(info, std=0.1, scales=3 if info.shape[-1] == 8 else 2).float()
    x = torch.randn(5, *info.shape) if not info.is_image else torch.rand(5, *info.shape)
    z = model.encode(x)
    assert z.shape == (5, info.dim) and model.latent_dim == info.dim
    assert (model.decode(z) - x).abs().max() < 1e-5
    s = model.sample(7)
    assert s.shape == (7, *info.shape) and torch.isfinite(s).all()
    if info.is_image:
        assert 0 <= s.min() and s.max() <= 1


def test_the_density_of_points_integrates_to_one() -> None:
    model = flow_model(POINTS, std=0.15)
    side = torch.linspace(-10, 10, 801, dtype=torch.float64)
    grid = torch.cartesian_prod(side, side)  # (801², 2)
    with torch.no_grad():
        p = torch.cat([model.log_density(g, 0.0).exp() for g in grid.split(65536)])
    mass = p.sum().item() * (side[1] - side[0]).item() ** 2
    assert mass == pytest.approx(1.0, abs=5e-3)


def test_the_flow_refuses_what_it_cannot_model() -> None:
    net = functools.partial(coupling_net)
    with pytest.raises(UserError, match="multiples of 4"):
        RealNVP(data_info=DataInfo("odd", (1, 6, 6)), net=net, scales=3)
    with pytest.raises(UserError, match="2 or more"):
        RealNVP(data_info=DataInfo("line", (1,), bounded=False), net=net)
    with pytest.raises(UserError, match="kind=conv"):
        RealNVP(data_info=POINTS, net=functools.partial(coupling_net, kind="conv"))


def test_a_short_fit_covers_the_eight_modes_of_the_ring() -> None:
    """Maximum likelihood covers every mode: a flow fitted for 1,000 steps on ring8 puts samples at all eight."""
    from genlab.data.builtin import Toy2dDataModule

    dm = Toy2dDataModule(kind="ring8", n_samples=4000)
    dm.setup("fit")
    x = dm.splits["train"].x
    torch.manual_seed(0)
    model = RealNVP(data_info=dm.info, net=functools.partial(coupling_net, hidden=[64, 64]))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(1000):
        batch = x[torch.randint(len(x), (256,))]
        loss = model.nll(batch).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    torch.manual_seed(1)
    covered, _ = mode_coverage(model.sample(2000), torch.tensor(dm.info.modes), dm.info.mode_std)
    assert covered == 8
    assert model.nll(dm.splits["train"].x[:1000]).mean() < 1.0  # nats; a Gaussian fit to the ring: about 2.7


@pytest.mark.parametrize("data", ["digits", "toy2d"])
def test_genlab_train_scores_the_flow_with_the_unchanged_evaluator(make_cfg, data: str) -> None:
    cfg = make_cfg("model=realnvp", f"data={data}", *TINY[data], *FAST, "smoke=true")
    metrics = train(cfg)
    written = json.loads((Path(cfg.paths.output_dir) / "metrics.json").read_text())
    key, unit = ("test/bpd", "bits/dim") if data == "digits" else ("test/nll", "nats")
    assert written["units"] == {key: unit}
    assert math.isfinite(metrics[key])
    assert 0 <= metrics["test/knn_acc"] <= 1  # encode: the probes score the codes
    if data == "toy2d":
        assert "test/modes_covered" in metrics
    out = Path(cfg.paths.output_dir)
    assert (out / "images" / "samples.png").is_file()
    model = load_model(None, out / written["best_checkpoint"])  # rebuilt from the config the checkpoint carries
    assert isinstance(model, RealNVP)
    x = torch.rand(4, *model.data_info.shape)
    assert (model.decode(model.encode(x)) - x).abs().max() < 1e-5
    assert model.sample(3).shape == (3, *model.data_info.shape)


@pytest.mark.parametrize("override", ["model.scales=0", "model.couplings=0", "model.alpha=0.5", "model.temperature=0",
                                      "model.net.kind=nope", "model.net.channels=0", "model.net.hidden=[0]"])
def test_the_schema_refuses_values_outside_their_ranges_naming_the_key(make_cfg, override: str) -> None:
    from genlab.config import validate

    cfg = make_cfg("model=realnvp", override)
    with pytest.raises(UserError, match=override.split("=")[0].replace(".", r"\.")):
        validate(cfg)
