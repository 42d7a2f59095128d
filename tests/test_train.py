"""End-to-end runs of every model config, config composition for every pair, and the
errors a user sees for bad input (a clear message, a non-zero exit, no run touched)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import DATASETS, FAST, MODELS, TINY
from hydra.utils import get_class, instantiate

from genlab.errors import IncompatibleError
from genlab.run import build
from genlab.train import train

IMAGE_ONLY = {"conv_ae", "conv_vae", "dcgan", "cgan", "infogan", "cyclegan"}
POINTS_ONLY = {"toy_gan"}
# the smoke run's data where tiny digits do not fit the model, and the tiny overrides per dataset
SMOKE_DATA = {"linear_ae": "toy2d", "toy_gan": "toy2d", "cyclegan": "digits_inverted"}
SMOKE_TINY = {**TINY, "digits_inverted": TINY["digits"]}


def _pairs() -> list[tuple[str, str]]:
    return [(m, d) for m in MODELS for d in DATASETS]


@pytest.mark.parametrize("model,data", _pairs())
def test_every_model_composes_with_every_dataset(make_cfg, image_folder, model: str, data: str) -> None:
    """Composition and model construction (no data loading) for every pair; the pairs that
    cannot work must say why instead of failing later."""
    folder = data in ("image_folder", "unpaired_folder")
    extra = [f"data.path={image_folder}", "data.image_size=16"] if folder else []
    cfg = make_cfg(f"model={model}", f"data={data}", *extra)
    if data == "toy2d" and "latent_dim" in cfg.model:  # 2-D points: a 1-D code, the lectures' manifold
        cfg.model.latent_dim = 1
    dm = instantiate(cfg.data)
    if model in IMAGE_ONLY and not dm.info.is_image:
        with pytest.raises(IncompatibleError, match="image data"):
            build(cfg.model, data_info=dm.info)
        return
    if model in POINTS_ONLY and dm.info.shape != (2,):
        with pytest.raises(IncompatibleError, match="2-D points"):
            build(cfg.model, data_info=dm.info)
        return
    if getattr(get_class(cfg.model._target_), "needs_domains", 0) > len(dm.info.domains):
        with pytest.raises(IncompatibleError, match="unpaired domains"):
            build(cfg.model, data_info=dm.info)
        return
    if getattr(get_class(cfg.model._target_), "conditional", False) and not dm.info.has_labels:
        with pytest.raises(IncompatibleError, match="labels"):
            build(cfg.model, data_info=dm.info)
        return
    net = build(cfg.model, data_info=dm.info)
    x = torch.rand(2, *dm.info.shape)
    if hasattr(net, "reconstruct"):
        assert net.reconstruct(x).shape == x.shape


@pytest.mark.parametrize("model", MODELS)
def test_every_model_trains_tests_and_writes_its_run(make_cfg, model: str) -> None:
    data = SMOKE_DATA.get(model, "digits")
    # translation accuracy needs two classifiers trained: test_cyclegan.py covers it; cycles here
    extra = ["callbacks.evaluator.classifier_cache=null"] if data == "digits_inverted" else []
    cfg = make_cfg(f"model={model}", f"data={data}", *SMOKE_TINY[data], *FAST, *extra)
    metrics = train(cfg)
    out = Path(cfg.paths.output_dir)
    written = json.loads((out / "metrics.json").read_text())
    assert written["metrics"]["test/loss"] == pytest.approx(metrics["test/loss"])
    assert torch.isfinite(torch.tensor(metrics["test/loss"]))
    if not hasattr(get_class(cfg.model._target_), "reconstruct"):  # samplers only (the GANs)
        assert (out / "images" / "samples.png").is_file()
    else:
        assert "test/sq_err_per_image" in metrics
        if hasattr(get_class(cfg.model._target_), "encode"):  # a code: the PCA baseline of its size
            assert "test/pca_sq_err_per_image" in metrics
        if hasattr(get_class(cfg.model._target_), "translate"):  # two domains: cycles and translation accuracy
            assert "test/cycle_error_a" in metrics and (out / "images" / "cycle_b2a.png").is_file()
        if data == "digits":
            assert 0 <= metrics["test/knn_acc"] <= 1
            assert (out / "images" / "reconstructions.png").is_file()
    assert list((out / "checkpoints").glob("*.ckpt"))


def test_best_checkpoint_reloads_and_reproduces_the_test_metrics(make_cfg) -> None:
    from genlab.eval.evaluator import Evaluator
    from genlab.models.autoencoder import Autoencoder

    cfg = make_cfg("model=ae", "data=digits", *TINY["digits"], *FAST, "trainer.limit_test_batches=1.0")
    metrics = train(cfg)
    best = json.loads((Path(cfg.paths.output_dir) / "metrics.json").read_text())["best_checkpoint"]
    # the checkpoint holds the network builders as hyperparameters, so it rebuilds by itself
    model = Autoencoder.load_from_checkpoint(best, weights_only=False)
    dm = instantiate(cfg.data)
    dm.setup("test")
    again = Evaluator().evaluate(model.eval(), dm)
    assert again["test/sq_err_per_image"] == pytest.approx(metrics["test/sq_err_per_image"], rel=1e-5)
