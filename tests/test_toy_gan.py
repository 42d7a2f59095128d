"""The lectures' toy GAN: its formulas against hand computation, the figure sequence it leaves
behind (PNGs and a TensorBoard image tag), and v turning towards the data's direction w."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from genlab.data.base import DataInfo
from genlab.errors import IncompatibleError
from genlab.models.toy_gan import ToyGAN
from genlab.train import train

POINTS = DataInfo("toy2d", (2,), bounded=False)
W = (0.98, 0.2)


def test_discriminator_and_losses_match_the_hand_formulas() -> None:
    model = ToyGAN(data_info=POINTS, v_init=(0.2, 0.98), d_weight_init=(0.71, -0.71), d_bias_init=0.3)
    x = torch.tensor([[1.5, -2.0], [-0.3, 0.4], [0.0, 0.0]])
    sig = lambda t: 1 / (1 + math.exp(-t))
    hand = [sig(abs(a) * 0.71 + abs(b) * -0.71 + 0.3) for a, b in x.tolist()]
    got = torch.sigmoid(model.discriminator_logit(x)).tolist()
    assert got == pytest.approx(hand, rel=1e-6)
    real, fake = x[:2], x[1:]
    d_real, d_fake = hand[:2], hand[1:]
    mean = lambda v: sum(v) / len(v)
    assert model.discriminator_loss(real, fake).item() == pytest.approx(
        -mean([math.log(d) for d in d_real]) - mean([math.log(1 - d) for d in d_fake]), rel=1e-6)
    assert model.generator_loss(fake).item() == pytest.approx(-mean([math.log(d) for d in d_fake]), rel=1e-6)
    model.loss = "minimax"  # the lectures' cost: the generator minimises log(1 − D(G(h)))
    assert model.generator_loss(fake).item() == pytest.approx(mean([math.log(1 - d) for d in d_fake]), rel=1e-6)
    h = torch.tensor([[2.0], [-1.0]])
    assert model.generate(h).flatten().tolist() == pytest.approx([0.4, 1.96, -0.2, -0.98])
    assert model.cos_vw().item() == pytest.approx((0.2 * 0.98 + 0.98 * 0.2) / math.hypot(0.2, 0.98) / math.hypot(*W))


def test_toy_gan_needs_2d_points() -> None:
    wanted = r"needs 2-D points, but 'digits' provides images 1x8x8\. Pick a dataset of 2-D points \(e\.g\. data=toy2d"
    with pytest.raises(IncompatibleError, match=wanted):
        ToyGAN(data_info=DataInfo("digits", (1, 8, 8), 10))


def test_training_turns_v_towards_w_and_writes_the_figure_sequence(make_cfg) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = make_cfg("experiment=toy_gan", "data.n_samples=5000", "data.batch_size=64", "trainer.max_epochs=2",
                   "model.plot_every=20", "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false",
                   "callbacks.image_logger.n_points=200")
    metrics = train(cfg)
    out = Path(cfg.paths.output_dir)
    steps = 2 * 57  # 5000 points: 4000 train, 400 of them for validation, 64 a batch
    expected = [*range(0, steps, 20), steps]  # every 20 steps from the first, and the final state
    pngs = sorted(p.name for p in (out / "images").glob("toy_step_*.png"))
    assert pngs == [f"toy_step_{s:05d}.png" for s in expected]
    events = EventAccumulator(str(next((out / "tensorboard").rglob("events.out.tfevents.*")).parent),
                              size_guidance={"images": 0, "scalars": 0})
    events.Reload()
    assert [e.step for e in events.Images("toy/state")] == expected  # one sequence, in training steps
    v1, v2 = events.Scalars("toy/v1"), events.Scalars("toy/v2")
    assert len(v1) == len(v2) == len(events.Scalars("toy/angle_deg")) == steps  # every step
    assert v1[0].value == pytest.approx(0.2, abs=0.05) and v2[0].value == pytest.approx(0.98, abs=0.05)
    v = torch.tensor([v1[-1].value, v2[-1].value])
    cos = float(v @ torch.tensor(W)) / (v.norm().item() * math.hypot(*W))
    assert abs(cos) > 0.95  # from 67° at the start to within 18° of ±w
    assert metrics["test/cos_vw"] == pytest.approx(cos, abs=1e-4)
    assert math.degrees(math.acos(cos)) == pytest.approx(events.Scalars("toy/angle_deg")[-1].value,
                                                                        abs=0.1)
