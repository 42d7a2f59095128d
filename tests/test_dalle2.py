"""DALLE-2's priors (genlab/models/prior.py) and their metric (genlab/metrics/prior.py): from a frozen CLIP run's
text embedding of a caption to its image embedding; its decoder (genlab/models/unclip.py): from an image
embedding to an image. All on the captioned shapes."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import FAST
from omegaconf import OmegaConf

from genlab.checkpoints import build_model, frozen_component
from genlab.data.captioned import CaptionedShapesDataModule
from genlab.errors import UserError
from genlab.metrics.base import Context
from genlab.metrics.prior import PriorSimilarity
from genlab.models.prior import DiffusionPrior, RegressionPrior
from genlab.models.unclip import UnCLIPDecoder, slerp
from genlab.train import train

HOLDOUT = [{"colour": "red", "shape": "heart"}]
DATA = ["data=captioned_shapes", "data.n_samples=300", "data.batch_size=50", f"data.holdout={HOLDOUT}".replace("'", "")]
TINY_PRIOR = ["model.net.hidden=[32,32]", "model.net.emb_dim=16", "model.timesteps=50", "model.sample_steps=5"]


@pytest.fixture(scope="module")
def clip_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A short CLIP run on captioned shapes, trained once for the prior tests."""
    from conftest import CACHE, CONF
    from hydra import compose, initialize_config_dir
    from omegaconf import open_dict

    folder = tmp_path_factory.mktemp("clip")
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=["model=clip", *DATA, *FAST, "trainer.max_epochs=1",
                                          "model.net.channels=[8,16]", "model.net.hidden=[32]", "model.text.width=16",
                                          "model.text.heads=2", "model.rep_dim=32", "model.proj_hidden=32",
                                          "model.proj_dim=16", "callbacks.evaluator.metrics.attribute_zero_shot.n=50"])
    with open_dict(cfg):
        cfg.paths.output_dir, cfg.paths.log_dir, cfg.paths.cache_dir = str(folder), str(folder / "logs"), str(CACHE)
    train(cfg)
    return folder


def data(n: int = 120) -> CaptionedShapesDataModule:
    dm = CaptionedShapesDataModule(image_size=32, n_samples=n, holdout=HOLDOUT, omit=0.3, val_fraction=0.1,
                                   batch_size=40)
    dm.setup("fit")
    dm.setup("test")
    return dm


def prior(make_cfg, clip_run: Path, name: str, *overrides: str) -> DiffusionPrior | RegressionPrior:
    cfg = make_cfg(f"model={name}", f"model.clip={clip_run}", *DATA, *overrides)
    return build_model(cfg.model, data().info)


def batch(dm: CaptionedShapesDataModule, n: int = 40) -> dict[str, torch.Tensor]:
    s = dm.tensors("train")
    return {"x": dm.scale(s.x[:n]), "y": s.y[:n], "factors": s.factors[:n]}


def test_the_diffusion_prior_diffuses_scaled_image_embeddings_conditioned_on_drawn_captions(make_cfg,
                                                                                            clip_run: Path) -> None:
    model = prior(make_cfg, clip_run, "diffusion_prior", *TINY_PRIOR, "model.label_dropout=0.5", "model.ema=null")
    clip, dm = model.frozen_clip(), data()
    b = batch(dm)
    torch.manual_seed(3)
    x0, cond = model.batch_pair(b, "train")
    d = model.cond_dim
    # x_0: CLIP's image embeddings scaled by √D; the condition: a caption embedding of each image, or zero
    torch.testing.assert_close(x0, clip.embed(b["x"]) * math.sqrt(d))
    torch.testing.assert_close(x0.norm(dim=1), torch.full((40,), math.sqrt(d)))
    dropped = cond.abs().sum(1) == 0
    torch.testing.assert_close(cond[~dropped].norm(dim=1), torch.ones(int((~dropped).sum())))
    torch.manual_seed(3)
    captions = clip.draw_captions(clip.attribute_values(b["factors"]))  # the same draw, by hand
    torch.testing.assert_close(cond[~dropped], captions[~dropped])
    shares = [float((model.batch_pair(b, "train")[1].abs().sum(1) == 0).float().mean()) for _ in range(20)]
    assert abs(sum(shares) / 20 - 0.5) < 0.1
    # validation: nothing dropped, and the same loss at every call (fixed t, ε and captions)
    assert bool((model.batch_pair(b, "val")[1].norm(dim=1) > 0.99).all())
    assert model.loss_terms(b, "val")["loss"].item() == model.loss_terms(b, "val")["loss"].item()
    # sampling: unit vectors; at guidance 0 the caption is ignored, at 1 it is not
    torch.nn.init.normal_(model.net.out.weight)  # the zero-initialised last layer would ignore everything
    texts, other = captions[:4], captions[4:8]
    torch.manual_seed(0)
    e = model.image_embeddings(texts)
    assert e.shape == (4, d)
    torch.testing.assert_close(e.norm(dim=1), torch.ones(4))
    for scale, same in ((0.0, True), (1.0, False)):
        torch.manual_seed(0)
        a = model.image_embeddings(texts, scale)
        torch.manual_seed(0)
        assert torch.allclose(a, model.image_embeddings(other, scale)) == same, scale
    assert model.guidance_scales() == (0.0, 1.0, 2.0, 4.0)


