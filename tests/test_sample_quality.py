"""Sample-quality metrics against hand loops and closed forms; the Evaluator's sample-quality block
on 2-D mixtures and images with stand-in samplers."""

from __future__ import annotations

import math
import statistics

import numpy as np
import pytest
import torch
from conftest import CACHE
from scipy import linalg
from torch import Tensor

from genlab.callbacks.evaluator import configured_evaluator
from genlab.capabilities import CanSample
from genlab.data.base import Batch, DataInfo
from genlab.data.builtin import DigitsDataModule, Toy2dDataModule
from genlab.errors import UserError
from genlab.metrics import sample_quality as Q
from genlab.metrics.sampling import SampleQuality
from genlab.metrics.two_sample import c2st
from genlab.models.base import GenerativeModel


def _randn(*shape: int, seed: int = 0) -> Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


# ---- MMD² ----------------------------------------------------------------------------------
def test_median_bandwidth_is_the_median_pairwise_distance() -> None:
    x, y = _randn(7, 3), _randn(6, 3, seed=1) + 1.0
    z = torch.cat([x, y]).tolist()
    dists = [math.dist(z[i], z[j]) for i in range(len(z)) for j in range(i + 1, len(z))]  # 78 pairs: even
    assert Q.median_bandwidth(x, y) == pytest.approx(statistics.median(dists), rel=1e-9)


def test_mmd2_unbiased_against_a_double_loop() -> None:
    x, y = _randn(6, 2), _randn(5, 2, seed=1) + 0.7
    h = 0.9
    k = lambda a, b: math.exp(-math.dist(a, b) ** 2 / (2 * h * h))
    xs, ys = x.tolist(), y.tolist()
    kxx = sum(k(a, b) for i, a in enumerate(xs) for j, b in enumerate(xs) if i != j) / (6 * 5)
    kyy = sum(k(a, b) for i, a in enumerate(ys) for j, b in enumerate(ys) if i != j) / (5 * 4)
    kxy = sum(k(a, b) for a in xs for b in ys) / (6 * 5)
    assert Q.mmd2_unbiased(x, y, bandwidth=h) == pytest.approx(kxx + kyy - 2 * kxy, rel=1e-9)
    # the default bandwidth is the median heuristic
    assert Q.mmd2_unbiased(x, y) == pytest.approx(Q.mmd2_unbiased(x, y, Q.median_bandwidth(x, y)), rel=1e-12)


def test_mmd2_chunks_agree_with_one_block(monkeypatch: pytest.MonkeyPatch) -> None:
    x, y = _randn(50, 4), _randn(40, 4, seed=1)
    whole = Q.mmd2_unbiased(x, y, 1.5)
    monkeypatch.setattr(Q, "CHUNK", 7)
    assert Q.mmd2_unbiased(x, y, 1.5) == pytest.approx(whole, rel=1e-9)


def test_mmd2_is_near_zero_for_one_distribution_and_grows_with_a_shift() -> None:
    x, y = _randn(400, 3), _randn(400, 3, seed=1)
    same = Q.mmd2_unbiased(x, y)
    shifts = [Q.mmd2_unbiased(x, y + d) for d in (0.5, 1.0, 2.0)]
    assert abs(same) < 0.01
    assert same < shifts[0] < shifts[1] < shifts[2]


# ---- precision and recall -------------------------------------------------------------------
def test_precision_recall_identical_disjoint_and_half() -> None:
    x = _randn(200, 5)
    assert Q.precision_recall(x, x) == (1.0, 1.0)
    assert Q.precision_recall(x, x + 100.0) == (0.0, 0.0)
    # fake = half of the real points and half far away: precision 1/2; recall at least 1/2 (the
    # copied points), more because the balls of the sparser fake half-set are wider
    fake = torch.cat([x[:100], x[100:] + 100.0])
    precision, recall = Q.precision_recall(x, fake)
    assert precision == 0.5 and 0.5 <= recall < 1.0


def test_precision_recall_against_a_hand_loop() -> None:
    real, fake, k = _randn(12, 2), _randn(9, 2, seed=1) * 1.5, 2
    r, f = real.tolist(), fake.tolist()

    def radius(points: list, i: int) -> float:
        return sorted(math.dist(points[i], p) for j, p in enumerate(points) if j != i)[k - 1]

    def share(query: list, ref: list) -> float:
        radii = [radius(ref, i) for i in range(len(ref))]
        return sum(any(math.dist(q, p) <= radii[i] for i, p in enumerate(ref)) for q in query) / len(query)

    assert Q.precision_recall(real, fake, k) == pytest.approx((share(f, r), share(r, f)))


# ---- FID and KID ------------------------------------------------------------------------------
def test_fid_is_zero_for_identical_sets_and_the_squared_shift_for_a_translation() -> None:
    x = _randn(300, 4) * torch.tensor([2.0, 1.0, 0.5, 0.2])
    fid, _, _ = Q.fid_kid(x, x)
    assert abs(fid) < 1e-6
    shift = torch.tensor([1.0, -2.0, 0.5, 0.0])  # equal covariances: FID = ‖δ‖² exactly
    assert Q.fid_kid(x, x + shift)[0] == pytest.approx(shift.square().sum().item(), rel=1e-6)
    assert Q.fid_kid(x, x + 2 * shift)[0] > Q.fid_kid(x, x + shift)[0]


