"""Contrastive embeddings: the InfoNCE / NT-Xent loss against hand computations, the memory-bounded loss
against the plain one, the disturbances, CLIP's captions, the embedding metrics against closed forms, and
short simclr / clip runs through genlab-train's recipe."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import FAST, TINY

from genlab.data.augment import Disturbances
from genlab.errors import IncompatibleError, UserError
from genlab.metrics.embedding import alignment, class_means, recall_at_k, uniformity, zero_shot_accuracy
from genlab.models.contrastive import info_nce, nt_xent
from genlab.nets.text import PAD, UNK, Vocabulary, check_templates, class_word_lists, make_captions
from genlab.train import train


def unit(*shape: int, seed: int = 0) -> torch.Tensor:
    return F.normalize(torch.randn(*shape, generator=torch.Generator().manual_seed(seed)), dim=-1)


# ---- the loss -------------------------------------------------------------------------------------
def test_nt_xent_equals_the_lectures_cost_computed_by_hand() -> None:
    z1, z2, tau = unit(5, 4, seed=1), unit(5, 4, seed=2), 0.3
    z = torch.cat([z1, z2])
    n = len(z)
    losses = []
    for i in range(n):  # −log exp(s(zᵢ, zᵢ⁺)/τ) / Σ_{j≠i} exp(s(zᵢ, zⱼ)/τ), s the cosine
        pos = (i + 5) % n
        num = math.exp(float(z[i] @ z[pos]) / tau)
        den = sum(math.exp(float(z[i] @ z[j]) / tau) for j in range(n) if j != i)
        losses.append(-math.log(num / den))
    assert nt_xent(z1, z2, tau).item() == pytest.approx(sum(losses) / n, rel=1e-5)


def test_nt_xent_equals_simclr_s_cross_entropy_form() -> None:
    z1, z2, tau = unit(7, 3, seed=3), unit(7, 3, seed=4), 0.5
    z = torch.cat([z1, z2])
    logits = (z @ z.T / tau).fill_diagonal_(float("-inf"))
    target = torch.arange(14).roll(7)  # view i's positive is view i ± 7
    assert nt_xent(z1, z2, tau).item() == pytest.approx(F.cross_entropy(logits, target).item(), rel=1e-5)


def test_identical_captions_are_positives_of_each_other() -> None:
    img, txt, tau = unit(4, 3, seed=5), unit(4, 3, seed=6), 0.2
    ids = torch.tensor([0, 1, 0, 2])  # images 0 and 2 got the same caption text
    s = img @ txt.T / tau
    hand = [-(torch.logsumexp(s[i, ids == ids[i]], 0) - torch.logsumexp(s[i], 0)).item() for i in range(4)]
    assert info_nce(img, txt, ids, ids, tau).item() == pytest.approx(sum(hand) / 4, rel=1e-5)
    unique = torch.arange(4)  # with distinct captions: CLIP's cross-entropy over the batch
    assert info_nce(img, txt, unique, unique, tau).item() == pytest.approx(
        F.cross_entropy(s, unique).item(), rel=1e-5)


@pytest.mark.parametrize("chunk", [1, 3, 8])
def test_the_memory_bounded_loss_equals_the_plain_one_in_value_and_gradient(chunk: int) -> None:
    def run(chunk: int | None) -> tuple[torch.Tensor, ...]:
        torch.manual_seed(0)
        a = torch.randn(10, 6, requires_grad=True)
        b = torch.randn(10, 6, requires_grad=True)
        log_tau = torch.tensor(-1.0, requires_grad=True)
        loss = nt_xent(F.normalize(a, dim=1), F.normalize(b, dim=1), log_tau.exp(), chunk)
        loss.backward()
        return loss.detach(), a.grad, b.grad, log_tau.grad

    plain, bounded = run(None), run(chunk)
    for p, c in zip(plain, bounded):
        torch.testing.assert_close(c, p, rtol=1e-5, atol=1e-6)


def test_the_memory_bounded_loss_never_keeps_the_whole_similarity_matrix() -> None:
    """The largest tensor autograd keeps for the backward pass: (2N)² for the plain loss, at most
    chunk·2N with chunks (each chunk's similarities are recomputed in the backward pass)."""
    n, d, chunk = 256, 8, 32
    z1, z2 = torch.randn(n, d, requires_grad=True), torch.randn(n, d, requires_grad=True)

    def largest_saved(chunk: int | None) -> int:
        sizes = [0]
        with torch.autograd.graph.saved_tensors_hooks(lambda t: sizes.append(t.numel()) or t, lambda t: t):
            nt_xent(z1, z2, 0.5, chunk)
        return max(sizes)

    assert largest_saved(None) >= (2 * n) ** 2
    assert largest_saved(chunk) <= chunk * 2 * n


# ---- the disturbances --------------------------------------------------------------------------------
def test_every_image_gets_its_own_disturbance_on_its_device_and_dtype() -> None:
    x = torch.rand(1, 1, 16, 16).repeat(6, 1, 1, 1)  # six copies of one image
    d = Disturbances(noise_std=0.0).fit((1, 16, 16))
    torch.manual_seed(0)
    v = d(x)
    assert v.shape == x.shape and v.dtype == x.dtype and v.min() >= 0 and v.max() <= 1
    flat = v.flatten(1)
    assert torch.cdist(flat, flat).triu(1)[torch.ones(6, 6).triu(1).bool()].min() > 1e-3  # all six differ
    torch.manual_seed(0)
    torch.testing.assert_close(d(x), v)  # drawn from torch's seeded generator
    assert d(x.bfloat16()).dtype == torch.bfloat16


def test_disturbances_that_are_switched_off_leave_the_image_alone() -> None:
    x = torch.rand(3, 1, 8, 8)
    none = Disturbances(crop_scale=None, rotation=0, translate=0, blur_sigma=None, noise_std=0).fit((1, 8, 8))
    torch.testing.assert_close(none(x), x)
    noisy = Disturbances(crop_scale=None, rotation=0, translate=0, blur_sigma=None, noise_std=0.1,
                         noise_p=1.0).fit((1, 8, 8))
    assert 0.02 < (noisy(x) - x).abs().mean() < 0.1


def test_bad_disturbances_are_refused_with_the_key() -> None:
    from omegaconf import OmegaConf

    from genlab.config.instantiation import build

    # made in Python: the class and the argument; built from a config node: the node's full key
    with pytest.raises(UserError, match=r"^Disturbances: crop_scale=\[0.9, 0.2\]: give \[low, high\]"):
        Disturbances(crop_scale=[0.9, 0.2])
    with pytest.raises(UserError, match=r"^Disturbances: rotation=-1 is out of range: it must be >= 0"):
        Disturbances(rotation=-1)
    cfg = OmegaConf.create({"model": {"views": {"_target_": "genlab.data.augment.Disturbances", "rotation": -1}}})
    with pytest.raises(UserError, match=r"^model.views.rotation=-1 is out of range: it must be >= 0\.$"):
        build(cfg.model.views)
    with pytest.raises(IncompatibleError, match="RGB"):
        Disturbances(colour=0.5).fit((1, 8, 8))
    Disturbances(colour=0.5).fit((3, 8, 8))  # colour images take it



def test_each_views_file_takes_one_disturbance_away_and_keeps_the_others(make_cfg) -> None:
    plain = make_cfg("model=simclr").model.views
    removed = {"no_crop": ("crop_scale", None), "no_rotation": ("rotation", 0), "no_noise": ("noise_std", 0)}
    for name, (key, value) in removed.items():
        views = make_cfg("model=simclr", f"+model/views={name}").model.views
        assert views[key] == value and {k: v for k, v in views.items() if k != key} == {
            k: v for k, v in plain.items() if k != key}, name
    assert make_cfg("model=simclr", "+model/views=all").model.views == plain
    # the lesson's own rotation range gives way to the file that takes the rotation away (its _self_ comes first)
    lesson = {v: make_cfg("experiment=lesson_disturbances", f"model/views={v}").model.views for v in removed}
    assert make_cfg("experiment=lesson_disturbances").model.views.rotation == 180
    assert lesson["no_rotation"].rotation == 0 and lesson["no_crop"].rotation == lesson["no_noise"].rotation == 180
    assert lesson["no_crop"].crop_scale is None and lesson["no_noise"].noise_std == 0


def test_the_contrastive_lesson_gives_its_three_models_one_code_size(make_cfg) -> None:
    chosen = ("simclr", "ae", "pca")
    models = {m: make_cfg("experiment=lesson_contrastive", f"lesson/contrastive={m}").model for m in chosen}
    assert [models[m]._target_.rsplit(".", 1)[-1] for m in models] == ["SimCLR", "Autoencoder", "PCA"]
    assert models["simclr"].rep_dim == models["ae"].latent_dim == models["pca"].latent_dim == 8
    assert make_cfg("experiment=lesson_contrastive").model.rep_dim == 8  # simclr unless another is chosen

# ---- captions -------------------------------------------------------------------------------------------
def test_captions_mark_the_class_word_and_unknown_words_are_unk() -> None:
    per_class = class_word_lists([["zero", "0"], ["one", "1"]], (), 2, "k")
    vocab = Vocabulary(["a handwritten zero", "a handwritten one"])
    caps = make_captions(["a handwritten {word}"], per_class, vocab, 5)
    assert caps.texts == ("a handwritten zero", "a handwritten 0", "a handwritten one", "a handwritten 1")
    assert caps.classes.tolist() == [0, 0, 1, 1]
    assert caps.slot[0].tolist() == [False, False, True, False, False]
    assert caps.tokens[1, 2].item() == UNK and caps.tokens[0, 3].item() == PAD  # "0" was never read
    held_out = make_captions(["the {word} drawn"], per_class, vocab, 5)
    assert held_out.tokens[0, :3].tolist() == [UNK, vocab.ids["zero"], UNK]
    with pytest.raises(UserError, match="model.templates"):
        check_templates(["no slot here"], "model.templates")
    with pytest.raises(UserError, match="one non-empty list of words per class"):
        class_word_lists([["zero"]], (), 2, "model.class_words")


# ---- metrics ----------------------------------------------------------------------------------------------
def test_embedding_metrics_against_closed_forms() -> None:
    e = unit(6, 3, seed=7)
    assert alignment(e, e) == 0.0
    assert alignment(e, -e) == pytest.approx(4.0)  # ‖e − (−e)‖² = 4 for unit vectors
    poles = torch.tensor([[0.0, 0.0, 1.0], [0.0, 0.0, -1.0]])
    assert uniformity(poles) == pytest.approx(-8.0)  # log exp(−2·4)
    assert uniformity(torch.tensor([[1.0, 0.0]] * 4)) == pytest.approx(0.0)  # collapsed
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    keys = torch.tensor([[0.9, 0.1], [0.1, 0.9], [0.8, 0.2]])
    assert recall_at_k(q, keys, torch.tensor([1, 1]), torch.tensor([0, 1, 0]), 1) == 0.5
    assert recall_at_k(q, keys, torch.tensor([1, 1]), torch.tensor([0, 1, 0]), 2) == 0.5  # [1, 0] ranks 0, 2 first
    assert recall_at_k(q, keys, torch.tensor([1, 1]), torch.tensor([0, 1, 0]), 3) == 1.0
    prompts = class_means(keys, torch.tensor([0, 1, 0]), 2)
    torch.testing.assert_close(prompts[0], F.normalize(keys[0] + keys[2], dim=0))
    assert zero_shot_accuracy(q, prompts, torch.tensor([0, 1])) == 1.0


# ---- runs ------------------------------------------------------------------------------------------------
def test_simclr_trains_on_views_the_datamodule_draws(make_cfg, monkeypatch) -> None:
    from genlab.models.contrastive import SimCLR

    seen: list[tuple[int, ...]] = []
    original = SimCLR.loss_terms

    def spy(self: SimCLR, batch: dict, stage: str) -> dict:
        seen.append(tuple(batch["views"].shape))  # a KeyError here: the datamodule drew none
        return original(self, batch, stage)

    monkeypatch.setattr(SimCLR, "loss_terms", spy)
    cfg = make_cfg("model=simclr", "data=digits", *TINY["digits"], *FAST, "trainer.max_epochs=2",
                   "model.loss_chunk=16", "callbacks.evaluator.metrics.embedding.n=50")
    metrics = train(cfg)
    assert seen and all(s[0] == 2 and s[2:] == (1, 8, 8) for s in seen)
    for name in ("linear_probe_acc", "knn_acc", "alignment", "uniformity"):
        assert math.isfinite(metrics[f"test/{name}"])
    assert 0 <= metrics["test/alignment"] <= 4 and -4.5 < metrics["test/uniformity"] <= 0
    assert "test/zero_shot_acc" not in metrics and "test/sq_err_per_image" not in metrics  # no text, no decoder
    images = Path(cfg.paths.output_dir) / "images"
    assert {"codes.png", "neighbours.png", "views.png"} <= {p.name for p in images.iterdir()}


@pytest.mark.parametrize("model", ["simclr", "clip"])
def test_a_batch_of_one_has_no_negatives_and_is_refused_before_a_step(make_cfg, model: str) -> None:
    cfg = make_cfg(f"model={model}", "data=digits", *TINY["digits"], *FAST, "data.batch_size=1")
    with pytest.raises(UserError, match=r"data\.batch_size=1: .* at least 2 samples"):
        train(cfg)
    assert not (Path(cfg.paths.output_dir) / "checkpoints").exists()  # not one step trained


def test_clip_classifies_zero_shot_from_templates_it_never_saw(make_cfg) -> None:
    cfg = make_cfg("model=clip", "data=digits", "data.batch_size=64", *FAST, "trainer.max_epochs=6",
                   "trainer.limit_train_batches=1.0", "trainer.limit_val_batches=1.0", "trainer.limit_test_batches=1.0",
                   "callbacks.evaluator.metrics.zero_shot.n=200")
    metrics = train(cfg)
    written = json.loads((Path(cfg.paths.output_dir) / "metrics.json").read_text())["metrics"]
    # 8x8 digits are easy: far above the 10 % of chance after a few epochs
    assert written["test/zero_shot_acc"] > 0.6 and metrics["test/recall_i2t_5"] >= metrics["test/recall_i2t_1"]
    assert (Path(cfg.paths.output_dir) / "images" / "zero_shot.png").is_file()


def test_code_novelty_is_the_mean_distance_to_the_nearest_training_codes() -> None:
    from genlab.metrics.reconstruction import knn_distance

    ref, q = torch.randn(50, 3), torch.randn(7, 3)
    hand = torch.stack([torch.sort(((ref - qi) ** 2).sum(1).sqrt()).values[:4].mean() for qi in q])
    torch.testing.assert_close(knn_distance(q, ref, 4, chunk=3), hand, rtol=1e-5, atol=1e-6)


def test_gathered_negatives_make_each_process_s_loss_a_part_of_the_global_batch_s() -> None:
    """Two processes of 3 images each, simulated: with every process's views as keys, the mean of the two
    processes' losses is the one-process loss of the 6 images, in value and in gradient."""
    a1, a2 = torch.randn(6, 4, requires_grad=True), torch.randn(6, 4, requires_grad=True)
    whole = nt_xent(F.normalize(a1, dim=1), F.normalize(a2, dim=1), 0.4)
    g_whole = torch.autograd.grad(whole, [a1, a2])
    z1, z2 = F.normalize(a1, dim=1), F.normalize(a2, dim=1)
    parts = [torch.cat([z1[3 * r : 3 * r + 3], z2[3 * r : 3 * r + 3]]) for r in range(2)]  # each process's z
    gather = lambda z: torch.cat(parts)  # noqa: E731  (all_gather: every process's z, in rank order)
    losses = [nt_xent(z1[3 * r : 3 * r + 3], z2[3 * r : 3 * r + 3], 0.4, gather=gather, rank=r) for r in range(2)]
    mean = (losses[0] + losses[1]) / 2
    torch.testing.assert_close(mean, whole)
    for g, h in zip(torch.autograd.grad(mean, [a1, a2]), g_whole):
        torch.testing.assert_close(g, h)