def test_the_regression_prior_loss_is_one_minus_the_cosine_by_hand(make_cfg, clip_run: Path) -> None:
    model = prior(make_cfg, clip_run, "regression_prior", "model.hidden=[16]")
    clip, b = model.frozen_clip(), batch(data())
    torch.manual_seed(1)
    terms = model.loss_terms(b, "train")
    torch.manual_seed(1)
    texts = clip.draw_captions(clip.attribute_values(b["factors"]))
    images = clip.embed(b["x"])
    cos = [float(F.normalize(model.net(t[None]), dim=1)[0] @ i) for t, i in zip(texts, images)]
    assert terms["loss"].item() == pytest.approx(1 - sum(cos) / len(cos), abs=1e-5)
    terms["loss"].backward()  # the prior learns, CLIP stays frozen
    assert model.net[0].weight.grad is not None
    assert all(p.grad is None for p in clip.parameters())
    e = model.image_embeddings(texts)
    torch.testing.assert_close(e.norm(dim=1), torch.ones(len(e)))
    assert model.guidance_scales() == ()


class Echo(RegressionPrior):
    """A prior that predicts the text embedding itself (or its negative)."""

    sign = 1.0

    def image_embeddings(self, texts: torch.Tensor, scale: float | None = None, steps: int | None = None):
        return self.sign * texts


def test_prior_similarity_scores_the_prediction_against_the_text_embedding(make_cfg, clip_run: Path) -> None:
    model = prior(make_cfg, clip_run, "regression_prior", "model.hidden=[16]")
    echo = Echo(clip=model.frozen_clip(), data_info=model.data_info, hidden=[16], dropout=0.0)
    dm = data(300)
    metric = PriorSimilarity(n=60)
    assert metric.applies(Context(echo, dm))
    got = metric.compute(Context(echo, dm))
    # echoing the caption scores exactly as the caption does; its negative the negative cosine
    assert got["test/prior_cosine"] == pytest.approx(got["test/text_cosine"], abs=1e-6)
    assert got["test/prior_recall_exact_1"] == got["test/text_recall_exact_1"]
    assert got["test/prior_cosine/held_out"] == pytest.approx(got["test/text_cosine/held_out"], abs=1e-6)
    assert not any("scale_" in k for k in got)  # no guidance, no sweep
    echo.sign = -1.0
    flipped = metric.compute(Context(echo, dm))
    assert flipped["test/prior_cosine"] == pytest.approx(-got["test/text_cosine"], abs=1e-6)
    # the text cosine by hand on the images the metric picked: each a held-out caption naming all attributes
    assert -1 <= got["test/text_cosine"] <= 1 and 0 <= got["test/text_recall_exact_1"] <= 1


def test_a_prior_trains_and_reports_its_cosine_per_guidance_scale(make_cfg, clip_run: Path) -> None:
    cfg = make_cfg("model=diffusion_prior", f"model.clip={clip_run}", *DATA, *FAST, *TINY_PRIOR,
                   "trainer.max_epochs=1", "callbacks.evaluator.metrics.prior_similarity.n=40")
    metrics = train(cfg)
    for key in ("prior_cosine", "text_cosine", "prior_recall_exact_1", "prior_cosine/seen", "prior_cosine/held_out",
                *(f"prior_cosine/scale_{s}" for s in (0, 1, 2, 4))):
        assert -1 <= metrics[f"test/{key}"] <= 1, key
    assert metrics["test/prior_cosine"] == metrics["test/prior_cosine/scale_2"]  # the configured scale is 2


