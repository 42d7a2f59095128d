"""A family that exists only in the tests (tests/genlab_plugins/gaussian.py and tests/conf/model/gaussian.yaml)
is composed as ``model=gaussian`` through Hydra's search path and genlab's schema registry, and runs through
genlab-train's recipe, the unchanged evaluator and the unchanged pictures: its own likelihood bound under its
own name and unit, its iterative sampler under the evaluator's step budget, its declared needs, its schema's
types and ranges."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from conftest import CACHE, FAST, TINY
from genlab_plugins.gaussian import DiagonalGaussian
from hydra.utils import instantiate
from torch.distributions import Normal

from genlab.callbacks.evaluator import configured_evaluator
from genlab.checkpoints import build_model
from genlab.errors import IncompatibleError
from genlab.run import load_model
from genlab.train import train

PLUGIN = [f"hydra.searchpath=[file://{Path(__file__).parent / 'conf'}]", "model=gaussian"]


def test_the_new_family_trains_and_is_scored_by_the_unchanged_evaluator(make_cfg) -> None:
    cfg = make_cfg(*PLUGIN, "data=digits", *TINY["digits"], *FAST, "trainer.max_epochs=3",
                   "trainer.limit_test_batches=1.0", "callbacks.evaluator.sample_steps=3")
    assert cfg.model.steps == 10 and cfg.model.step_size == 0.2  # the YAML's value, the schema's default
    metrics = train(cfg)
    out = Path(cfg.paths.output_dir)
    written = json.loads((out / "metrics.json").read_text())
    assert written["units"] == {"test/bpd": "bits/dim"}  # named by the model, not by the evaluator
    for name in ("fid", "fid_floor", "kid", "mmd2", "precision", "recall"):  # every sampler's metrics
        assert math.isfinite(metrics[f"test/{name}"])
    assert metrics["test/sample_steps"] == 3 and (out / "images" / "samples.png").is_file()
    assert "test/sq_err_per_image" not in metrics and "test/knn_acc" not in metrics  # no reconstruction, no code

    # the bound against the closed form, from the tested checkpoint's μ and σ on the test split
    model = load_model(None, out / written["best_checkpoint"], trusted=("genlab_plugins",))
    assert isinstance(model, DiagonalGaussian)
    dm = instantiate(cfg.data)
    dm.setup("test")
    x = dm.tensors("test").x
    log_p = Normal(model.mu.detach(), model.log_sigma.detach().exp()).log_prob(x).flatten(1).sum(1)
    assert metrics["test/bpd"] == pytest.approx((-log_p / (64 * math.log(2))).mean().item(), rel=1e-5)


def test_the_evaluator_hands_its_step_budget_to_the_sampler() -> None:
    from genlab.data.builtin import DigitsDataModule

    dm = DigitsDataModule(max_train=96, val_fraction=0.15, eval_batch_size=64)  # the cached classifier's data
    dm.setup()
    model = DiagonalGaussian(data_info=dm.info, steps=50, step_size=0.2).eval()
    scores = configured_evaluator(CACHE, ["sample_steps=4"]).evaluate(model, dm)
    assert set(model.steps_asked) == {4} and scores["test/sample_steps"] == 4
    model.steps_asked.clear()
    configured_evaluator(CACHE).evaluate(model, dm)
    assert set(model.steps_asked) == {None}  # no budget set: the model's own default
    assert torch.isfinite(torch.tensor(scores["test/bpd"])) and scores.units["test/bpd"] == "bits/dim"
    assert "bpd" in scores.columns  # genlab-eval's table shows it


def test_the_new_family_declares_what_it_needs(make_cfg) -> None:
    cfg = make_cfg(*PLUGIN, "data=toy2d")
    with pytest.raises(IncompatibleError, match="image data"):
        build_model(cfg.model, instantiate(cfg.data).info)


def test_the_new_family_s_schema_types_and_ranges_its_options(make_cfg) -> None:
    from genlab_plugins.gaussian import DiagonalGaussianConfig
    from hydra.errors import ConfigCompositionException

    from genlab.config import schemas, validate
    from genlab.errors import UserError

    assert schemas()["schema_model_gaussian"] is DiagonalGaussianConfig  # found by the registry, no list edited
    with pytest.raises(ConfigCompositionException, match="model.steps=abc"):
        make_cfg(*PLUGIN, "model.steps=abc")
    with pytest.raises(UserError, match="model.step_size"):
        validate(make_cfg(*PLUGIN, "model.step_size=2"))