def test_fid_matches_the_frechet_distance_of_the_fitted_gaussians() -> None:
    x, y = _randn(300, 3), _randn(200, 3, seed=1) @ torch.tensor([[1.0, 0.5, 0.0], [0.0, 2.0, 0.3], [0, 0, 0.5]])
    a, b = x.double().numpy(), y.double().numpy() + 0.3
    ca, cb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    expected = ((a.mean(0) - b.mean(0)) ** 2).sum() + np.trace(ca + cb - 2 * linalg.sqrtm(ca @ cb).real)
    assert Q.fid_kid(x, y + 0.3)[0] == pytest.approx(expected, rel=1e-6)


def test_kid_with_one_full_subset_against_a_hand_loop() -> None:
    x, y = _randn(20, 3).double(), _randn(20, 3, seed=1).double() + 0.5
    k = lambda a, b: (float(a @ b) / 3 + 1) ** 3
    m = 20
    kxx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    kyy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    kxy = sum(k(x[i], y[j]) for i in range(m) for j in range(m)) / m**2
    _, kid, kid_std = Q.fid_kid(x, y, kid_subsets=3, kid_subset_size=m)  # every subset is the whole set
    assert kid == pytest.approx(kxx + kyy - 2 * kxy, rel=1e-9) and kid_std == pytest.approx(0.0, abs=1e-9)
    assert Q.fid_kid(x, y, kid_subset_size=8, seed=3) == Q.fid_kid(x, y, kid_subset_size=8, seed=3)


def test_inception_without_weights_names_the_missing_file(tmp_path) -> None:
    with pytest.raises(UserError, match=rf"{Q.INCEPTION_FILE}.*not in {tmp_path}.*never downloads"):
        Q.inception_weights(tmp_path / Q.INCEPTION_FILE)
    with pytest.raises(UserError, match="not in"):  # at start-up: the metric is built before training
        SampleQuality(feature_network="inception", inception_weights=str(tmp_path / Q.INCEPTION_FILE))
    with pytest.raises(UserError, match="feature_network=.vgg. is not one of classifier, inception"):
        SampleQuality(feature_network="vgg")


# ---- mode coverage -----------------------------------------------------------------------------
def test_mode_coverage_on_hand_made_samples() -> None:
    modes = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    near = torch.tensor([[0.1, 0.0], [0.0, -0.2], [10.2, 0.1], [10.0, 0.25]])  # within 3σ = 0.3
    far = torch.tensor([[5.0, 5.0], [0.0, 9.0]])  # 9 is 1 away from mode 2: outside 3σ
    samples = torch.cat([near, far])
    assert Q.mode_coverage(samples, modes, sigma=0.1, min_share=0.0) == (2, pytest.approx(4 / 6))
    # min_share 0.9 of the equal share 6/3 = 2 samples: both covered modes have two
    assert Q.mode_coverage(samples, modes, sigma=0.1, min_share=0.9)[0] == 2
    assert Q.mode_coverage(samples, modes, sigma=0.1, min_share=1.2)[0] == 0  # needs 3


# ---- the classifier two-sample test ----------------------------------------------------------------
def test_c2st_reaches_the_bayes_accuracy_of_two_shifted_gaussians_and_half_for_one() -> None:
    # N(0, I) against N((1, 0), I) in 2-D: the best classifier thresholds x₁ at 1/2, right with P = Φ(1/2)
    bayes = 0.5 * (1 + math.erf(0.5 / math.sqrt(2)))  # 0.6915
    a, b, c, d = (_randn(2000, 2, seed=s) for s in range(4))
    shift = torch.tensor([1.0, 0.0])
    shifted = c2st(a, b + shift, c, d + shift, epochs=10)
    assert abs(shifted.accuracy - bayes) < 0.03 and shifted.p_value < 1e-20 and shifted.n_test == 4000
    same = c2st(a, b, c, d, epochs=10)
    assert abs(same.accuracy - 0.5) < 0.04 and same.p_value > 1e-3
    # scale does not matter: the inputs are standardised
    scaled = c2st(a * 1000, (b + shift) * 1000, c * 1000, (d + shift) * 1000, epochs=10)
    assert abs(scaled.accuracy - shifted.accuracy) < 0.02


def test_c2st_p_value_is_the_binomial_tail_and_the_result_is_seeded() -> None:
    a, b = _randn(300, 1, 8, 8, seed=0).sigmoid(), _randn(300, 1, 8, 8, seed=1).sigmoid() * 0.9
    one, two = c2st(a[:200], b[:200], a[200:], b[200:], epochs=3), c2st(a[:200], b[:200], a[200:], b[200:], epochs=3)
    assert one == two  # a seeded classifier: the same figure every time
    right = round(one.accuracy * 200)  # equal halves: right answers = accuracy x 200
    tail = sum(math.comb(200, k) for k in range(right, 201)) / 2**200
    assert one.p_value == pytest.approx(tail, rel=1e-9)
    with torch.inference_mode():  # as the evaluator calls it, from Lightning's test loop
        assert c2st(a[:200], b[:200], a[200:], b[200:], epochs=3) == one
    with_graph = b * torch.ones((), requires_grad=True)  # samples of a sampler that used gradients (Langevin)
    assert c2st(a[:200], with_graph[:200], a[200:], with_graph[200:], epochs=3) == one
    with pytest.raises(ValueError, match="at least one sample"):
        c2st(a[:0], b, a, b)