def test_a_prior_refuses_data_without_captions_and_a_clip_of_other_data(make_cfg, clip_run: Path,
                                                                        tmp_path: Path) -> None:
    from genlab.data.base import DataInfo

    digits = DataInfo("digits", (1, 8, 8), num_classes=10)
    spec = DiffusionPrior.frozen_runs["clip"]
    with pytest.raises(UserError, match=r"model.clip=.* was trained on captioned_shapes.*this run's data is digits"):
        frozen_component(OmegaConf.create({"clip": str(clip_run)}), "clip", "model.clip", spec, digits)
    clip = frozen_component(OmegaConf.create({"clip": str(clip_run)}), "clip", "model.clip", spec, None)
    with pytest.raises(UserError, match="'digits' has none to caption: pick captioned data"):
        DiffusionPrior(clip=clip, data_info=digits, net=lambda **kw: torch.nn.Identity())
    other = data().info
    with pytest.raises(UserError, match="holdout"):  # a CLIP that saw the combinations this prior holds out
        frozen_component(OmegaConf.create({"clip": str(clip_run)}), "clip", "model.clip", spec,
                         type(other)(**{**other.__dict__, "holdout": ()}))


# ---- the decoder ------------------------------------------------------------------------------------------------
TINY_DECODER = ["model.net.channels=[8,16]", "model.net.groups=4", "model.timesteps=50", "model.sample_steps=4",
                "callbacks.evaluator.max_test=40", "callbacks.evaluator.metrics.sample_quality.n_samples=40",
                "callbacks.evaluator.metrics.sample_classes.per_class=4",
                "callbacks.evaluator.metrics.likelihood.samples=4",
                "callbacks.evaluator.metrics.attribute_fidelity.n=12",
                "callbacks.evaluator.metrics.attribute_fidelity.per_caption=2",
                "callbacks.evaluator.metrics.attribute_fidelity.diverse_captions=2"]


