"""The captioned shapes (genlab/data/captioned.py): attributes rendered where and as the factors say, captions
that name them through templates and synonyms, held-out combinations kept out of training."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from conftest import run_cli

from genlab.data.base import DataInfo
from genlab.data.captioned import ATTRIBUTES, RGB, SYNONYMS, TEMPLATES, CaptionedShapesDataModule, Captioner, matches
from genlab.errors import UserError
from genlab.nets.text import words

HOLDOUT = [{"colour": "red", "shape": "heart"}, {"size": "small", "position": "centre", "colour": "blue"}]


def make(n: int = 1500, holdout=HOLDOUT, **kw) -> CaptionedShapesDataModule:
    dm = CaptionedShapesDataModule(image_size=32, n_samples=n, holdout=holdout, omit=0.3, val_fraction=0.1, **kw)
    dm.setup("fit")
    dm.setup("test")
    return dm


def attrs(factors: torch.Tensor) -> list[dict[str, str]]:
    names = list(ATTRIBUTES)
    return [{a: ATTRIBUTES[a][int(v)] for a, v in zip(names, row[:4])} for row in factors]


def test_held_out_combinations_are_in_the_test_split_only() -> None:
    dm = make()
    def hits(split: str) -> int:
        return sum(any(all(a[k] == v for k, v in c.items()) for c in HOLDOUT) for a in attrs(dm.tensors(split).factors))
    assert hits("train") == 0 and hits("val") == 0
    test = attrs(dm.tensors("test").factors)
    expected = sum(any(all(a[k] == v for k, v in c.items()) for c in HOLDOUT)
                   for a in attrs(dm.sample_factors()))  # every held-out draw of the pool
    assert hits("test") == expected > 0 and len(test) > expected  # and seen combinations beside them
    assert dm.info.holdout == (tuple(sorted(HOLDOUT[0].items())), tuple(sorted(HOLDOUT[1].items())))
    info = DataInfo.from_dict(dataclasses.asdict(dm.info))  # as checkpoints carry it
    assert info == dm.info


def test_images_show_the_attributes_of_their_factors() -> None:
    dm = make(300, holdout=[])
    s = dm.tensors("train")
    x, f = s.x, s.factors  # x (N, 3, 32, 32) in [0, 1]
    lit = x.amax(1) > 0.5  # (N, 32, 32) the sprite's pixels
    for i in range(len(x)):
        a = attrs(f[i:i + 1])[0]
        colour = x[i][:, lit[i]].mean(1)
        torch.testing.assert_close(colour, torch.tensor(RGB[a["colour"]]), atol=0.02, rtol=0)
        rows, cols = torch.nonzero(lit[i], as_tuple=True)
        p = ATTRIBUTES["position"].index(a["position"])
        assert abs(cols.float().mean() / 32 - (0.25 + 0.25 * (p % 3))) < 0.06
        assert abs(rows.float().mean() / 32 - (0.25 + 0.25 * (p // 3))) < 0.06
    small = f[:, 2] == 0
    assert lit[small].flatten(1).sum(1).float().mean() * 1.8 < lit[~small].flatten(1).sum(1).float().mean()


def said(caption: str, attribute: str, value: str) -> bool:
    text = " " + " ".join(words(caption)) + " "
    return any(f" {' '.join(words(w))} " in text for w in SYNONYMS[value])


def test_captions_name_the_attributes_through_templates_and_synonyms() -> None:
    torch.manual_seed(0)
    values = torch.tensor([[2, 0, 0, 0], [0, 3, 1, 8], [1, 2, 1, 4]])
    full = Captioner(omit=0.0)
    for _ in range(20):
        draw = full.draw(values)
        assert bool(draw.said.all())
        for caption, a in zip(draw.texts, attrs(values.float())):
            assert all(said(caption, k, v) for k, v in a.items()), (caption, a)
            assert ", ," not in caption and not caption.endswith((",", ":")) and " a oval" not in caption
    bare = Captioner(omit=1.0).draw(values)
    assert bare.said.tolist() == [[True, False, False, False]] * 3
    assert all(said(c, "shape", a["shape"]) and not said(c, "colour", a["colour"]) for c, a in
               zip(bare.texts, attrs(values.float())))
    draws = [Captioner(omit=0.3).draw(values[:1]) for _ in range(300)]
    many = {d.texts[0] for d in draws}
    assert len(many) > 30  # templates x synonyms x omissions: one image has many captions
    share = torch.cat([d.said for d in draws]).float().mean(0)
    assert share[0] == 1 and all(abs(float(v) - 0.7) < 0.08 for v in share[1:]), share
    vocab = {w for t in Captioner.vocabulary_texts(TEMPLATES) for w in words(t)}
    assert {w for c in many for w in words(c)} <= vocab
    assert max(len(words(c)) for c in many) <= Captioner.longest(TEMPLATES)
    torch.manual_seed(1)
    first = Captioner().draw(values).texts
    torch.manual_seed(1)
    assert Captioner().draw(values).texts == first  # from torch's random stream: a resumed run draws the same


def test_a_caption_matches_every_image_with_the_values_it_names() -> None:
    values = torch.tensor([[2, 0, 0, 0], [2, 1, 0, 0]])  # two hearts, red and green
    said = torch.tensor([[True, False, False, False], [True, True, False, False]])
    others = torch.tensor([[2, 0, 1, 3], [2, 1, 0, 0], [0, 1, 0, 0]])
    assert matches(values, said, others).tolist() == [[True, True, False], [False, True, False]]


@pytest.mark.parametrize("holdout,message", [
    ([{"hue": "red", "shape": "heart"}], "'hue' is not an attribute; the attributes are shape, colour"),
    ([{"colour": "purple", "shape": "heart"}], "colour='purple' is not a value of colour; its values are red"),
    ([{"colour": "red"}], "names one attribute"),
])
def test_bad_holdouts_are_refused_naming_what_is_wrong(holdout, message: str) -> None:
    with pytest.raises(UserError, match=message):
        CaptionedShapesDataModule(image_size=32, n_samples=100, holdout=holdout, omit=0.3)


def test_a_bad_holdout_on_the_command_line_is_one_line_and_leaves_no_run(tmp_path) -> None:
    r = run_cli("data=captioned_shapes", "data.holdout=[{colour: purple, shape: heart}]", f"paths.log_dir={tmp_path}")
    assert r.returncode == 2 and "not a value of colour" in r.stderr and "Traceback" not in r.stderr, r.stderr[-800:]
    assert not list(tmp_path.rglob("*.ckpt")) and not list(tmp_path.glob("train/runs/*"))


# ---- CLIP on captioned data ------------------------------------------------------------------------------------
def test_clip_on_captions_of_attributes_takes_every_image_a_caption_describes_as_positive() -> None:
    from genlab.models.contrastive import info_nce

    torch.manual_seed(0)
    values = torch.tensor([[2, 0, 0, 0], [2, 0, 1, 3], [0, 1, 0, 0], [2, 1, 0, 0]])
    said = torch.tensor([[True, True, False, False], [True, False, True, False], [True] * 4, [True, False] * 2])
    describes = matches(values, said, values)  # caption i describes image j
    txt, img = (torch.nn.functional.normalize(torch.randn(4, 8), dim=1) for _ in range(2))
    tau = 0.3
    expected = 0.0
    for i in range(4):  # -log of the probability mass on the images caption i describes, by hand
        weights = [math.exp(float(txt[i] @ img[j]) / tau) for j in range(4)]
        expected -= math.log(sum(w for j, w in enumerate(weights) if describes[i, j]) / sum(weights))
    got = info_nce(txt, img, None, None, tau, positive=describes)
    assert describes.tolist()[0] == [True, True, False, False] and got.item() == pytest.approx(expected / 4, rel=1e-5)
    assert info_nce(txt, img, None, None, tau, chunk=3, positive=describes).item() == pytest.approx(got.item())


def test_clip_trains_on_captioned_shapes_and_reads_each_attribute_zero_shot(make_cfg) -> None:
    from conftest import FAST

    from genlab.train import train

    cfg = make_cfg("model=clip", "data=captioned_shapes", "data.n_samples=400", "data.batch_size=64", *FAST,
                   "trainer.max_epochs=1", "model.net.channels=[8,16]", "model.net.hidden=[32]",
                   "model.text.width=16", "model.text.heads=2", "model.rep_dim=32", "model.proj_hidden=32")
    metrics = train(cfg)
    for name in ("shape", "colour", "size", "position", "all", "all_held_out", "all_seen"):
        assert 0 <= metrics[f"test/zero_shot_acc/{name}"] <= 1, name
    assert 0 <= metrics["test/recall_i2t_exact_1"] <= 1 and 0 <= metrics["test/recall_t2i_exact_1"] <= 1
    from genlab.checkpoints import build_model

    model = build_model(cfg.model, CaptionedShapesDataModule(image_size=32, n_samples=10, holdout=HOLDOUT,
                                                              omit=0.3).info)
    prompts = model.attribute_prompts()
    assert {a: tuple(p.shape) for a, p in prompts.items()} == {a: (len(v), 64) for a, v in ATTRIBUTES.items()}
    assert torch.allclose(prompts["colour"].norm(dim=1), torch.ones(4))
    assert model.describe(torch.tensor([[0, 1, 1, 4]])).shape == (1, 64)
