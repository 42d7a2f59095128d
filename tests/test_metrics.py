"""Metrics against closed forms and reference implementations; callbacks on a tiny run."""

from __future__ import annotations

from dataclasses import replace
from functools import partial

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from pytorch_lightning.loggers import TensorBoardLogger
from sklearn.decomposition import PCA
from torch import Tensor, nn

from genlab import figures as FG
from genlab.callbacks.evaluator import configured_evaluator
from genlab.callbacks.images import Figure, ImageLogger
from genlab.capabilities import CanDecode, CanEncode, CanReconstruct, CanSample, PictureSpec
from genlab.data.base import Batch, DataInfo, Split, Splits, TensorDataModule
from genlab.errors import UserError
from genlab.metrics import codes as K
from genlab.metrics import reconstruction as M
from genlab.metrics.base import Context, Metric
from genlab.models import pca as P
from genlab.models.base import GenerativeModel


def _anisotropic(n: int, d: int, seed: int = 0) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g) * torch.linspace(3.0, 0.1, d) + 5.0


# ---- PCA --------------------------------------------------------------------------------------
def test_pca_error_is_sum_of_discarded_eigenvalues() -> None:
    n, d, k = 200, 10, 3
    x = _anisotropic(n, d)
    fit = P.fit_pca(x, k)
    eig = torch.linalg.eigvalsh(torch.cov(x.double().T)).flip(0)  # sample covariance, divisor N - 1
    err = M.squared_error_per_image(x, P.pca_reconstruct(fit, x)).double()
    # Σ_i ||x_i − x̂_i||² = (N − 1) Σ_{j>k} λ_j, so the mean per sample carries (N − 1) / N
    assert err.mean().item() == pytest.approx((n - 1) / n * eig[k:].sum().item(), rel=1e-5)
    assert torch.allclose(fit.explained_variance.double(), eig[:k], rtol=1e-5)
    assert fit.mean.shape == (d,) and fit.components.shape == (d, k) and fit.components.dtype == torch.float32
    assert torch.allclose(fit.components.T @ fit.components, torch.eye(k), atol=1e-5)


def test_pca_matches_sklearn() -> None:
    x, x_test = _anisotropic(150, 12, seed=1), _anisotropic(50, 12, seed=2)
    fit = P.fit_pca(x, 4)
    sk = PCA(n_components=4).fit(x.double().numpy())
    dots = (fit.components.double().numpy() * sk.components_.T).sum(0)  # each column equal up to sign
    assert np.allclose(np.abs(dots), 1.0, atol=1e-5)
    assert np.allclose(fit.explained_variance.numpy(), sk.explained_variance_, rtol=1e-5)
    ours = P.pca_reconstruct(fit, x_test).numpy()
    theirs = sk.inverse_transform(sk.transform(x_test.double().numpy()))
    assert np.allclose(ours, theirs, atol=1e-4)
    h = P.pca_encode(fit, x_test)
    assert h.shape == (50, 4)
    assert P.pca_decode(fit, h, (3, 4)).shape == (50, 3, 4)


# ---- errors, AUROC, probes, projection -----------------------------------------------------------
def test_squared_error_per_image_against_loop() -> None:
    g = torch.Generator().manual_seed(0)
    x, x_hat = torch.rand(5, 2, 3, 4, generator=g), torch.rand(5, 2, 3, 4, generator=g)
    expected = []
    for i in range(5):
        expected.append(
            sum(float(x[i, c, h, w] - x_hat[i, c, h, w]) ** 2 for c in range(2) for h in range(3) for w in range(4))
        )
    assert torch.allclose(M.squared_error_per_image(x, x_hat), torch.tensor(expected), rtol=1e-5)
    assert torch.allclose(M.mse_per_pixel(x, x_hat), torch.tensor(expected) / 24, rtol=1e-5)


def test_auroc_against_pairwise_count() -> None:
    g = torch.Generator().manual_seed(0)
    scores = torch.randint(0, 5, (60,), generator=g).float()  # few values: many ties
    pos = torch.rand(60, generator=g) < 0.3 + 0.1 * scores
    sp, sn = scores[pos], scores[~pos]
    pairs = (sp[:, None] > sn[None, :]).double() + 0.5 * (sp[:, None] == sn[None, :]).double()
    assert M.auroc(scores, pos) == pytest.approx(pairs.mean().item(), abs=1e-9)
    assert np.isnan(M.auroc(scores, torch.ones(60, dtype=torch.bool)))