@pytest.fixture(scope="module")
def prior_run(clip_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A short diffusion prior run on clip_run, trained once for the decoder tests."""
    from conftest import CACHE, CONF
    from hydra import compose, initialize_config_dir
    from omegaconf import open_dict

    folder = tmp_path_factory.mktemp("prior")
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=["model=diffusion_prior", f"model.clip={clip_run}", *DATA, *FAST,
                                          *TINY_PRIOR, "trainer.max_epochs=1",
                                          "callbacks.evaluator.metrics.prior_similarity.n=20"])
    with open_dict(cfg):
        cfg.paths.output_dir, cfg.paths.log_dir, cfg.paths.cache_dir = str(folder), str(folder / "logs"), str(CACHE)
    train(cfg)
    return folder


def test_slerp_keeps_unit_length_and_steps_evenly_in_angle() -> None:
    a, b = F.normalize(torch.randn(2, 5), dim=1)
    path = slerp(a, b, 6)
    torch.testing.assert_close(path[0], a)
    torch.testing.assert_close(path[-1], b)
    torch.testing.assert_close(path.norm(dim=1), torch.ones(6))
    angles = torch.arccos((path[:-1] * path[1:]).sum(1).clamp(-1, 1))
    torch.testing.assert_close(angles, torch.full((5,), float(torch.arccos(a @ b)) / 5))
    torch.testing.assert_close(slerp(a, a, 3), a.expand(3, 5))


def test_the_decoder_is_conditioned_on_each_image_s_own_clip_embedding(make_cfg, clip_run: Path) -> None:
    cfg = make_cfg("model=unclip", f"model.clip={clip_run}", *DATA, *TINY_DECODER, "model.label_dropout=0.5")
    model = build_model(cfg.model, data().info)
    assert model.prior is None
    b = batch(data())
    x0, cond = model.batch_pair(b, "train")
    torch.testing.assert_close(x0, 2 * b["x"] - 1)
    kept = cond.abs().sum(1) > 0
    torch.testing.assert_close(cond[kept], model.embed_images(b["x"])[kept])
    assert 0.2 < float((~kept).float().mean()) < 0.8
    val = model.batch_pair(b, "val")[1]
    torch.testing.assert_close(val, model.embed_images(b["x"]))
    # without a prior a caption conditions through its text embedding; embeddings given pass as they are
    texts = model.clip.describe(model.clip.attribute_values(b["factors"][:3]))
    torch.testing.assert_close(model.through_prior(texts), texts)
    torch.testing.assert_close(model.condition(3, val[:3]), val[:3])
    with pytest.raises(ValueError, match="embeddings of shape"):
        model.condition(2, val[:3])
    # a prior made on another CLIP run maps into another space: refused
    other_clip = build_model(make_cfg("model=clip", *DATA, "model.net.channels=[8,16]", "model.net.hidden=[32]",
                                      "model.text.width=16", "model.text.heads=2", "model.rep_dim=32",
                                      "model.proj_hidden=32", "model.proj_dim=16").model, data().info)
    stranger = Echo(clip=other_clip, data_info=data().info, hidden=[16], dropout=0.0)
    with pytest.raises(UserError, match="model.prior was trained on the embeddings of another CLIP run"):
        UnCLIPDecoder(clip=model.clip, prior=stranger, data_info=data().info,
                      net=lambda **kw: torch.nn.Identity())


def test_prior_and_decoder_make_images_from_captions_and_variations_of_images(make_cfg, clip_run: Path,
                                                                              prior_run: Path, tmp_path: Path,
                                                                              capsys) -> None:
    from torchvision.utils import save_image

    from genlab.run import load_model
    from genlab.sample import main as sample_main

    cfg = make_cfg("model=unclip", f"model.clip={clip_run}", f"model.prior={prior_run}", *DATA, *FAST,
                   *TINY_DECODER, "trainer.max_epochs=1")
    metrics = train(cfg)
    assert 0 < metrics["test/bpd"] < 64 and math.isfinite(metrics["test/fid"])
    out = Path(cfg.paths.output_dir)
    for picture in ("variations.png", "interpolation.png", "caption_interpolation.png", "guidance_sweep.png",
                    "samples.png"):
        assert (out / "images" / picture).is_file(), picture
    model = load_model(None, out / json.loads((out / "metrics.json").read_text())["best_checkpoint"]).eval()
    assert isinstance(model, UnCLIPDecoder) and isinstance(model.prior, DiffusionPrior)
    x = model.sample_texts(["a large blue square at the bottom", "a red heart"], 3)
    assert x.shape == (6, 3, 32, 32) and 0 <= float(x.min()) and float(x.max()) <= 1
    v = model.variations(batch(data())["x"][:2], 2)
    assert v.shape == (4, 3, 32, 32)
    # genlab-sample: text -> prior -> decoder, and variations of an image file
    (out / ".hydra").mkdir()
    OmegaConf.save(cfg, out / ".hydra" / "config.yaml")  # what genlab-train's Hydra app writes
    grid = tmp_path / "prompt.png"
    sample_main([str(out), "--prompt", "a large blue square at the bottom", "-n", "2", "--steps", "2",
                 "--out", str(grid)])
    assert grid.is_file()
    image = tmp_path / "sprite.png"
    save_image(batch(data())["x"][0], image)
    sample_main([str(out), "--variations", str(image), "-n", "2", "--steps", "2"])
    assert "2 samples written" in capsys.readouterr().out
    assert list((out / "samples").glob("variations_sprite_seed0.png"))
    with pytest.raises(SystemExit):
        sample_main([str(out), "--variations", str(tmp_path / "missing.png")])
    assert "no such file" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # a value the data cannot have: one line naming the words captions use
        sample_main([str(out), "--prompt", "a purple elephant"])
    err = capsys.readouterr().err
    assert "never say 'purple', 'elephant'" in err and "colour: red, crimson" in err and len(err.splitlines()) == 1
    for key in ("shape", "colour", "size", "position", "all", "all_seen", "all_held_out"):
        assert 0 <= metrics[f"test/attribute_fidelity/{key}"] <= 1, key
    assert metrics["test/caption_diversity"] >= 0


def test_attribute_fidelity_of_real_images_is_the_classifiers_accuracy_on_them(make_cfg, clip_run: Path) -> None:
    from conftest import CACHE

    from genlab.metrics.attributes import AttributeFidelity
    from genlab.metrics.classifier import accuracy

    cfg = make_cfg("model=unclip", f"model.clip={clip_run}", *DATA, *TINY_DECODER)
    dm = data(300)
    model = build_model(cfg.model, dm.info)
    test = dm.tensors("test")
    metric = AttributeFidelity(n=30, per_caption=2, diverse_captions=3)
    some = torch.randperm(len(test), generator=torch.Generator().manual_seed(0))[:30]
    calls = []

    def real_images(texts, n, steps=None):  # first the test images the captions were written for, in their order
        calls.append(len(texts))
        return test.x[some] if len(calls) == 1 else torch.rand(len(texts) * n, *dm.info.shape)

    model.sample_texts = real_images
    ctx = Context(model, dm, classifier_cache=CACHE)
    assert metric.applies(ctx)
    got = metric.compute(ctx)
    classifiers = ctx.attribute_classifiers()
    for i, name in enumerate(("shape", "colour", "size", "position")):
        want = accuracy(classifiers[name], test.x[some], test.factors[some, i].long())
        assert got[f"test/attribute_fidelity/{name}"] == pytest.approx(want), name
    assert calls[0] == 30 and 0 <= got["test/caption_diversity"]
    # the classifiers learn from a draw of every combination, the held-out ones too, not from the training split
    from genlab.data.captioned import held_out_mask

    reference = dm.reference_split(400)
    assert bool(held_out_mask(reference.factors, HOLDOUT).any())
    assert not torch.equal(reference.factors[:10], dm.sample_factors(400)[:10])