# ---- the Evaluator with stand-in samplers --------------------------------------------------------
class Replay(GenerativeModel):
    """A stand-in sampler: returns given samples (cycling), whatever its random state."""

    capabilities = frozenset({CanSample})

    def __init__(self, info: DataInfo, data: Tensor) -> None:
        super().__init__(data_info=info)
        self.data = data
        self.given = 0

    def sample(self, n: int, y: Tensor | None = None, steps: int | None = None) -> Tensor:
        idx = torch.arange(self.given, self.given + n) % len(self.data)
        self.given += n
        return self.data[idx].float()

    def loss_terms(self, batch: Batch, stage: str) -> dict[str, Tensor]:
        return {"loss": torch.zeros(())}


def test_evaluator_on_ring8_with_a_sampler_of_the_data_and_a_collapsed_one() -> None:
    dm = Toy2dDataModule(kind="ring8", n_samples=2000, eval_batch_size=128)
    dm.setup()
    fresh = Toy2dDataModule(kind="ring8", n_samples=2000, seed=1).generate()  # new points, same mixture
    out = configured_evaluator().evaluate(Replay(dm.info, fresh.x).eval(), dm)
    assert out["test/modes_covered"] == 8 and out["test/high_quality_share"] > 0.97  # P(‖ε‖ > 3σ) = e^-4.5
    assert abs(out["test/mmd2"]) < 0.01 and abs(out["test/mmd2_floor"]) < 0.01
    collapsed = configured_evaluator().evaluate(Replay(dm.info, fresh.x[fresh.y == 0]).eval(), dm)
    assert collapsed["test/modes_covered"] == 1 and collapsed["test/high_quality_share"] > 0.97
    assert collapsed["test/mmd2"] > 0.1 > collapsed["test/mmd2_floor"]
    # the classifier two-sample test: fresh points of the mixture cannot be told apart, one mode can
    assert out["test/c2st_acc"] < 0.6 < 0.9 < collapsed["test/c2st_acc"]
    assert out["test/c2st_acc_floor"] == collapsed["test/c2st_acc_floor"] < 0.6
    assert "test/fid" not in out  # points: no feature network


def test_evaluator_on_digits_real_images_reach_the_floor_and_noise_does_not() -> None:
    # the TINY digits of the run tests (data.max_train=96, val_fraction 0.15): the same cached classifier
    dm = DigitsDataModule(max_train=96, val_fraction=0.15, eval_batch_size=256)
    dm.setup()
    ev = configured_evaluator(CACHE)
    real = ev.evaluate(Replay(dm.info, dm.splits["val"].x).eval(), dm)  # held-out real digits
    noise = ev.evaluate(Replay(dm.info, torch.rand(96, 1, 8, 8)).eval(), dm)
    for name in ("fid", "kid", "mmd2", "precision", "recall"):
        assert real[f"test/{name}_floor"] == noise[f"test/{name}_floor"]  # the floor does not depend on the model
    assert real["test/fid"] < 2 * real["test/fid_floor"] < noise["test/fid"]
    assert real["test/mmd2"] < noise["test/mmd2"] and real["test/kid"] < noise["test/kid"]
    assert real["test/precision"] > noise["test/precision"] and real["test/recall"] > 0.5 > noise["test/recall"]
    assert noise["test/c2st_acc"] > 0.95 > real["test/c2st_acc"] and noise["test/c2st_p"] < 1e-6
    assert real["test/c2st_acc_floor"] == noise["test/c2st_acc_floor"] < 0.75


def test_sample_quality_does_not_depend_on_data_binarize() -> None:
    # a VAE trained on binarised data and a GAN on grey levels are scored against the same real images
    plain, binary = (DigitsDataModule(max_train=96, val_fraction=0.15, binarize=b) for b in (False, True))
    plain.setup()
    binary.setup()
    assert set(binary.splits["test"].x.unique().tolist()) <= {0.0, 1.0}  # the likelihood's test split
    assert torch.equal(binary.as_stored("test").x, plain.splits["test"].x)  # the images as stored
    ev = configured_evaluator(CACHE)
    samples = plain.splits["val"].x
    a, b = (ev.evaluate(Replay(dm.info, samples).eval(), dm) for dm in (plain, binary))
    for name in ("fid", "kid", "mmd2", "precision", "recall"):
        assert a[f"test/{name}"] == pytest.approx(b[f"test/{name}"], rel=1e-9)
        assert a[f"test/{name}_floor"] == pytest.approx(b[f"test/{name}_floor"], rel=1e-9)
