"""End-to-end runs of every model config and every experiment preset, config composition for every
model/dataset pair with the expected outcome computed from what the model and its network builders
declare they need (never from lists of model names), and the reload of a best checkpoint."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from conftest import DATASETS, EXPERIMENTS, FAST, MODELS, TINY
from hydra.utils import get_class, get_method, instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

from genlab.callbacks.images import GRID_COLUMNS
from genlab.capabilities import CanEncode, CanReconstruct, CanSample, CanTranslate, Needs, PictureRequest, capable
from genlab.checkpoints import build_model
from genlab.data.base import DataInfo
from genlab.errors import IncompatibleError
from genlab.run import load_model
from genlab.runfolder import RunFolder
from genlab.train import train

SMOKE_TINY = {**TINY, "digits_inverted": TINY["digits"]}


def declared_needs(model_cfg: DictConfig) -> Needs:
    """What a model config needs: its class's declared needs, labels when it is conditional, and what
    each network builder it names (``_partial_`` entries) declares."""
    cls = get_class(model_cfg["_target_"])
    needs = cls.needs | Needs(labels=cls.conditional)
    for value in model_cfg.values():
        if isinstance(value, DictConfig) and value.get("_partial_") and "_target_" in value:
            declared = getattr(get_method(value["_target_"]), "needs", None)
            needs = needs | declared if declared is not None else needs
    return needs


def serves(needs: Needs, info: DataInfo) -> bool:
    """Whether data described by ``info`` has everything ``needs`` asks for (written out here, as the
    independent check of Needs.problems)."""
    return ((not needs.image or len(info.shape) == 3) and (not needs.labels or info.num_classes is not None)
            and needs.domains <= max(1, len(info.domains)) and (needs.shape is None or info.shape == needs.shape)
            and (needs.views == 1 or len(info.shape) == 3))


@pytest.mark.parametrize("model,data", [(m, d) for m in MODELS for d in DATASETS])
def test_every_model_composes_with_every_dataset(make_cfg, image_folder, model: str, data: str) -> None:
    """Composition and model construction (no data loading) for every pair; the pairs that
    cannot work must say why at construction instead of failing later."""
    folder = data in ("image_folder", "unpaired_folder")
    extra = [f"data.path={image_folder}", "data.image_size=16"] if folder else []
    cfg = make_cfg(f"model={model}", f"data={data}", *extra)
    skip_if_it_needs_a_run(cfg.model)
    if data == "toy2d" and "latent_dim" in cfg.model:  # 2-D points: a 1-D code, the lectures' manifold
        cfg.model.latent_dim = 1
    info = instantiate(cfg.data).info
    if not serves(declared_needs(cfg.model), info):
        with pytest.raises(IncompatibleError) as e:
            build_model(cfg.model, info)
        assert info.name in str(e.value)  # the reason names the data
        return
    net = build_model(cfg.model, info)
    x = torch.rand(2, *info.shape)
    if capable(net, CanReconstruct):
        assert net.reconstruct(x).shape == x.shape


def skip_if_it_needs_a_run(model_cfg: DictConfig) -> None:
    """A model config with a value only the user can give (``???``: latent_ddpm's model.autoencoder, a finished
    run's folder) cannot be built blind; its own tests give it one."""
    missing = sorted(OmegaConf.missing_keys(model_cfg))
    if missing:
        pytest.skip(f"{missing[0]} must be given (its family's tests do)")


def smoke_data(model: str, make_cfg) -> str:
    """The first built-in dataset the model serves on: digits, else 2-D points, else two domains."""
    needs = declared_needs(make_cfg(f"model={model}").model)
    for data in ("digits", "toy2d", "digits_inverted"):
        if serves(needs, instantiate(make_cfg(f"data={data}").data).info):
            return data
    raise AssertionError(f"no built-in dataset serves model={model}")


@pytest.mark.parametrize("model", MODELS)
def test_every_model_trains_tests_and_writes_its_run(make_cfg, model: str) -> None:
    skip_if_it_needs_a_run(make_cfg(f"model={model}").model)
    data = smoke_data(model, make_cfg)
    # translation accuracy needs two classifiers trained: test_cyclegan.py covers it; cycles here
    extra = ["callbacks.evaluator.classifier_cache=null"] if data == "digits_inverted" else []
    cfg = make_cfg(f"model={model}", f"data={data}", *SMOKE_TINY[data], *FAST, *extra, "smoke=true")
    metrics = train(cfg)
    out = Path(cfg.paths.output_dir)
    written = json.loads((out / "metrics.json").read_text())
    assert written["metrics"]["test/loss"] == pytest.approx(metrics["test/loss"])
    assert math.isfinite(metrics["test/loss"])
    # what to expect follows from the class's declared capabilities and the pictures the model lists
    can = get_class(cfg.model._target_).capabilities
    images = out / "images"
    if CanSample in can:
        assert (images / "samples.png").is_file()
    if CanReconstruct in can:
        assert "test/sq_err_per_image" in metrics
    if CanEncode in can:  # a code: the probes; with reconstructions, the PCA baseline of its size
        assert ("test/pca_sq_err_per_image" in metrics) == (CanReconstruct in can)
        assert 0 <= metrics["test/knn_acc"] <= 1 and (images / "codes.png").is_file()
    if CanTranslate in can:  # two domains: cycles and their pictures
        assert "test/cycle_error_a" in metrics and (images / "cycle_b2a.png").is_file()
    if data == "digits" and CanReconstruct in can:
        assert (images / "reconstructions.png").is_file()
    model = load_model(None, out / written["best_checkpoint"])
    unused = lambda split, n: pytest.fail("listing pictures draws nothing")  # noqa: E731
    request = PictureRequest("test", model.data_info, GRID_COLUMNS, 10, model.trained_batches, unused)
    for spec in model.pictures(request):  # the model's own pictures of the test's end: every file written
        assert spec.file is None or (images / spec.file).is_file(), spec.tag
    assert (out / written["best_checkpoint"]).is_file()


def test_a_smoke_run_caps_the_evaluation_budget_where_the_config_has_the_keys(make_cfg) -> None:
    from genlab.run import smoke_budget

    cfg = make_cfg("experiment=ring8_ddpm", "debug=fast", "callbacks.evaluator.metrics.likelihood.samples=3")
    smoke_budget(cfg)
    assert cfg.model.sample_steps == 5 and cfg.callbacks.evaluator.sample_steps == 5  # both were null (all T steps)
    assert cfg.callbacks.evaluator.max_test == 100 and cfg.callbacks.image_logger.n_points == 100
    assert cfg.callbacks.evaluator.metrics.likelihood.samples == 3  # already below the cap: kept
    rbm = make_cfg("model=rbm", "debug=fast", "model.ais_runs=null")
    smoke_budget(rbm)
    assert (rbm.model.sample_steps, rbm.model.ais_betas, rbm.model.ais_runs) == (5, 100, None)  # null: the budget's
    bare = make_cfg("model=ae", "debug=fast", "callbacks=none")
    smoke_budget(bare)
    assert not bare.get("callbacks") and "sample_steps" not in bare.model  # nothing added where no key was
    full = make_cfg("experiment=ring8_ddpm")
    smoke_budget(full)  # smoke=false: untouched
    assert full.model.sample_steps is None and full.callbacks.evaluator.max_test is None  # all T steps


@pytest.mark.slow
@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_preset_composes_and_smoke_trains(make_cfg, fake_mnist, experiment: str) -> None:
    """Every conf/experiment/*.yaml, as a user would run it with debug=fast; presets made for MNIST
    read tiny MNIST files written by the test."""
    cfg = make_cfg(f"experiment={experiment}", "debug=fast", "trainer.enable_progress_bar=false")
    skip_if_it_needs_a_run(cfg.model)  # mnist_caption_to_image: a CLIP run (test_diffusion.py trains one)
    assert cfg.trainer.max_epochs == 1 and cfg.trainer.limit_train_batches == 2  # debug=fast wins over the preset
    assert cfg.smoke  # and gives the evaluation a token budget (genlab.run.smoke_budget)
    with open_dict(cfg):
        cfg.data.root = str(fake_mnist)
        cfg.data.max_train = 64
        if "n_samples" in cfg.data:
            cfg.data.n_samples = min(cfg.data.n_samples, 400)
    metrics = train(cfg)
    out = Path(cfg.paths.output_dir)
    assert math.isfinite(metrics["test/loss"]) and (out / "metrics.json").is_file()
    assert (out / json.loads((out / "metrics.json").read_text())["best_checkpoint"]).is_file()
    # genlab's own folder is data it accepts without trust: its config (read by resume=, genlab-eval and
    # genlab-sample) and its tested checkpoint with the config it carries (model.autoencoder=, model.clip=)
    (out / ".hydra").mkdir(exist_ok=True)
    OmegaConf.save(cfg, out / ".hydra" / "config.yaml")  # as genlab-train's Hydra run writes it
    folder = RunFolder(out)
    assert folder.config(trust=False).model._target_ == cfg.model._target_
    assert type(load_model(None, folder.tested_checkpoint())).__name__ == cfg.model._target_.rsplit(".", 1)[-1]


def test_best_checkpoint_reloads_and_reproduces_the_test_metrics(make_cfg) -> None:
    from genlab.callbacks.evaluator import configured_evaluator
    from genlab.models.autoencoder import Autoencoder

    cfg = make_cfg("model=ae", "data=digits", *TINY["digits"], *FAST, "trainer.limit_test_batches=1.0")
    metrics = train(cfg)
    best = json.loads((Path(cfg.paths.output_dir) / "metrics.json").read_text())["best_checkpoint"]
    # the checkpoint carries the model's config as plain data, so it rebuilds without unpickling
    model = load_model(None, Path(cfg.paths.output_dir) / best)
    assert isinstance(model, Autoencoder) and best.startswith("checkpoints/")  # relative to the run folder
    dm = instantiate(cfg.data)
    dm.setup("test")
    again = configured_evaluator().evaluate(model.eval(), dm)
    assert again["test/sq_err_per_image"] == pytest.approx(metrics["test/sq_err_per_image"], rel=1e-5)


def test_every_preset_the_configs_and_readme_mention_exists() -> None:
    import re

    from conftest import CONF

    root = CONF.resolve().parent  # the checkout (genlab/conf may be a link to its conf/)
    docs = [root / "README.md", *sorted((root / "docs").glob("*.md"))]
    texts = [p.read_text() for p in CONF.rglob("*.yaml")] + [p.read_text() for p in docs]
    named = {m for t in texts for m in re.findall(r"experiment=([A-Za-z0-9_]+)", t)}
    assert named and named <= set(EXPERIMENTS), sorted(named - set(EXPERIMENTS))
