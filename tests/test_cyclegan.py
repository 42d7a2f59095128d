"""CycleGAN and unpaired data: the losses against hand formulas, the history pool, gradients per
player, the two-domain loaders and datasets, the translation metrics and pictures end to end."""

from __future__ import annotations

import json
import math
from functools import partial
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from conftest import FAST
from torch import Tensor, nn

from genlab.data.base import DataInfo, Split
from genlab.data.builtin import DigitsDataModule
from genlab.data.unpaired import DigitsInvertedDataModule, UnpairedFolderDataModule, UnpairedLoader
from genlab.errors import IncompatibleError, MissingDataError, UserError
from genlab.metrics.translation import translation_classifiers, translation_metrics
from genlab.models.cyclegan import CycleGAN, HistoryPool
from genlab.nets.cyclegan import patch_discriminator, resnet_generator
from genlab.train import train

INFO = DataInfo("pair", (1, 8, 8), 10, domains=("a", "b"))


def tiny_cyclegan(info: DataInfo = INFO, **kwargs) -> CycleGAN:
    torch.manual_seed(0)
    adam = partial(torch.optim.Adam, lr=1e-3)
    return CycleGAN(data_info=info, generator=partial(resnet_generator, channels=4, n_blocks=1),
                    discriminator=partial(patch_discriminator, channels=4, n_layers=1), optimizer_g=adam,
                    optimizer_d=adam, **kwargs)


def test_generator_terms_match_the_hand_formulas() -> None:
    model = tiny_cyclegan(cycle_weight=7.0, identity_weight=2.0)
    a, b = torch.rand(3, 1, 8, 8), torch.rand(3, 1, 8, 8)
    terms, fake_a, fake_b = model.generator_terms(a, b)
    g = lambda net, x: (net(2 * x - 1) + 1) / 2  # the networks work on [-1, 1]
    rec_a = g(model.g_b2a, g(model.g_a2b, a)).detach()
    hand_cycle = sum(abs(float(a.flatten()[i]) - float(rec_a.flatten()[i])) for i in range(a.numel())) / a.numel()
    assert terms["cycle_a"].item() == pytest.approx(hand_cycle, rel=1e-5)
    assert torch.equal(fake_b, g(model.g_a2b, a)) and torch.equal(fake_a, g(model.g_b2a, b))
    lsgan = lambda logits: ((logits - 1) ** 2).mean()  # the generator wants D = 1
    adv_a2b = lsgan(model.d_b(2 * fake_b - 1))
    assert terms["adv_a2b"].item() == pytest.approx(adv_a2b.item(), rel=1e-6)
    identity = (g(model.g_a2b, b) - b).abs().mean() + (g(model.g_b2a, a) - a).abs().mean()
    total = terms["adv_a2b"] + terms["adv_b2a"] + 7.0 * (terms["cycle_a"] + terms["cycle_b"]) + 2.0 * identity
    assert terms["total"].item() == pytest.approx(total.item(), rel=1e-6)
    ns = tiny_cyclegan(adversarial="non_saturating")
    logits = ns.d_b(2 * ns.translate(a, "a2b") - 1)
    assert ns.generator_terms(a, b)[0]["adv_a2b"].item() == pytest.approx(
        torch.log1p(torch.exp(-logits)).mean().item(), rel=1e-5)  # −log sig(D)


def test_history_pool_fills_then_returns_stored_images_half_of_the_time() -> None:
    torch.manual_seed(0)
    pool = HistoryPool(size=5)
    first = torch.arange(5.0).view(5, 1, 1, 1)
    assert torch.equal(pool.query(first), first)  # filling: every image is stored and returned
    stored, swapped, n = set(range(5)), 0, 4000
    for i in range(5, 5 + n):
        out = int(pool.query(torch.full((1, 1, 1, 1), float(i))).item())
        if out != i:  # swapped: an image stored before comes back and the new one takes its place
            assert out in stored
            stored.remove(out)
            stored.add(i)
            swapped += 1
        assert {int(x.item()) for x in pool.images} == stored
    assert swapped / n == pytest.approx(0.5, abs=0.04)  # 4000 Bernoulli(½) draws: sd 0.008
    x = torch.rand(3, 1, 2, 2)
    assert torch.equal(HistoryPool(size=0).query(x), x)


class RecordingCycleGAN(CycleGAN):
    """Notes, at every optimiser step, which players' parameters hold gradients."""

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        has = lambda nets: [p.grad is not None and bool(p.grad.abs().sum() > 0) for n in nets for p in n.parameters()]
        is_g = optimizer.param_groups[0]["params"][0] is next(self.g_a2b.parameters())
        self.__dict__.setdefault("seen", []).append(("g" if is_g else "d", has([self.g_a2b, self.g_b2a]),
                                                     has([self.d_a, self.d_b])))