def test_probes_separable_and_random() -> None:
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(3, 6, generator=g) * 10
    y = torch.randint(0, 3, (600,), generator=g)
    codes = centres[y] + torch.randn(600, 6, generator=g)
    args = (codes[:400], y[:400], codes[400:], y[400:])
    assert K.linear_probe_accuracy(*args) > 0.98
    assert K.knn_accuracy(*args, k=5) > 0.98
    noise, coin = torch.randn(1000, 6, generator=g), torch.randint(0, 2, (1000,), generator=g)
    args = (noise[:600], coin[:600], noise[600:], coin[600:])
    assert 0.38 < K.linear_probe_accuracy(*args) < 0.62
    assert 0.38 < K.knn_accuracy(*args) < 0.62


def test_project_2d_shapes() -> None:
    g = torch.Generator().manual_seed(0)
    one, two, many = torch.randn(20, 1, generator=g), torch.randn(20, 2, generator=g), _anisotropic(20, 7)
    p1 = K.project_2d(one)
    assert p1.shape == (20, 2) and torch.equal(p1[:, 0], one[:, 0]) and not p1[:, 1].any()
    assert torch.equal(K.project_2d(two), two)
    p = K.project_2d(many)
    assert p.shape == (20, 2) and p[:, 0].var() >= p[:, 1].var()


# ---- callbacks on a tiny run ---------------------------------------------------------------------
class TinyImages(TensorDataModule):
    """Three classes of noisy 8x8 uint8 templates; class 2 is held out of training."""

    @property
    def info(self) -> DataInfo:
        return DataInfo("tiny", (1, 8, 8), num_classes=3)

    def load(self) -> Splits:
        g = torch.Generator().manual_seed(0)
        templates = torch.rand(3, 1, 8, 8, generator=g)

        def make(n: int) -> Split:
            y = torch.randint(0, 3, (n,), generator=g)
            x = 0.8 * templates[y] + 0.2 * torch.rand(n, 1, 8, 8, generator=g)
            return Split((x * 255).round().to(torch.uint8), y)

        return Splits(train=make(300), test=make(150))


class TinyPoints(TensorDataModule):
    @property
    def info(self) -> DataInfo:
        return DataInfo("points", (2,), bounded=False)

    def load(self) -> Splits:
        g = torch.Generator().manual_seed(0)
        return Splits(train=Split(torch.randn(200, 2, generator=g)), test=Split(torch.randn(100, 2, generator=g)))


