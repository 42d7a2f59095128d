"""What each lesson of ``scripts/lessons.py`` measures and draws for the autoencoder, VAE and GAN parts of
the lecture notes, comparing pdfs and diffusion, and ``LESSONS``, every lesson in gallery order. Imported by
``scripts/lessons.py``, which runs the presets and writes the gallery.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import torch
from lesson_boltzmann import judge_boltzmann, judge_rbm_pretraining  # beside this script
from lesson_contrastive import judge_contrastive, judge_disturbances  # beside this script
from lesson_kit import (
    Lesson,
    Outcome,
    bars,
    batched,
    config_of,
    image_rows,
    load,
    metrics_of,
    one_per_class,
    panels,
    picture,
    pixels,
)
from lesson_manifold import judge_image_manifold, judge_manifold
from matplotlib.axes import Axes
from matplotlib.image import imread
from torch import Tensor


# ---- the lessons: what each measures and draws ----------------------------------------------
def principal_cosines(a: Tensor, b: Tensor) -> Tensor:
    """Cosines (k,) of the principal angles between the column spans of a (D, k) and b (D, k),
    decreasing: the singular values of Q_aᵀ Q_b."""
    qa, _ = torch.linalg.qr(a.double())
    qb, _ = torch.linalg.qr(b.double())
    return torch.linalg.svdvals(qa.T @ qb).clamp(max=1.0)


def judge_linear_ae_pca(runs: dict[str, Path]) -> Outcome:
    from genlab.models.pca import fit_pca

    run = runs["linear_ae"]
    m = metrics_of(run)
    model, dm = load(run)
    k = model.latent_dim
    with torch.no_grad():  # the decoder is affine: its directions are decode(e_i) − decode(0)
        out = model.decode(torch.cat([torch.zeros(1, k), torch.eye(k)])).flatten(1).double()
    directions = (out[1:] - out[:1]).T  # (D, k)
    pca = fit_pca(dm.tensors("train").x, k)
    cos = principal_cosines(directions, pca.components)
    angles = torch.rad2deg(torch.acos(cos))
    unit = directions / directions.norm(dim=0)
    overlap = (unit.T @ pca.components.double()).abs()  # (k, k): |cos| of each direction with each component
    ratio = m["test/sq_err_vs_pca"]
    numbers = [f"test squared error {m['test/sq_err_per_image']:.3f} per image vs PCA-{k} "
               f"{m['test/pca_sq_err_per_image']:.3f} (ratio {ratio:.4f})",
               f"principal angles between the decoder's span and PCA's: {', '.join(f'{a:.1f}°' for a in angles)}"]

    def draw_angles(ax: Axes) -> None:
        ax.bar(np.arange(1, k + 1), angles.numpy())
        ax.set_ylim(0, 90)
        ax.set_xticks(np.arange(1, k + 1))
        ax.set_xlabel("principal angle i")
        ax.set_ylabel("degrees")
        for i, a in enumerate(angles.tolist(), start=1):
            ax.text(i, a + 2, f"{a:.1f}°", ha="center", fontsize=9)

    def draw_overlap(ax: Axes) -> None:
        shown = ax.imshow(overlap.numpy(), vmin=0, vmax=1, cmap="viridis")
        ax.set_xticks(range(k), [f"PC {j + 1}" for j in range(k)])
        ax.set_yticks(range(k), [f"dir {i + 1}" for i in range(k)])
        for i in range(k):
            for j in range(k):
                ax.text(j, i, f"{overlap[i, j]:.2f}", ha="center", va="center", color="w", fontsize=8)
        ax.figure.colorbar(shown, ax=ax, shrink=0.8)

    fig = panels([("principal angles between the two subspaces (0°: the same)", draw_angles),
                  ("|cos| of each decoder direction with each principal component: another basis", draw_overlap)],
                 f"linear autoencoder 64-{k}-64 vs PCA-{k} on the digits: squared error ratio {ratio:.3f}")
    return Outcome(numbers, ratio <= 1.01 and float(angles.max()) <= 5.0, fig)


def judge_deep_ae_pca(runs: dict[str, Path]) -> Outcome:
    from genlab.models.pca import fit_pca, pca_reconstruct

    run = runs["ae"]
    m = metrics_of(run)
    model, dm = load(run)
    k = model.latent_dim
    test = dm.tensors("test")
    x = test.x[one_per_class(test.y)]
    pca = fit_pca(dm.tensors("train").x, k)
    ratio = m["test/sq_err_vs_pca"]
    numbers = [f"test squared error {m['test/sq_err_per_image']:.3f} per image vs PCA-{k} "
               f"{m['test/pca_sq_err_per_image']:.3f} (ratio {ratio:.3f})"]
    fig = image_rows([("test digit", x), (f"deep AE, {k} numbers", batched(model.reconstruct, x)),
                      (f"PCA, {k} numbers", pca_reconstruct(pca, x).clamp(0, 1))],
                     f"deep autoencoder 64-256-128-{k} vs PCA-{k}: test squared error per image "
                     f"{m['test/sq_err_per_image']:.2f} vs {m['test/pca_sq_err_per_image']:.2f}. One test digit of "
                     "each class and its reconstructions from the code", dm.info)
    return Outcome(numbers, ratio < 1.0, fig)


def judge_denoising(runs: dict[str, Path]) -> Outcome:
    from genlab.metrics.robustness import add_noise

    ae, dae = metrics_of(runs["ae"]), metrics_of(runs["dae"])
    level = float(config_of(runs["ae"]).callbacks.evaluator.metrics.noise_robustness.noise_level)
    numbers = [f"{name}: noisy-input reconstruction error {m['test/noisy_sq_err_per_image']:.3f} (clean "
               f"{m['test/sq_err_per_image']:.3f}, the noisy input itself "
               f"{m['test/noisy_input_sq_err_per_image']:.3f}), code shift {m['test/code_shift']:.3f}"
               for name, m in (("ae", ae), ("dae", dae))]
    held = (dae["test/noisy_sq_err_per_image"] < ae["test/noisy_sq_err_per_image"]
            and dae["test/code_shift"] < ae["test/code_shift"])
    model_ae, dm = load(runs["ae"])
    model_dae, _ = load(runs["dae"])
    test = dm.tensors("test")
    x = test.x[one_per_class(test.y)]
    noisy = add_noise(x, level, bounded=True, noise=torch.randn(x.shape, generator=torch.Generator().manual_seed(0)))
    grid = pixels(image_rows([("test digit", x), (f"+ noise σ={level:g}", noisy),
                              ("ae(noisy)", batched(model_ae.reconstruct, noisy)),
                              ("dae(noisy)", batched(model_dae.reconstruct, noisy))],
                             "reconstructions of noisy test digits", dm.info))

    def draw(ax: Axes) -> None:
        bars(ax, ["reconstruction error\nof x + ε vs x", "code shift\nE‖h(x+ε)−h(x)‖² / E‖h−h̄‖²"],
             {name: [m["test/noisy_sq_err_per_image"] / ae["test/noisy_sq_err_per_image"],
                     m["test/code_shift"] / ae["test/code_shift"]] for name, m in (("ae", ae), ("dae", dae))},
             "relative to the plain ae")

    fig = panels([("", grid), ("under input noise (test set; lower is more robust)", draw)],
                 f"denoising: Gaussian noise σ = {level:g} on the test digits")
    return Outcome(numbers, held, fig)


def judge_contractive(runs: dict[str, Path]) -> Outcome:
    ae, cae = metrics_of(runs["ae"]), metrics_of(runs["cae"])
    top = int(config_of(runs["cae"]).callbacks.evaluator.metrics.jacobian.top)

    def spectrum(m: dict[str, float]) -> np.ndarray:
        return np.array([m[f"test/jacobian_sv/{i}"] for i in range(1, 1000) if f"test/jacobian_sv/{i}" in m])

    spectra = {"ae": spectrum(ae), "cae": spectrum(cae)}
    numbers = [f"{name}: mean ‖∂h/∂x‖_F {m['test/jacobian_fro']:.2f}, share of ‖J‖²_F beyond the {top} largest "
               f"singular values {m['test/jacobian_sv_tail_share']:.3f}" for name, m in (("ae", ae), ("cae", cae))]
    held = (cae["test/jacobian_fro"] < ae["test/jacobian_fro"]
            and cae["test/jacobian_sv_tail_share"] < ae["test/jacobian_sv_tail_share"])

    def draw(ax: Axes, relative: bool) -> None:
        for name, s in spectra.items():
            ax.plot(np.arange(1, len(s) + 1), s / s[0] if relative else s, marker=".", label=name)
        ax.axvline(top + 0.5, color="0.5", ls="--", lw=1)
        ax.set_yscale("log")
        ax.set_xlabel("i (singular values in decreasing order)")
        ax.set_ylabel("σ_i / σ_1" if relative else "mean σ_i of ∂h/∂x")
        ax.legend()

    fig = panels([("singular values of the encoder's Jacobian (mean over 200 test digits)",
                   lambda ax: draw(ax, False)),
                  (f"relative to the largest (dashed: the {top} largest)", lambda ax: draw(ax, True))],
                 f"contractive penalty: ‖J‖_F {ae['test/jacobian_fro']:.2f} (ae) -> {cae['test/jacobian_fro']:.2f} "
                 f"(cae); share beyond the top {top}: {ae['test/jacobian_sv_tail_share']:.3f} -> "
                 f"{cae['test/jacobian_sv_tail_share']:.3f}")
    return Outcome(numbers, held, fig)


def judge_vae_manifold(runs: dict[str, Path]) -> Outcome:
    run = runs["vae"]
    m = metrics_of(run)
    numbers = [f"active code dimensions {m['test/active_units']:.0f} of 2, test −ELBO {m['test/neg_elbo']:.2f} nats",
               f"samples from the prior: precision {m['test/precision']:.3f} (real digits: "
               f"{m['test/precision_floor']:.3f}), recall {m['test/recall']:.3f} (real digits: "
               f"{m['test/recall_floor']:.3f})"]
    held = m["test/active_units"] == 2 and m["test/precision"] >= 0.9 * m["test/precision_floor"]
    fig = panels([("decoded grid over the prior (manifold.png)", picture(run, "manifold.png")),
                  ("where the test digits' codes lie (codes.png)", picture(run, "codes.png"))],
                 f"VAE with a 2-D code on the digits: {m['test/precision']:.0%} of prior samples look like real digits")
    return Outcome(numbers, held, fig)


def judge_beta_vae(runs: dict[str, Path]) -> Outcome:
    vae, beta = metrics_of(runs["vae"]), metrics_of(runs["beta_vae"])
    betas = {name: float(config_of(runs[name]).model.beta) for name in ("vae", "beta_vae")}
    numbers = [f"β={betas[name]:g}: test squared error {m['test/sq_err_per_image']:.2f}, KL {m['test/kl']:.2f} nats, "
               f"MIG {m['test/mig']:.3f}, active dimensions {m['test/active_units']:.0f}"
               for name, m in (("vae", vae), ("beta_vae", beta))]
    held = beta["test/sq_err_per_image"] > vae["test/sq_err_per_image"] and beta["test/mig"] > vae["test/mig"]
    items = [(f"β = {betas[name]:g} ({name}): error {m['test/sq_err_per_image']:.2f}, MIG {m['test/mig']:.3f}",
              picture(runs[name], "traversals.png")) for name, m in (("vae", vae), ("beta_vae", beta))]
    fig = panels(items, "β-VAE on the shapes sprites: one code dimension per row, most KL first")
    return Outcome(numbers, held, fig)


def judge_toy_gan(runs: dict[str, Path]) -> Outcome:
    run = runs["toy_gan"]
    with open(run / "csv" / "metrics.csv", newline="") as f:
        angle = {int(r["step"]): float(r["toy/angle_deg"]) for r in csv.DictReader(f) if r.get("toy/angle_deg")}
    steps = sorted(angle)
    final = math.degrees(math.acos(min(1.0, abs(metrics_of(run)["test/cos_vw"]))))
    early = [s for s in steps if s <= 50]
    best = min(early, key=angle.get)
    numbers = [f"angle(v, w) {angle[steps[0]]:.1f}° after step 0, {angle[min(steps, key=lambda s: abs(s - 30))]:.1f}° "
               f"after step 30, {angle[best]:.1f}° at step {best} (the least within 50 steps), "
               f"{final:.1f}° at the end (step {steps[-1]})"]
    held = angle[best] < 18.2 and final < 18.2  # |cos(v, w)| > 0.95
    shots = sorted((run / "images").glob("toy_step_*.png"))
    chosen = [p for p in shots if p.name in ("toy_step_00000.png", "toy_step_00025.png", "toy_step_00050.png")]
    items = [(p.stem.replace("toy_", ""), imread(p)) for p in [*chosen, shots[-1]]]
    fig = panels(items, f"toy GAN: v turns from {angle[steps[0]]:.0f}° to {angle[best]:.0f}° off the data's "
                 f"direction w within {best} SGD steps", columns=2)
    return Outcome(numbers, held, fig)


def judge_cgan(runs: dict[str, Path]) -> Outcome:
    run = runs["cgan"]
    m = metrics_of(run)
    numbers = [f"{m['test/sample_class_acc']:.1%} of the samples classified as the digit asked for (the classifier "
               f"on real test digits: {m['test/classifier_acc']:.1%}; chance 10%)"]
    fig = panels([("", picture(run, "samples.png"))],
                 f"cGAN: row c asks for digit c; {m['test/sample_class_acc']:.1%} are read as it")
    return Outcome(numbers, m["test/sample_class_acc"] >= 0.8, fig)


def judge_cyclegan(runs: dict[str, Path]) -> Outcome:
    from genlab.data.base import TensorDataModule
    from genlab.metrics.translation import OTHER, domain_splits

    run = runs["cyclegan"]
    m = metrics_of(run)
    model, dm = load(run)
    both = domain_splits(dm)
    assert both is not None
    unrelated, found = {}, {}
    for d, splits, there in (("a", both[0], "a2b"), ("b", both[1], "b2a")):
        x = TensorDataModule.scale(splits["test"].x)
        back = batched(lambda xb, t=there: model.translate(model.translate(xb, t), OTHER[t]), x)
        # mean |x − x'| per pixel between two unrelated test images: what the cycle error is small against
        perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
        unrelated[d] = float((x - x[perm]).abs().mean())
        # the round trip is nearer (L1) to its own input than to every other test image of the domain
        nearest = torch.cdist(back.flatten(1), x.flatten(1), p=1).argmin(1)
        found[d] = (float((nearest == torch.arange(len(x))).float().mean()), len(x))
    numbers = [f"cycle error (mean |x − x̂| per pixel) {m['test/cycle_error_a']:.3f} A→B→A, "
               f"{m['test/cycle_error_b']:.3f} B→A→B; between two unrelated test images {unrelated['a']:.3f} / "
               f"{unrelated['b']:.3f}",
               f"the round trip is nearest to its own input among the domain's test images for "
               f"{found['a'][0]:.1%} of {found['a'][1]} (A) and {found['b'][0]:.1%} of {found['b'][1]} (B); chance "
               f"{1 / found['a'][1]:.1%}",
               f"translation accuracy {m['test/translation_acc_a2b']:.1%} A→B, {m['test/translation_acc_b2a']:.1%} B→A"]
    held = min(found["a"][0], found["b"][0]) > 0.5 and min(
        m["test/translation_acc_a2b"], m["test/translation_acc_b2a"]) >= 0.8
    fig = panels([("", picture(run, "cycle_a2b.png")), ("", picture(run, "cycle_b2a.png"))],
                 f"CycleGAN digits ↔ inverted digits: cycle error {m['test/cycle_error_a']:.3f} / "
                 f"{m['test/cycle_error_b']:.3f} per pixel (unrelated images: {unrelated['a']:.3f} / "
                 f"{unrelated['b']:.3f})", columns=1)
    return Outcome(numbers, held, fig)


def judge_novelty(runs: dict[str, Path]) -> Outcome:
    from genlab.metrics.reconstruction import squared_error_per_image

    run = runs["ae"]
    m = metrics_of(run)
    model, dm = load(run)
    k = dm.options.holdout_class
    test = dm.tensors("test")
    err = batched(lambda x: squared_error_per_image(x, model.reconstruct(x)), test.x)
    novel = test.y == k
    auroc = m["test/novelty_auroc"]
    numbers = [f"AUROC {auroc:.3f} for telling the unseen {k}s from the other test digits by squared error; mean "
               f"error {err[novel].mean():.2f} (unseen {k}s) vs {err[~novel].mean():.2f} (classes seen)"]

    def draw(ax: Axes) -> None:
        edges = np.linspace(0, float(err.max()), 40)
        ax.hist(err[~novel].numpy(), edges, density=True, alpha=0.6, label="test digits of the classes seen")
        ax.hist(err[novel].numpy(), edges, density=True, alpha=0.6, label=f"test {k}s (never seen in training)")
        ax.set_xlabel("squared reconstruction error per image")
        ax.set_ylabel("density")
        ax.legend()

    fig = panels([("", draw)], f"novelty by reconstruction error: AUROC {auroc:.3f}")
    return Outcome(numbers, auroc >= 0.8, fig)


# the likelihood bounds genlab's families report (each in its own unit, from metrics.json's units)
BOUNDS = ("iwae_nll", "neg_elbo", "ais_nll", "bpd")
SAMPLE_TOOLS = {"mmd2": "MMD²", "c2st_acc": "C2ST accuracy", "fid": "FID"}


def ranking(values: dict[str, float]) -> list[str]:
    """The models from best to worst by a metric where lower is better."""
    return sorted(values, key=values.__getitem__)


def kendall_tau(a: dict[str, float], b: dict[str, float]) -> float:
    """Kendall's τ-b between two metrics of the same models (ties, such as a saturated accuracy, count as
    neither agreement nor disagreement)."""
    from scipy.stats import kendalltau

    names = list(a)
    return float(kendalltau([a[n] for n in names], [b[n] for n in names]).statistic)


def judge_comparing_pdfs(runs: dict[str, Path]) -> Outcome:
    models = list(runs)
    m = {name: metrics_of(run) for name, run in runs.items()}
    units = {name: json.loads((run / "metrics.json").read_text()).get("units", {}) for name, run in runs.items()}
    numbers = []
    for name in models:
        bound = next((k for k in BOUNDS if f"test/{k}" in m[name]), None)
        unit = units[name].get(f"test/{bound}", "nats") if bound else ""
        said = f"{bound} {m[name][f'test/{bound}']:.3g} {unit}" if bound else "no likelihood"
        numbers.append(f"{name}: {said}; MMD² {m[name]['test/mmd2']:.3f}, FID {m[name]['test/fid']:.1f}, "
                       f"precision {m[name]['test/precision']:.2f}, recall {m[name]['test/recall']:.2f}, "
                       f"C2ST accuracy {m[name]['test/c2st_acc']:.3f} (floor {m[name]['test/c2st_acc_floor']:.3f})")
    values = {tool: {n: m[n][f"test/{tool}"] for n in models} for tool in SAMPLE_TOOLS}
    ranks = {tool: ranking(v) for tool, v in values.items()}
    tau = kendall_tau(values["mmd2"], values["c2st_acc"])
    saturated = [n for n in models if values["c2st_acc"][n] >= 0.995]
    numbers.append("rankings, best first: " + "; ".join(f"{SAMPLE_TOOLS[t]} {' < '.join(r)}" for t, r in ranks.items())
                   + f" (Kendall τ-b of MMD² and C2ST: {tau:.2f}; of FID and C2ST: "
                   f"{kendall_tau(values['fid'], values['c2st_acc']):.2f}; of MMD² and FID: "
                   f"{kendall_tau(values['mmd2'], values['fid']):.2f})"
                   + (f"; the classifier tells every sample of {', '.join(saturated)} from real digits, so C2ST "
                      "does not order those" if len(saturated) > 1 else ""))
    same_bound = [n for n in models if "test/bpd" in m[n]]
    if len(same_bound) > 1:
        order = ranking({n: m[n]["test/bpd"] for n in same_bound})
        numbers.append("the two bits/dim bounds rank " + " < ".join(order)
                       + "; the bounds in nats (VAE, RBM) are Bernoulli likelihoods of grey levels, on another scale")
    held = ranks["mmd2"][0] == ranks["c2st_acc"][0] and tau >= 0.6

    rows = []
    info = None
    for name, run in runs.items():
        model, dm = load(run)
        info = dm.info
        torch.manual_seed(0)
        with torch.no_grad():
            rows.append((name, model.sample(10).float().clamp(0, 1)))
    grid = pixels(image_rows(rows, "ten samples of each model (seed 0)", info))

    def draw(ax: Axes) -> None:
        bars(ax, models, {"C2ST accuracy (0.5: indistinguishable)": [m[n]["test/c2st_acc"] for n in models],
                          "MMD² × 2": [2 * m[n]["test/mmd2"] for n in models],
                          "recall": [m[n]["test/recall"] for n in models]}, "on the test digits")
        ax.axhline(m[models[0]]["test/c2st_acc_floor"], color="grey", ls="--", lw=1)
        ax.set_ylim(0, 1.4)
        ax.legend(fontsize=8, loc="upper center", ncols=3)

    fig = panels([("", grid), ("three ways to compare p_model with p_data (dashed: C2ST of real vs real)", draw)],
                 "comparing pdfs: the same digits, the same epochs, five families")
    return Outcome(numbers, held, fig)


def judge_diffusion(runs: dict[str, Path]) -> Outcome:
    from diffusion_samplers import score_sampler  # beside this script

    from genlab.evaluate import load_run

    run = runs["ddpm"]
    model, dm = load(run)
    cache = load_run(run)[0].callbacks.evaluator.classifier_cache
    scores, seconds = {}, {}
    for kind, steps in (("ddpm", model.timesteps), ("ddim", 50)):
        name = f"{'ancestral' if kind == 'ddpm' else 'DDIM'}, {steps} steps"
        scores[name], seconds[name] = score_sampler(model, dm, cache, kind, steps, n_timed=200)
    full, fast = list(scores)
    a, d = scores[full], scores[fast]
    numbers = [f"{k}: FID {v['test/fid']:.1f} (floor {v['test/fid_floor']:.1f}), precision {v['test/precision']:.2f}, "
               f"recall {v['test/recall']:.2f}; {seconds[k]:.1f} s per 1,000 samples" for k, v in scores.items()]
    ratio = seconds[fast] / seconds[full]
    numbers.append(f"DDIM's FID is {d['test/fid'] / a['test/fid']:.2f}x the ancestral sampler's, "
                   f"at {ratio:.3f} of its time")
    held = d["test/fid"] <= 1.25 * a["test/fid"] and ratio <= 0.1

    def draw(ax: Axes) -> None:
        bars(ax, ["FID / 10", "precision", "recall", "seconds per 1,000 / 100"],
             {k: [v["test/fid"] / 10, v["test/precision"], v["test/recall"], seconds[k] / 100]
              for k, v in scores.items()}, "on the test digits")

    fig = panels([("each row: one sample's way from noise (left) to the digit (right)", picture(run, "trajectory.png")),
                  ("the same network, two samplers", draw)],
                 "diffusion: a sample is noise denoised step by step; DDIM's 50 steps against all T ancestral ones")
    return Outcome(numbers, held, fig)



GUIDANCE_SCALES = (0.0, 1.0, 2.0, 4.0)


def judge_guidance(runs: dict[str, Path]) -> Outcome:
    from diffusion_samplers import score_sampler  # beside this script

    from genlab.evaluate import load_run

    run = runs["cddpm"]
    model, dm = load(run)
    cache = load_run(run)[0].callbacks.evaluator.classifier_cache
    scores = {}
    for s in GUIDANCE_SCALES:  # the same network, DDIM with its 50 steps, guided at s; the evaluator's seed;
        model.guidance_scale = s  # 50 samples of each class for the class accuracy (its standard error ≤ 0.023)
        scores[s] = score_sampler(model, dm, cache, "ddim", 50, n_timed=1,
                                  overrides=("metrics.sample_classes.per_class=50",))[0]
    keys = {"precision": "test/precision", "recall": "test/recall", "class accuracy": "test/sample_class_acc"}
    numbers = [f"s = {s:g}: precision {v['test/precision']:.2f}, recall {v['test/recall']:.2f}, "
               f"class accuracy {v['test/sample_class_acc']:.2f}, FID {v['test/fid']:.1f}" for s, v in scores.items()]
    floor = scores[1.0]
    numbers.append(f"real test digits: precision {floor['test/precision_floor']:.2f}, recall "
                   f"{floor['test/recall_floor']:.2f}, FID {floor['test/fid_floor']:.1f}")
    guided = [scores[s] for s in GUIDANCE_SCALES if s >= 1]  # s = 1 (conditional) and the guided scales
    held = all(b["test/precision"] > a["test/precision"] and b["test/recall"] < a["test/recall"]
               and b["test/sample_class_acc"] > a["test/sample_class_acc"] for a, b in zip(guided, guided[1:]))

    def draw(ax: Axes) -> None:
        for label, key in keys.items():
            ax.plot(GUIDANCE_SCALES, [scores[s][key] for s in GUIDANCE_SCALES], marker="o", label=label)
        ax.set_xlabel("guidance scale s (0: unconditional, 1: conditional)")
        ax.set_ylabel("on the test digits")
        ax.set_xticks(GUIDANCE_SCALES)
        ax.set_ylim(0, 1.02)
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)

    sweep = picture(run, "guidance_sweep.png").repeat(2, axis=0).repeat(2, axis=1)  # 8x8 digits: shown twice as large
    fig = panels([("", sweep), ("the same network's samples at each scale", draw)],
                 "guidance: a larger s trades diversity (recall) for fidelity (precision, class accuracy)")
    return Outcome(numbers, held, fig)

LESSONS = (
    Lesson("linear_ae_pca", "A linear autoencoder spans the PCA subspace",
           "An autoencoder whose encoder and decoder are linear, trained by gradient descent on squared error, "
           "finds the subspace of the top principal components: PCA is its solution (up to a rotation of the code).",
           "squared error within 1% of PCA's and every principal angle below 5°",
           judge_linear_ae_pca, quick=("trainer.max_epochs=30",)),
    Lesson("deep_ae_pca", "A deep autoencoder beats PCA at the same code size",
           "A non-linear deep autoencoder reconstructs better than PCA with as many components as it has code "
           "numbers (Hinton & Salakhutdinov 2006).",
           "test squared error below PCA's",
           judge_deep_ae_pca, quick=("trainer.max_epochs=25",)),
    Lesson("denoising", "Denoising makes codes robust to input noise",
           "An autoencoder trained to reconstruct x from x + ε (the denoising autoencoder) maps a noisy input close "
           "to the clean one's code and reconstruction: g_e(x + ε) ≈ g_e(x).",
           "the dae's reconstruction error from noisy inputs and its code shift both below the ae's",
           judge_denoising, sweep="model=ae,dae", quick=("trainer.max_epochs=20",)),
    Lesson("contractive", "The contractive penalty flattens the encoder off the data manifold",
           "The penalty λ‖∂h/∂x‖²_F shrinks the encoder's sensitivity in every direction while reconstruction keeps "
           "it along the data manifold: the Jacobian's singular values fall faster after the leading few.",
           "the cae's mean ‖∂h/∂x‖_F and its share of ‖J‖²_F beyond the leading singular values both below the ae's",
           judge_contractive, sweep="model=ae,cae", quick=("trainer.max_epochs=20",)),
    Lesson("vae_manifold", "The VAE's 2-D manifold",
           "A VAE with a 2-D code and an N(0, I) prior decodes any code drawn from the prior into a plausible image: "
           "a grid over the prior shows the learned manifold of digits.",
           "both code dimensions active and the samples' precision at least 90% of real digits'",
           judge_vae_manifold, quick=("trainer.max_epochs=50",)),
    Lesson("beta_vae", "β trades reconstruction for disentanglement",
           "Weighting the VAE's KL term by β > 1 gives a code closer to the factorised prior — more disentangled — "
           "at the price of reconstruction.",
           "with β = 4 a higher test squared error and a higher MIG than with β = 1",
           judge_beta_vae, sweep="model=vae,beta_vae", quick=("trainer.max_epochs=15",)),
    Lesson("toy_gan", "The toy GAN's v turns towards w",
           "In the lecture's toy GAN (data x = h·w, generator x = h·v, discriminator sig(|x₁|w₁ + |x₂|w₂ + b)) the "
           "generator's direction v turns towards the data's direction w.",
           "|cos(v, w)| > 0.95 (angle < 18.2°) within the first 50 steps and at the end",
           judge_toy_gan, quick=("trainer.max_epochs=4",)),
    Lesson("cgan", "cGAN class control",
           "A GAN given the class label as input to generator and discriminator generates the class it is asked for.",
           "at least 80% of the samples classified as the requested digit",
           judge_cgan, quick=("trainer.max_epochs=20",)),
    Lesson("cyclegan", "CycleGAN cycle consistency",
           "Two translators trained on unpaired images with the cycle-consistency loss give back the input after a "
           "round trip, x ≈ g_B2A(g_A2B(x)), while each translation lands in the other domain.",
           "the round trip nearer to its own input than to any other test image for more than half of them, and "
           "translation accuracy ≥ 80%, both ways",
           judge_cyclegan, quick=("trainer.max_epochs=3",)),
    Lesson("novelty", "Reconstruction error detects a novel class",
           "An autoencoder reconstructs patterns unlike its training data badly, so its reconstruction error "
           "measures novelty.",
           "AUROC ≥ 0.8 for the held-out class",
           judge_novelty, quick=("trainer.max_epochs=20",)),
    Lesson("comparing_pdfs", "Three ways to compare a model's pdf with the data's",
           "A likelihood (the KL divergence), the maximum mean discrepancy and a discriminator (here a classifier "
           "two-sample test) each measure how far p_model is from p_data; trained on the same digits for the same "
           "epochs, the families are ranked by each, and the sample-based tools should agree.",
           "MMD² and the classifier two-sample test name the same best family and rank them alike (Kendall τ ≥ 0.6)",
           judge_comparing_pdfs, sweep="model=vae,gan,ddpm,realnvp,rbm", quick=("trainer.max_epochs=15",)),
    Lesson("diffusion", "Diffusion: noise denoised step by step, and DDIM's shortcut",
           "A diffusion model samples by starting from pure noise and removing a little of it at each of T steps, "
           "x_{t-1} = f(x_t); DDIM takes a deterministic path through 50 of the T = 1000 steps and keeps the "
           "ancestral sampler's quality at a twentieth of the network evaluations.",
           "DDIM with 50 steps: FID at most 1.25x the 1000-step ancestral sampler's, in at most a tenth of its time",
           judge_diffusion, quick=("trainer.max_epochs=15",)),
    Lesson("guidance", "Guidance trades diversity for fidelity",
           "Classifier-free guidance mixes the conditional and unconditional predictions of one network, "
           "ε̃ = ε_u + s(ε_c − ε_u): a larger s gives samples that look more like their class and less varied.",
           "over s = 1 (conditional), 2 and 4, precision and the class accuracy rise and recall falls at every step",
           judge_guidance, quick=("trainer.max_epochs=15",)),
    Lesson("contrastive", "Contrastive codes beat an autoencoder's and PCA's under a linear probe",
           "With no labels, training an embedding so that a disturbed view of an image lands near the image's own "
           "embedding and far from the other images' (SimCLR's NT-Xent) gives codes from which a linear classifier "
           "reads the class better than from an autoencoder's or PCA's code of the same size.",
           "simclr's test linear-probe accuracy above both the autoencoder's and PCA's, at 8 numbers per code",
           judge_contrastive, sweep="lesson/contrastive=simclr,ae,pca", quick=("trainer.max_epochs=20",)),
    Lesson("disturbances", "Each disturbance takes a factor from the contrastive code",
           "What a contrastive code keeps is what its disturbances leave alone: taking one away (crop, rotation, "
           "noise) lets the code keep the factor it changed — the crop changes the sprite's scale, the rotation its "
           "orientation, and noise none of the factors.",
           "without the crop the scale R² and without the rotation the orientation R² (modulo the shape's symmetry) "
           "each at least 0.05 above the R² with every disturbance",
           judge_disturbances, sweep="model/views=all,no_crop,no_rotation,no_noise",
           quick=("trainer.max_epochs=10", "data.n_samples=4000")),
    Lesson("manifold", "An autoencoder recovers nature's h on the swiss roll",
           "Nature draws a low-dimensional h and a smooth map makes x = g(h); a non-linear autoencoder whose code "
           "has h's size generalises PCA to curved manifolds: its code determines h, PCA's as many components do "
           "not.",
           "t read back from the autoencoder's 1-number code with test R² ≥ 0.9 (k-NN regression), at least 0.2 "
           "above PCA-1's",
           judge_manifold, quick=("trainer.max_epochs=40",)),
    Lesson("image_manifold", "An autoencoder recovers a sprite's position on the image manifold",
           "Images of one sprite moved over the canvas lie on a curved 2-D manifold of the 1024 pixels; an "
           "autoencoder with a 2-number code recovers the position, where PCA-2 does not.",
           "the position (x and y) read back from the autoencoder's code with test R² ≥ 0.9 (k-NN regression), "
           "each at least 0.2 above PCA-2's",
           judge_image_manifold, quick=("trainer.max_epochs=20",)),
    Lesson("boltzmann", "RBM: CD learns filters, Gibbs chains make digits, PCD beats CD-1",
           "A restricted Boltzmann machine trained by contrastive divergence learns stroke-like filters, and Gibbs "
           "chains started from noise turn into digits; persistent CD, whose negative chains run on across updates, "
           "reaches a better log-likelihood (log Z by annealed importance sampling) than CD-1 for the same number "
           "of updates.",
           "PCD's test −log p(x) below CD-1's by more than twice the standard error of the difference (both AIS "
           "estimates of log Z and the paired test images)",
           judge_boltzmann, sweep="model.persistent=false,true", quick=("trainer.max_epochs=100",)),
    Lesson("rbm_pretraining", "RBM pretraining of a deep autoencoder",
           "Pretraining a deep autoencoder greedily as a stack of RBMs, then unrolling and fine-tuning it (Hinton & "
           "Salakhutdinov 2006), reconstructs better than training the same network from a random start with the "
           "same fine-tuning.",
           "the pretrained network's test squared error below the one from scratch by more than twice the paired "
           "standard error, after the same number of end-to-end training epochs",
           judge_rbm_pretraining, sweep="model.pretrain=rbm,none", quick=("trainer.max_epochs=100",)),
)