def test_each_player_gets_gradients_from_its_own_loss_only() -> None:
    dm = DigitsInvertedDataModule(image_size=8, batch_size=16, max_train=32)
    adam = partial(torch.optim.Adam, lr=1e-3)
    model = RecordingCycleGAN(data_info=dm.info, generator=partial(resnet_generator, channels=4, n_blocks=1),
                              discriminator=partial(patch_discriminator, channels=4, n_layers=1), optimizer_g=adam,
                              optimizer_d=adam)
    trainer = pl.Trainer(max_epochs=1, limit_train_batches=2, limit_val_batches=0, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(model, datamodule=dm)
    seen = model.seen
    assert [s[0] for s in seen] == ["g", "d", "g", "d"]  # generators first, then discriminators, per batch
    for player, g_grads, d_grads in seen:
        assert all(g_grads) and not any(d_grads) if player == "g" else all(d_grads) and not any(g_grads)


class OneBatch:
    def __init__(self, batch: dict[str, Tensor]) -> None:
        self.batch = batch

    def __iter__(self):
        yield self.batch

    def __len__(self) -> int:
        return 1


def test_non_finite_terms_stop_with_the_player_term_and_step() -> None:
    model = tiny_cyclegan()
    a = torch.rand(2, 1, 8, 8)
    b = a.clone()
    b[0, 0, 0, 0] = math.nan  # a corrupt image of domain B
    trainer = pl.Trainer(max_steps=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False)
    loader = OneBatch({"x": a, "x_b": b})
    with pytest.raises(UserError, match=r"generator's loss term 'adv_b2a' is nan at global step 0"):
        trainer.fit(model, train_dataloaders=loader)


def test_cyclegan_rejects_single_domain_data() -> None:
    with pytest.raises(IncompatibleError, match="2 unpaired domains.*'digits' provides one"):
        tiny_cyclegan(DigitsDataModule(image_size=8).info)


def test_unpaired_loader_orders_the_domains_independently() -> None:
    a, b = Split(torch.arange(40.0)), Split(1000 + torch.arange(25.0))
    loader = UnpairedLoader(a, b, batch_size=8, shuffle=True, seed=0)
    epochs = [[(bt["x"], bt["x_b"] - 1000) for bt in loader] for _ in range(2)]
    for batches in epochs:
        assert all(len(xa) == len(xb) for xa, xb in batches)  # each A batch gets as many B images
        order_a = torch.cat([xa for xa, _ in batches]).long()
        assert sorted(order_a.tolist()) == list(range(40))
    order_b = torch.cat([xb for e in epochs for _, xb in e]).long()  # 80 draws from B
    for start in (0, 25, 50):  # B runs through a fresh permutation whenever it is used up
        assert sorted(order_b[start : start + 25].tolist()) == list(range(25))
    assert not torch.equal(order_b[:25], order_b[25:50])
    first_a = torch.cat([xa for xa, _ in epochs[0]])[:25].long()
    assert not torch.equal(first_a, order_b[:25])  # not A's order
    plain = UnpairedLoader(a, b, batch_size=8, shuffle=False)
    assert torch.equal(next(iter(plain))["x_b"], 1000 + torch.arange(8.0))


def test_digits_inverted_domain_b_is_the_inverted_other_half() -> None:
    dm = DigitsInvertedDataModule(image_size=8)
    dm.setup()
    assert dm.info.domains == ("digits", "inverted")
    digits = DigitsDataModule(image_size=8).load()
    pool = torch.cat([digits.train.x, digits.test.x]).flatten(1)  # (1797, 64) every digit once
    labels = torch.cat([digits.train.y, digits.test.y])
    index = lambda x: torch.cdist(x.flatten(1), pool).argmin(1)  # the digit each image is
    for name in ("train", "val", "test"):
        a, b = dm.splits[name], dm.splits_b[name]
        ia, ib = index(a.x), index(1 - b.x)
        assert torch.allclose(pool[ib], (1 - b.x).flatten(1), atol=1e-6)  # B = 1 − a digit, exactly
        assert torch.equal(labels[ib], b.y) and torch.equal(labels[ia], a.y)
    all_a = torch.cat([index(s.x) for s in dm.splits.values()])
    all_b = torch.cat([index(1 - s.x) for s in dm.splits_b.values()])
    assert len(set(all_a.tolist()) & set(all_b.tolist())) == 0  # no digit in both domains: unpaired
    batch = next(iter(dm.train_dataloader()))
    assert {"x", "y", "x_b", "y_b"} <= set(batch) and batch["x"].shape == batch["x_b"].shape


def test_unpaired_folder_names_the_missing_subfolders(tmp_path: Path) -> None:
    from PIL import Image

    for sub in ("trainA", "testA"):
        (tmp_path / sub).mkdir()
        Image.new("RGB", (10, 10), (200, 20, 20)).save(tmp_path / sub / "0.png")
    dm = UnpairedFolderDataModule(path=str(tmp_path), image_size=8)
    with pytest.raises(MissingDataError, match="lacks the subfolders trainB, testB"):
        dm.setup()
    for sub in ("trainB", "testB"):
        (tmp_path / sub).mkdir()
        for i in range(2):
            Image.new("RGB", (12, 12), (20, 20, 200)).save(tmp_path / sub / f"{i}.png")
    dm.setup()
    assert dm.splits_b["test"].x.shape == (2, 3, 8, 8) and dm.splits["test"].x.shape == (1, 3, 8, 8)


class StandIn(nn.Module):
    """A translator (exact inversion, or identity) and oracle classifiers for the metrics."""

    def __init__(self, invert: bool = True) -> None:
        super().__init__()
        self.invert = invert
        self.anchor = nn.Parameter(torch.zeros(()))  # gives the classifiers a device

    def translate(self, x: Tensor, direction: str) -> Tensor:
        return 1 - x if self.invert else x


class Brightness(StandIn):
    def forward(self, x: Tensor) -> Tensor:  # inverted digits are mostly white: domain B
        m = x.flatten(1).mean(1, keepdim=True)
        return torch.cat([0.5 - m, m - 0.5], dim=1)


class NearestNeighbour(StandIn):
    def __init__(self, x: Tensor, y: Tensor) -> None:
        super().__init__()
        self.x, self.y = x.flatten(1), y

    def forward(self, x: Tensor) -> Tensor:
        return nn.functional.one_hot(self.y[torch.cdist(x.flatten(1), self.x).argmin(1)], 10).float()


def test_translation_metrics_of_a_perfect_translator_are_one() -> None:
    from genlab.metrics.translation import TranslationClassifiers

    dm = DigitsInvertedDataModule(image_size=8)
    dm.setup()
    a, b = dm.splits["train"], dm.splits_b["train"]
    clf = TranslationClassifiers(Brightness(), NearestNeighbour(torch.cat([a.x, b.x]), torch.cat([a.y, b.y])))
    got = translation_metrics(StandIn(), dm, clf, torch.device("cpu"))
    assert got["test/cycle_error_a"] == pytest.approx(0, abs=1e-6) and got["test/cycle_error_b"] < 1e-6
    for d in ("a2b", "b2a"):
        assert got[f"test/translation_domain_acc_{d}"] == 1.0
        assert got[f"test/translation_acc_{d}"] >= 0.95  # 1-NN reads ~98% of the digits
        assert got[f"test/translation_acc_{d}"] == got[f"test/translation_content_acc_{d}"]
    same = translation_metrics(StandIn(invert=False), dm, clf, torch.device("cpu"))  # no translation at all
    assert same["test/translation_acc_a2b"] == 0.0 and same["test/translation_domain_acc_b2a"] == 0.0


def test_translation_classifiers_are_trained_once_and_cached(tmp_path: Path, monkeypatch) -> None:
    dm = DigitsInvertedDataModule(image_size=8, max_train=200)
    dm.setup()
    clf = translation_classifiers(dm, tmp_path, epochs=1, min_steps=30)
    assert clf.content is not None and clf.content.head.out_features == 10
    assert len(list((tmp_path / "classifiers").glob("digits_inverted-*.pt"))) == 2
    got = translation_metrics(StandIn(), dm, clf, torch.device("cpu"))
    assert got["test/domain_classifier_acc"] > 0.95  # brightness: learnt in a few steps
    monkeypatch.setattr("genlab.metrics.classifier.train_classifier", lambda *a, **k: pytest.fail("retrained"))
    again = translation_classifiers(dm, tmp_path, epochs=1, min_steps=30)
    assert torch.equal(again.domain.head.weight, clf.domain.head.weight)


def test_cyclegan_trains_and_writes_translation_metrics_and_pictures(make_cfg) -> None:
    cfg = make_cfg("experiment=cyclegan_digits", "data.max_train=64", *FAST, "trainer.max_epochs=1",
                   "callbacks.evaluator.classifier_cache=null")
    metrics = train(cfg)
    out = Path(cfg.paths.output_dir)
    for name in ("test/cycle_error_a", "test/cycle_error_b", "test/gen/cycle_a", "test/disc/b"):
        assert math.isfinite(metrics[name])
    assert metrics["test/cycle_error_a"] == pytest.approx(metrics["test/gen/cycle_a"], rel=1e-4)  # the same L1
    assert json.loads((out / "metrics.json").read_text())["metrics"]["test/cycle_error_b"] == pytest.approx(
        metrics["test/cycle_error_b"])
    for png in ("cycle_a2b.png", "cycle_b2a.png", "reconstructions.png"):
        assert (out / "images" / png).is_file()