class PCAModel(GenerativeModel):
    """Exactly the PCA baseline: encode/decode with a fixed fit (lr 0 on a dummy weight)."""

    capabilities = frozenset({CanEncode, CanDecode, CanReconstruct})

    def __init__(self, info: DataInfo, fit: P.PCAFit) -> None:
        super().__init__(data_info=info, optimizer=partial(torch.optim.SGD, lr=0.0))
        self.fit_ = fit
        self.latent_dim = fit.k
        self.dummy = nn.Parameter(torch.zeros(()))

    def encode(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        return P.pca_encode(self.fit_, x)

    def decode(self, h: Tensor, y: Tensor | None = None) -> Tensor:
        return P.pca_decode(self.fit_, h, self.data_info.shape)

    def reconstruct(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        return self.decode(self.encode(x))

    def loss_terms(self, batch: Batch, stage: str) -> dict[str, Tensor]:
        x = batch["x"]
        return {"loss": M.squared_error_per_image(x, self.reconstruct(x)).mean() + 0 * self.dummy}


class IdentityModel(GenerativeModel):
    """Reconstructs perfectly; a conditional sampler of constant images (grey level = class)."""

    capabilities = frozenset({CanEncode, CanReconstruct, CanSample})

    conditional = True

    def __init__(self, info: DataInfo) -> None:
        super().__init__(data_info=info)
        self.latent_dim = 2

    def encode(self, x: Tensor, y: Tensor | None = None) -> Tensor:  # conditional: takes y
        return x.flatten(1)[:, :2]

    def reconstruct(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        return x.clone()

    def sample(self, n: int, y: Tensor | None = None, steps: int | None = None) -> Tensor:
        level = torch.rand(n) if y is None else y.float().cpu() / 2
        return level.view(n, *[1] * len(self.data_info.shape)).expand(n, *self.data_info.shape).clone()

    def loss_terms(self, batch: Batch, stage: str) -> dict[str, Tensor]:
        return {"loss": torch.zeros(())}


class PointIdentity(IdentityModel):
    conditional = False


def _trainer(tmp_path, **kw) -> pl.Trainer:
    evaluator = configured_evaluator(overrides=["metrics.probes.max_train=100"])
    callbacks = [evaluator, ImageLogger(str(tmp_path), n_images=8)]
    return pl.Trainer(
        accelerator="cpu",
        max_epochs=1,
        logger=TensorBoardLogger(str(tmp_path), name="tb"),
        callbacks=callbacks,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        **kw,
    )


def _image_tags(tmp_path) -> set[str]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    (run,) = {p.parent for p in (tmp_path / "tb").rglob("events.out.tfevents.*")}
    acc = EventAccumulator(str(run), size_guidance={"images": 0})
    acc.Reload()
    return set(acc.Tags()["images"])


def test_evaluator_pca_model_matches_baseline(tmp_path) -> None:
    dm = TinyImages(batch_size=32, eval_batch_size=64, holdout_class=2)
    dm.setup()
    model = PCAModel(dm.info, P.fit_pca(dm.tensors("train").x, 4))
    trainer = _trainer(tmp_path)
    trainer.fit(model, datamodule=dm)
    trainer.test(model, datamodule=dm)
    m = {k: float(v) for k, v in trainer.callback_metrics.items()}
    assert m["test/sq_err_vs_pca"] == pytest.approx(1.0, abs=1e-4)
    assert m["test/sq_err_per_image"] == pytest.approx(m["test/pca_sq_err_per_image"], rel=1e-4)
    assert m["test/mse_per_pixel"] == pytest.approx(m["test/sq_err_per_image"] / 64, rel=1e-5)
    assert m["test/novelty_auroc"] > 0.9  # class 2 lies outside the subspace fitted without it
    assert m["test/linear_probe_acc"] > 0.9 and m["test/knn_acc"] > 0.9
    assert {"val/reconstructions", "test/reconstructions", "test/codes"} <= _image_tags(tmp_path)
    assert {p.name for p in (tmp_path / "images").iterdir()} == {"reconstructions.png", "codes.png", "neighbours.png"}
    assert 0.5 < m["test/novelty_auroc_codes"] <= 1  # the unseen class's codes lie away from the training codes


def test_max_test_scores_the_model_and_its_pca_baseline_on_the_same_fixed_subset() -> None:
    dm = TinyImages(eval_batch_size=64)
    dm.setup()
    # a model whose subspace differs from the baseline's (fitted on test images, not training images)
    model = PCAModel(dm.info, P.fit_pca(dm.tensors("test").x, 2))
    subset = dm.splits["test"].pick(40, seed=0)  # the evaluator's seed
    x = TensorDataModule.scale(subset.x)
    by_hand = M.squared_error_per_image(x, model.reconstruct(x)).mean().item()
    baseline = P.fit_pca(dm.tensors("train").x, 2)
    pca_by_hand = M.squared_error_per_image(x, P.pca_reconstruct(baseline, x)).mean().item()
    scores = configured_evaluator(overrides=["max_test=40"]).evaluate(model, dm)
    assert scores["test/sq_err_per_image"] == pytest.approx(by_hand, rel=1e-5)
    assert scores["test/pca_sq_err_per_image"] == pytest.approx(pca_by_hand, rel=1e-5)
    whole = configured_evaluator().evaluate(model, dm)  # all 150 test images: other figures
    assert whole["test/sq_err_per_image"] != pytest.approx(by_hand, rel=1e-3)
    with pytest.raises(UserError, match="max_test"):
        configured_evaluator(overrides=["max_test=0"])


def test_evaluator_perfect_model_and_samples(tmp_path) -> None:
    dm = TinyImages(eval_batch_size=64, holdout_class=2)
    trainer = _trainer(tmp_path)
    trainer.test(IdentityModel(dm.info), datamodule=dm)
    m = {k: float(v) for k, v in trainer.callback_metrics.items()}
    assert m["test/sq_err_per_image"] == 0.0 and m["test/sq_err_vs_pca"] == 0.0
    assert m["test/pca_sq_err_per_image"] > 0
    assert m["test/novelty_auroc"] == pytest.approx(0.5)  # all errors tie
    assert 0.0 <= m["test/knn_acc"] <= 1.0
    assert {p.name for p in (tmp_path / "images").iterdir()} == {"reconstructions.png", "samples.png", "codes.png",
                                                                 "neighbours.png"}
    assert "test/samples" in _image_tags(tmp_path)
    from PIL import Image

    assert min(Image.open(tmp_path / "images" / "samples.png").size) >= 3 * 28  # three class rows, upscaled


class NamedTinyImages(TinyImages):
    @property
    def info(self) -> DataInfo:
        return DataInfo("tiny", (1, 8, 8), num_classes=3, class_names=("circle", "square", "star"))


class LabelKeeper(ImageLogger):
    """Keeps the row labels of every figure it writes (per axes, top to bottom) before the figure is cleared."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.rows: dict[str, list[list[str]]] = {}

    def emit(self, trainer: pl.Trainer, spec: PictureSpec, *args, **kwargs) -> None:
        def keep() -> Figure:
            fig = spec.draw()
            assert isinstance(fig, Figure)  # the stage pictures are figures
            self.rows[spec.tag] = [[t.get_text() for t in ax.get_yticklabels()] for ax in fig.axes]
            return fig

        super().emit(trainer, replace(spec, draw=keep), *args, **kwargs)


def test_sample_rows_carry_class_names_and_reconstruction_rows_say_which_is_which(tmp_path) -> None:
    dm = NamedTinyImages(eval_batch_size=64)
    keeper = LabelKeeper(str(tmp_path), n_images=16)
    trainer = pl.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
                         callbacks=[keeper])
    trainer.test(IdentityModel(dm.info), datamodule=dm)
    assert keeper.rows["test/samples"] == [["circle", "square", "star"]]  # one row per class, in class order
    assert keeper.rows["test/reconstructions"] == [["original", "reconstruction"] * 2]  # 16 images: 2 rows each
    unnamed = LabelKeeper(str(tmp_path / "unnamed"))
    dm = TinyImages(eval_batch_size=64)
    pl.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
               callbacks=[unnamed]).test(IdentityModel(dm.info), datamodule=dm)
    assert unnamed.rows["test/samples"] == [["0", "1", "2"]]  # no class names: the indices
    blocks = [torch.arange(8).view(8, 1, 1, 1), 10 + torch.arange(8).view(8, 1, 1, 1)]
    rows = FG.interleaved_rows(blocks, 4).view(4, 4)  # each row of originals directly above its reconstructions
    assert rows.tolist() == [[0, 1, 2, 3], [10, 11, 12, 13], [4, 5, 6, 7], [14, 15, 16, 17]]


def test_points_and_failing_png_do_not_crash(tmp_path, monkeypatch) -> None:
    dm = TinyPoints(eval_batch_size=64)
    trainer = _trainer(tmp_path)
    trainer.test(PointIdentity(dm.info), datamodule=dm)
    assert (
        "test/linear_probe_acc" not in trainer.callback_metrics and "test/novelty_auroc" not in trainer.callback_metrics
    )
    assert {p.name for p in (tmp_path / "images").iterdir()} == {"reconstructions.png", "samples.png", "codes.png"}

    def broken(*args, **kwargs) -> None:
        raise RuntimeError("no matplotlib today")

    monkeypatch.setattr(Figure, "savefig", broken)
    with pytest.warns(UserWarning, match="ImageLogger: could not write"):
        _trainer(tmp_path / "again").test(PointIdentity(dm.info), datamodule=dm)


class MeanPixel(Metric):
    """A metric defined outside genlab: the mean test pixel, for any model on image data."""

    columns = ("mean_pixel",)

    def applies(self, ctx: Context) -> bool:
        return ctx.info.is_image

    def compute(self, ctx: Context) -> dict[str, float]:
        return {"test/mean_pixel": ctx.dm.tensors("test").x.mean().item()}


def test_metrics_are_switched_off_and_added_by_config_overrides(make_cfg) -> None:
    from conftest import FAST, TINY

    from genlab.train import train

    cfg = make_cfg("model=ae", "data=digits", *TINY["digits"], *FAST, "~callbacks.evaluator.metrics.probes",
                   "+callbacks.evaluator.metrics.mean_pixel={_target_: test_metrics.MeanPixel}")
    metrics = train(cfg)
    assert "test/knn_acc" not in metrics and "test/linear_probe_acc" not in metrics  # switched off
    assert "test/sq_err_per_image" in metrics  # the others still run
    dm = instantiate(cfg.data)
    dm.setup("test")
    assert metrics["test/mean_pixel"] == pytest.approx(dm.tensors("test").x.mean().item(), rel=1e-6)
    with pytest.raises(UserError, match="^callbacks.evaluator.metrics.bad is a .*not a metric"):
        configured_evaluator(overrides=["metrics.bad._target_=builtins.dict"])
    with pytest.raises(UserError, match="^callbacks.evaluator.metrics.likelihood.samples=0 is out of range"):
        configured_evaluator(overrides=["metrics.likelihood.samples=0"])  # at start-up, not after training
