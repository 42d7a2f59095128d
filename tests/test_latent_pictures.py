"""Latent-space pictures against hand computations, the labels of every grid; the pictures of a
tiny run end to end."""

from __future__ import annotations

import warnings
from functools import partial

import pytest
import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from pytorch_lightning.loggers import TensorBoardLogger
from scipy.stats import norm
from torch import Tensor

from genlab import figures as FG
from genlab.callbacks import latent_pictures as LP
from genlab.callbacks.images import ImageLogger, cycle_figure
from genlab.capabilities import CanDecode, CanEncode, CanSample, HasCodeKL
from genlab.data.base import DataInfo, Split, Splits, TensorDataModule
from genlab.models.autoencoder import Autoencoder
from genlab.models.base import GenerativeModel
from genlab.nets.autoencoder import mlp_pair

SHAPE = (1, 4, 4)


STAND_IN = DataInfo("stand-in", SHAPE, num_classes=3)


class Recorder(GenerativeModel):
    """A stand-in decoder that records every code (and label) it decodes; images are zeros."""

    capabilities = frozenset({CanEncode, CanDecode})

    def __init__(self, latent_dim: int, codes: Tensor | None = None, kl: Tensor | None = None) -> None:
        super().__init__(data_info=STAND_IN)
        self.latent_dim = latent_dim
        self.codes = codes  # encode(x) returns codes[i] for the image whose first pixel is i
        self.kl = kl  # (latent_dim,) per-dimension KL of every image
        self.seen: list[Tensor] = []

    def encode(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        assert self.codes is not None
        return self.codes[x.flatten(1)[:, 0].long()]

    def decode(self, h: Tensor, y: Tensor | None = None) -> Tensor:
        self.seen.append(h.clone())
        return torch.zeros(len(h), *SHAPE)


class KLRecorder(Recorder):
    capabilities = Recorder.capabilities | {HasCodeKL}

    def kl_per_dim(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        assert self.kl is not None
        return self.kl.expand(len(x), -1)


def _indexed(n: int, y: Tensor | None = None) -> Split:
    """n float images whose first pixel is their index (so Recorder.encode can look up codes)."""
    x = torch.rand(n, *SHAPE)
    x[:, 0, 0, 0] = torch.arange(n).float()
    return Split(x, y)


def _by_name(pictures: list[LP.Picture], name: str) -> LP.Picture:
    (pic,) = [p for p in pictures if p.name == name]
    return pic


def _autoencoder(latent_dim: int, info: DataInfo | None = None) -> Autoencoder:
    torch.manual_seed(0)
    info = info or DataInfo("tiny", SHAPE, num_classes=3)
    net = partial(mlp_pair, hidden=[8])
    adam = partial(torch.optim.Adam, lr=1e-2)
    return Autoencoder(data_info=info, net=net, latent_dim=latent_dim, optimizer=adam).eval()


# ---- single pictures --------------------------------------------------------------------------
def test_manifold_decodes_the_inverse_cdf_grid() -> None:
    n, lo, hi = 5, 0.05, 0.95
    model = Recorder(2)
    images = LP.manifold(model, n, lo, hi)
    assert images.shape == (n * n, *SHAPE)
    (h,) = model.seen
    u = [lo + (hi - lo) * k / (n - 1) for k in range(n)]
    expected = [[norm.ppf(u[j]), norm.ppf(u[n - 1 - i])] for i in range(n) for j in range(n)]  # h₂ up
    assert torch.allclose(h.double(), torch.tensor(expected), atol=1e-5)
    # the picture is offered only for 2-D codes
    test = _indexed(6)
    pics = LP.LatentPictures(manifold_size=n).pictures(model, test, torch.randn(6, 2))
    assert _by_name(pics, "manifold").columns == n
    assert "manifold" not in [p.name for p in LP.LatentPictures().pictures(Recorder(3), test, torch.randn(6, 3))]


def _ticks(labels: list) -> list[str]:
    return [t.get_text() for t in labels]


def test_manifold_figure_axes_are_h1_h2_with_code_ticks() -> None:
    n, lo, hi = 20, 0.1, 0.9
    opts = LP.LatentPictures(manifold_size=n, manifold_range=(lo, hi))
    grid = _by_name(opts.pictures(Recorder(2), _indexed(6), torch.randn(6, 2)), "manifold").make()
    fig = FG.grids_figure([grid])
    (ax,) = fig.axes
    assert ax.get_xlabel() == "h₁" and ax.get_ylabel() == "h₂"
    q = [float(norm.ppf(lo + (hi - lo) * k / (n - 1))) for k in range(n)]
    shown = range(0, n, 2)  # 20 columns: every second one carries its code value
    assert _ticks(ax.get_xticklabels()) == [f"{q[j]:.2f}".replace("-", "−") for j in shown]  # h₁ to the right
    assert _ticks(ax.get_yticklabels()) == [f"{q[n - 1 - i]:.2f}".replace("-", "−") for i in shown]  # h₂ up
    (image,) = ax.get_images()
    cell = (image.get_array().shape[1] - FG.PAD) / n  # image and padding, pixels per column
    assert ax.get_xticks() == pytest.approx([FG.PAD + j * cell + (cell - FG.PAD - 1) / 2 for j in shown])
    assert ax.get_yticks() == pytest.approx([FG.PAD + i * cell + (cell - FG.PAD - 1) / 2 for i in shown])


def test_vae_traversals_move_the_dimensions_with_most_kl() -> None:
    g = torch.Generator().manual_seed(0)
    codes = torch.randn(20, 4, generator=g) * torch.tensor([5.0, 0.1, 2.0, 0.7])
    kl = torch.tensor([0.1, 2.0, 0.5, 1.0])  # KL order 1, 3, 2, 0
    opts = LP.LatentPictures(traversal_dims=3, traversal_range=2.0, traversal_steps=5)
    offsets = [-2.0, -1.0, 0.0, 1.0, 2.0]
    model = KLRecorder(4, codes, kl)
    pic = _by_name(opts.pictures(model, _indexed(20), codes), "traversals")
    grid = pic.make()
    assert pic.columns == grid.columns == 5 and grid.images.shape == (15, *SHAPE)
    h = model.seen[-1].view(3, 5, 4)
    for r, dim in enumerate([1, 3, 2]):  # base code (test image 0) with one dimension moved
        for c, off in enumerate(offsets):
            expected = codes[0].clone()
            expected[dim] += off
            assert torch.allclose(h[r, c], expected)
    assert list(grid.row_labels) == ["dim 1 · KL 2.00 nats", "dim 3 · KL 1.00 nats", "dim 2 · KL 0.50 nats"]
    assert list(grid.column_labels) == ["−2", "−1", "0", "1", "2"]


def test_autoencoder_traversals_follow_the_principal_directions_of_the_codes() -> None:
    g = torch.Generator().manual_seed(0)
    rotation, _ = torch.linalg.qr(torch.randn(4, 4, generator=g))  # oblique directions, not code axes
    codes = torch.randn(50, 4, generator=g) * torch.tensor([5.0, 2.0, 0.7, 0.1]) @ rotation.T + 3.0
    opts = LP.LatentPictures(traversal_dims=3, traversal_range=2.0, traversal_steps=5)
    offsets = torch.tensor([-2.0, -1.0, 0.0, 1.0, 2.0])
    model = Recorder(4, codes)  # no kl_per_dim: a deterministic autoencoder
    grid = _by_name(opts.pictures(model, _indexed(50), codes), "traversals").make()
    h = model.seen[-1].view(3, 5, 4)
    # by hand: eigenvectors of the sample covariance, largest eigenvalue first; σ = √eigenvalue
    eigenvalues, vectors = torch.linalg.eigh(torch.cov(codes.double().T))
    std, vectors = eigenvalues.flip(0).sqrt()[:3].float(), vectors.flip(1)[:, :3].T.float()  # (3,), (3, d)
    for r in range(3):
        delta = h[r] - codes[0]  # (5, d): the moves away from the base code
        sign = torch.sign(delta[-1] @ vectors[r])  # an eigenvector's sign is arbitrary
        assert torch.allclose(delta, sign * offsets[:, None] * std[r] * vectors[r], atol=1e-4)
        assert grid.row_labels[r] == f"PC{r + 1} · σ {float(std[r]):.2g}".replace("-", "−")
    assert list(grid.column_labels) == ["−2σ", "−1σ", "0σ", "1σ", "2σ"]
    again = LP.principal_directions(codes, 3)[0]
    assert torch.equal(again, LP.principal_directions(codes.clone(), 3)[0])  # a fixed sign, run to run


class WideCodes(GenerativeModel):
    """An autoencoder-like stand-in with codes spread over thousands: a step of 1 in a code
    dimension changes nothing visible, a step of one standard deviation does."""

    capabilities = frozenset({CanEncode, CanDecode})

    def __init__(self) -> None:
        super().__init__(data_info=STAND_IN)
        g = torch.Generator().manual_seed(4)
        self.enc, self.dec = torch.randn(16, 3, generator=g), torch.randn(3, 16, generator=g)

    def encode(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        return 1000 * x.flatten(1) @ self.enc

    def decode(self, h: Tensor, y: Tensor | None = None) -> Tensor:
        return torch.sigmoid(h @ self.dec / 1000).view(len(h), *SHAPE)


def test_autoencoder_traversal_columns_differ() -> None:
    model, opts = WideCodes(), LP.LatentPictures(traversal_dims=3, traversal_range=3.0, traversal_steps=7)
    test = Split(torch.rand(40, *SHAPE, generator=torch.Generator().manual_seed(5)))
    codes = LP.encode_all(model, test.x)
    rows = _by_name(opts.pictures(model, test, codes), "traversals").make().images.view(3, 7, -1)
    step = (rows[:, 1:] - rows[:, :-1]).abs().amax(-1)  # (rows, columns − 1): the largest pixel change
    assert (step > 0.05).all(), step
    raw = LP.traversals(model, codes[0], torch.eye(3), torch.linspace(-3, 3, 7)).view(3, 7, -1)
    assert (raw - raw[:, :1]).abs().max() < 0.01  # the old picture: raw dimensions moved by ±3, identical columns


def test_interpolation_endpoints_are_reconstructions() -> None:
    model = _autoencoder(3)
    g = torch.Generator().manual_seed(1)
    xa, xb = torch.rand(4, *SHAPE, generator=g), torch.rand(4, *SHAPE, generator=g)
    with torch.no_grad():
        rows = LP.interpolations(model, xa, xb, steps=5).view(4, 7, *SHAPE)
        ha, hb = model.encode(xa), model.encode(xb)
        assert torch.equal(rows[:, 0], xa) and torch.equal(rows[:, -1], xb)  # the real images at both ends
        assert torch.allclose(rows[:, 1], model.decode(ha), atol=1e-6)
        assert torch.allclose(rows[:, 5], model.decode(hb), atol=1e-6)
        assert torch.allclose(rows[:, 3], model.decode((ha + hb) / 2), atol=1e-6)


def test_arithmetic_vector_is_difference_of_class_means() -> None:
    model = _autoencoder(3)
    g = torch.Generator().manual_seed(2)
    test = Split(torch.rand(30, *SHAPE, generator=g), torch.randint(0, 3, (30,), generator=g))
    with torch.no_grad():
        codes = model.encode(test.x)
        sums, counts = {0: torch.zeros(3), 2: torch.zeros(3)}, {0: 0, 2: 0}
        for h, c in zip(codes, test.y.tolist()):
            if c in sums:
                sums[c] += h
                counts[c] += 1
        vector = sums[2] / counts[2] - sums[0] / counts[0]
        assert torch.allclose(LP.attribute_vector(codes, test.y, 2, 0), vector, atol=1e-6)
        opts = LP.LatentPictures(arithmetic_classes=(2, 0), arithmetic_images=4)
        pic = _by_name(opts.pictures(model, test, codes, class_names=("zero", "one", "two")), "arithmetic")
        grid = pic.make()
        rows = grid.images.view(3, 4, *SHAPE)
        x_b = test.x[test.y == 0][:4]  # the first four test images of class b = 0
        assert pic.columns == grid.columns == 4 and torch.equal(rows[0], x_b)
        assert torch.allclose(rows[1], model.decode(model.encode(x_b)), atol=1e-6)
        assert torch.allclose(rows[2], model.decode(model.encode(x_b) + vector), atol=1e-5)
    assert grid.row_labels[0] == "images of class zero" and grid.row_labels[1] == "reconstructions"
    assert grid.row_labels[2].replace("\n", " ") == "+ (mean code of two − mean code of zero)"  # a − b, named
    assert _ticks(FG.grids_figure([grid]).axes[0].get_yticklabels()) == list(grid.row_labels)
    unnamed = _by_name(opts.pictures(model, test, codes), "arithmetic").make()  # no names: class indices
    assert "of 2" in unnamed.row_labels[2] and "of 0" in unnamed.row_labels[2]
    no_labels = LP.LatentPictures().pictures(model, Split(test.x), codes)
    assert "arithmetic" not in [p.name for p in no_labels]


class ConditionalSampler(GenerativeModel):
    """sample(n, y) = noise + 10·y: equal noise shows as rows differing by exactly 10."""

    capabilities = frozenset({CanSample})

    conditional = True

    def __init__(self) -> None:
        super().__init__(data_info=STAND_IN)
        self.calls = 0

    def sample(self, n: int, y: Tensor | None = None, steps: int | None = None) -> Tensor:
        self.calls += 1
        assert y is not None
        return torch.randn(n, *SHAPE) + 10 * y.float().view(n, 1, 1, 1)


def test_class_rows_share_the_noise_of_each_column() -> None:
    sampler = ConditionalSampler()
    rows = LP.class_rows(sampler, n_classes=3, n_cols=4, seed=5).view(3, 4, *SHAPE)
    assert sampler.calls == 3  # one batch per row, not one call per image
    noise = rows - 10 * torch.arange(3).float().view(3, 1, 1, 1, 1)
    assert torch.allclose(noise, noise[:1].expand_as(noise), atol=1e-5)  # the same noise down each column
    assert not torch.allclose(noise[0, 0], noise[0, 1])  # different noise across columns
    again = LP.class_rows(ConditionalSampler(), n_classes=3, n_cols=4, seed=5)
    assert torch.equal(again.view(3, 4, *SHAPE), rows)


def test_cycle_rows_name_the_domains() -> None:
    info = DataInfo("two", SHAPE, domains=("digits", "inverted"))
    rows = tuple(torch.rand(5, *SHAPE) for _ in range(3))
    ax = cycle_figure(rows, info, "b2a").axes[0]
    assert _ticks(ax.get_yticklabels()) == ["input: inverted", "translated: digits", "translated back: inverted"]
    assert len(ax.get_images()) == 1  # one picture: the three rows of five images


class ConditionalRecorder(Recorder):
    """Codes and decoding that need the class: records the labels it decodes with."""

    conditional = True

    def encode(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        assert y is not None
        return super().encode(x)

    def decode(self, h: Tensor, y: Tensor | None = None) -> Tensor:
        assert y is not None
        self.seen.append(y.clone())
        return torch.zeros(len(h), *SHAPE)


def test_conditional_models_get_labels_and_same_class_pairs() -> None:
    y = torch.tensor([1, 0, 1, 0, 2, 2, 1])
    codes = torch.randn(7, 2)
    model = ConditionalRecorder(2, codes)
    test = _indexed(7, y)
    assert torch.equal(LP.encode_all(model, test.x, y, batch_size=3), codes)
    pics = {p.name: p for p in LP.LatentPictures(interpolation_steps=3).pictures(model, test, codes)}
    pics["manifold"].make()
    assert (model.seen[-1] == 1).all()  # the class of the base image (test image 0)
    grid = pics["interpolations"].make()
    assert torch.equal(model.seen[-1], torch.tensor([0, 1, 2]).repeat_interleave(3))  # one row per class
    assert list(grid.row_labels) == ["class 0", "class 1", "class 2"]


def test_interpolation_rows_name_the_pair_and_columns_mark_the_real_endpoints() -> None:
    model = _autoencoder(3)
    g = torch.Generator().manual_seed(6)
    test = Split(torch.rand(6, *SHAPE, generator=g), torch.tensor([2, 0, 1, 1, 0, 2]))
    opts = LP.LatentPictures(interpolation_pairs=3, interpolation_steps=4)
    with torch.no_grad():
        grid = _by_name(opts.pictures(model, test, model.encode(test.x), class_names=("a", "b", "c")),
                        "interpolations").make()
    assert list(grid.row_labels) == ["c → a", "b → b", "a → c"]  # consecutive test images, classes named
    assert list(grid.column_labels) == ["real", "t=0", "", "", "t=1", "real"]
    assert tuple(grid.separators) == (1, 5)  # lines set the real images apart from the decoded path
    ax = FG.grids_figure([grid]).axes[0]
    assert _ticks(ax.get_xticklabels()) == ["real", "t=0", "t=1", "real"]
    unlabelled = _by_name(opts.pictures(model, Split(test.x), model.encode(test.x).detach()), "interpolations")
    assert list(unlabelled.make().row_labels) == ["pair 1", "pair 2", "pair 3"]


def test_embedding_subset_labels_and_thumbnails() -> None:
    g = torch.Generator().manual_seed(3)
    x = (torch.rand(50, 1, 80, 40, generator=g) * 255).to(torch.uint8)
    test, codes = Split(x, torch.randint(0, 3, (50,), generator=g)), torch.randn(50, 4, generator=g)
    emb = LP.LatentPictures(embedding_points=20).embedding(codes, test, is_image=True, bounded=True, seed=1)
    idx = [i for i in range(50) if any(torch.equal(codes[i], row) for row in emb["mat"])]
    assert len(idx) == 20 and emb["metadata"] == test.y[idx].tolist()
    assert emb["label_img"].shape == (20, 1, 64, 32)  # shrunk to 64 pixels on the longer side
    raw = LP.thumbnails(torch.randn(5, 3, 8, 8) * 7, bounded=False)
    assert torch.allclose(raw.flatten(1).min(1).values, torch.zeros(5)) and torch.allclose(
        raw.flatten(1).max(1).values, torch.ones(5)
    )
    points = LP.LatentPictures().embedding(codes, Split(torch.randn(50, 2)), is_image=False, bounded=False)
    assert points["metadata"] is None and points["label_img"] is None and len(points["mat"]) == 50


def test_config_builds_latent_pictures(make_cfg) -> None:
    logger = instantiate(make_cfg("data=digits").callbacks.image_logger)
    assert isinstance(logger.latent, LP.LatentPictures) and logger.latent.manifold_size == 20


# ---- end to end ---------------------------------------------------------------------------------
class TinyImages(TensorDataModule):
    @property
    def info(self) -> DataInfo:
        return DataInfo("tiny", SHAPE, num_classes=3)

    def load(self) -> Splits:
        g = torch.Generator().manual_seed(0)

        def make(n: int) -> Split:
            y = torch.randint(0, 3, (n,), generator=g)
            return Split((torch.rand(n, *SHAPE, generator=g) * 255).to(torch.uint8), y)

        return Splits(train=make(40), test=make(60))


def test_tiny_run_writes_latent_pictures_and_projector(tmp_path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    dm = TinyImages(eval_batch_size=32)
    latent = LP.LatentPictures(manifold_size=4, interpolation_pairs=3, embedding_points=30)
    trainer = pl.Trainer(
        accelerator="cpu",
        logger=TensorBoardLogger(str(tmp_path), name="tb"),
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[ImageLogger(str(tmp_path), n_images=8, latent=latent)],
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.test(_autoencoder(2), datamodule=dm)
    assert not [str(w.message) for w in caught if "ImageLogger" in str(w.message)]  # every picture rendered
    names = {p.name for p in (tmp_path / "images").iterdir()}
    assert {"manifold.png", "traversals.png", "interpolations.png", "arithmetic.png", "codes.png"} <= names
    (run,) = {p.parent for p in (tmp_path / "tb").rglob("events.out.tfevents.*")}
    acc = EventAccumulator(str(run), size_guidance={"images": 0})
    acc.Reload()
    tags = {f"test/{n}" for n in ("manifold", "traversals", "interpolations", "arithmetic")}
    assert tags <= set(acc.Tags()["images"])
    config = (run / "projector_config.pbtxt").read_text()
    assert "test_codes" in config and "sprite" in config and "metadata" in config


def test_points_skip_image_pictures(tmp_path) -> None:
    class Points(TinyImages):
        @property
        def info(self) -> DataInfo:
            return DataInfo("points", (2,), bounded=False)

        def load(self) -> Splits:
            return Splits(train=Split(torch.randn(40, 2)), test=Split(torch.randn(30, 2)))

    dm = Points(eval_batch_size=32)
    logger = ImageLogger(str(tmp_path), latent=LP.LatentPictures())
    trainer = pl.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, callbacks=[logger])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.test(_autoencoder(2, dm.info), datamodule=dm)
    assert not [w for w in caught if "ImageLogger" in str(w.message)]  # skipped quietly, nothing failed
    assert {p.name for p in (tmp_path / "images").iterdir()} == {"reconstructions.png", "codes.png"}
