"""What the Boltzmann-machine lessons of ``scripts/lessons.py`` measure and draw: an RBM trained by CD-1 against
persistent CD (filters, chains from noise, the AIS test log-likelihood with its standard error), and RBM
pretraining of a deep autoencoder against training it from scratch. Their ``Lesson`` entries are in
``lesson_judges.LESSONS``.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
from lesson_kit import (
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
from matplotlib.axes import Axes
from torch import Tensor


def paired_se(a: Tensor, b: Tensor) -> float:
    """The standard error of mean(a − b) for per-image values a, b (N,) of two models on the same images."""
    d = (a - b).double()
    return float(d.std() / math.sqrt(len(d)))


# ---- CD-1 against persistent CD ---------------------------------------------------------------
def judge_boltzmann(runs: dict[str, Path]) -> Outcome:
    runs = {key.lower(): run for key, run in runs.items()}  # Hydra writes the swept booleans as False / True
    cfg = config_of(runs["true"]).model
    names = {"false": f"CD-{int(config_of(runs['false']).model.cd_k)}", "true": "PCD"}
    m = {key: metrics_of(run) for key, run in runs.items()}
    cd, pcd = m["false"], m["true"]
    # the difference of the test NLLs is mean F_pcd(x) − mean F_cd(x) + log Z_pcd − log Z_cd: the free energies
    # are exact, per image, on the same test images (a paired standard error); the log Zs are two independent
    # AIS estimates, each with its standard error (test/ais_log_z_se)
    free = {}
    for key, run in runs.items():
        model, dm = load(run)
        x = dm.tensors("test").x  # binarised once with a fixed seed, as the evaluator scored it
        free[key] = batched(lambda xb, mdl=model: mdl.free_energy(mdl.flat(xb)), x)
    diff = pcd["test/ais_nll"] - cd["test/ais_nll"]
    paired = paired_se(free["true"], free["false"])
    se = math.sqrt(pcd["test/ais_log_z_se"] ** 2 + cd["test/ais_log_z_se"] ** 2 + paired**2)
    numbers = [f"{names[k]}: test −log p(x) {m[k]['test/ais_nll']:.3f} nats per image, log Z "
               f"{m[k]['test/ais_log_z']:.3f} ± {m[k]['test/ais_log_z_se']:.3f} by AIS ({int(cfg.ais_runs)} runs)"
               for k in ("false", "true")]
    numbers.append(f"PCD − {names['false']}: {diff:+.3f} ± {se:.3f} nats per image (the standard errors of both "
                   f"log Zs and {paired:.3f} of the {len(free['true'])} paired test images combined)")
    numbers.append(f"samples after {int(cfg.sample_steps)} Gibbs sweeps from noise: "
                   + ", ".join(f"{names[k]} precision {m[k]['test/precision']:.2f}, recall {m[k]['test/recall']:.2f}"
                               for k in ("false", "true"))
                   + f" (real test digits: {cd['test/precision_floor']:.2f}, {cd['test/recall_floor']:.2f})")
    held = diff < -2 * se

    def draw_nll(ax: Axes) -> None:
        for i, k in enumerate(("false", "true")):
            ax.errorbar(i, m[k]["test/ais_nll"], yerr=2 * m[k]["test/ais_log_z_se"], fmt="o", capsize=6, ms=7)
            ax.annotate(f"{m[k]['test/ais_nll']:.3f}", (i, m[k]["test/ais_nll"]), xytext=(12, -4),
                        textcoords="offset points", fontsize=9)
        ax.set_xticks([0, 1], [names["false"], "PCD"])
        ax.set_xlim(-0.6, 1.8)
        lo, hi = sorted((cd["test/ais_nll"], pcd["test/ais_nll"]))
        pad = max(0.15, 4 * se, 0.6 * (hi - lo))
        ax.set_ylim(lo - pad, hi + pad)
        ax.set_ylabel("test −log p(x), nats per image (lower is better)")
        ax.text(0.5, 0.04, f"PCD − {names['false']} = {diff:+.3f} ± {se:.3f} (± 1 standard error)",
                transform=ax.transAxes, ha="center", fontsize=9)

    def draw_samples(ax: Axes) -> None:
        bars(ax, ["precision", "recall"],
             {names["false"]: [cd["test/precision"], cd["test/recall"]],
              "PCD": [pcd["test/precision"], pcd["test/recall"]],
              "real test digits": [cd["test/precision_floor"], cd["test/recall_floor"]]},
             "share (k-NN balls, dataset classifier's features)")
        ax.set_ylim(0, 1.15)
        ax.legend(fontsize=8, loc="upper center", ncols=3)

    items = []
    for k in ("false", "true"):
        items += [(f"{names[k]}: the hidden units' weights", picture(runs[k], "filters.png")),
                  (f"{names[k]}: Gibbs chains from random binary images", picture(runs[k], "gibbs_from_noise.png"))]
        items.append(("AIS estimates (error bars: ± 2 standard errors of log Z)", draw_nll) if k == "false" else
                     (f"samples after {int(cfg.sample_steps)} sweeps from noise against real digits", draw_samples))
    fig = panels(items, f"RBM with {int(cfg.n_hidden)} hidden units on the binarised 8x8 digits, {names['false']} vs "
                 f"persistent CD for the same updates: test −log p(x) {cd['test/ais_nll']:.3f} vs "
                 f"{pcd['test/ais_nll']:.3f} nats ({diff:+.3f} ± {se:.3f})", columns=3)
    return Outcome(numbers, held, fig)


# ---- RBM pretraining of the deep autoencoder ---------------------------------------------------
def validation_curve(run: Path) -> tuple[np.ndarray, np.ndarray]:
    """(epochs (E,), val/loss (E,)) from the run's CSV log."""
    with open(run / "csv" / "metrics.csv", newline="") as f:
        rows = [(int(r["epoch"]), float(r["val/loss"])) for r in csv.DictReader(f) if r.get("val/loss")]
    return np.array([e for e, _ in rows]), np.array([v for _, v in rows])


def judge_rbm_pretraining(runs: dict[str, Path]) -> Outcome:
    from genlab.metrics.reconstruction import squared_error_per_image

    rbm, none = metrics_of(runs["rbm"]), metrics_of(runs["none"])
    cfg = config_of(runs["rbm"]).model
    code = int(cfg.latent_dim)
    shape = "-".join(str(n) for n in (64, *cfg.net.hidden, code))
    labels = {"rbm": "RBM-pretrained", "none": "from scratch"}
    errors, shown = {}, {}
    for key, run in runs.items():
        model, dm = load(run)
        test = dm.tensors("test")  # the same test images for both (the same seed)
        errors[key] = batched(lambda xb, mdl=model: squared_error_per_image(xb, mdl.reconstruct(xb)), test.x)
        x = test.x[one_per_class(test.y)]
        shown[key] = batched(model.reconstruct, x)
    diff = rbm["test/sq_err_per_image"] - none["test/sq_err_per_image"]
    se = paired_se(errors["rbm"], errors["none"])
    curves = {key: validation_curve(run) for key, run in runs.items()}
    best = {key: int(c[0][c[1].argmin()]) for key, c in curves.items()}

    def late_fall(loss: np.ndarray) -> tuple[float, int]:
        """How much the best validation loss fell (relative) over the last fifth of the epochs, and their number:
        whether the budget stopped a network that was still learning."""
        cut = max(1, len(loss) * 4 // 5)
        return float(1 - loss.min() / loss[:cut].min()), len(loss) - cut

    numbers = []
    for k, m in (("rbm", rbm), ("none", none)):
        fall, last = late_fall(curves[k][1])
        numbers.append(f"{labels[k]}: test squared error {m['test/sq_err_per_image']:.3f} per image; best validation "
                       f"epoch {best[k] + 1} of {len(curves[k][0])}, the best validation loss {fall:.1%} lower over "
                       f"the last {last} epochs")
    numbers.append(f"pretrained − from scratch: {diff:+.3f} ± {se:.3f} per image (paired standard error over "
                   f"{len(errors['rbm'])} test digits); PCA-{code}: {rbm['test/pca_sq_err_per_image']:.3f}")
    held = diff < -2 * se

    def draw_curves(ax: Axes) -> None:
        for key in ("rbm", "none"):
            epochs, loss = curves[key]
            first = f" (after {int(cfg.rbm_epochs)} CD epochs a layer)" if key == "rbm" else ""
            ax.plot(epochs + 1, loss, label=labels[key] + first)
            ax.plot(best[key] + 1, loss.min(), "k.", ms=7)
        ax.set_xlabel("epoch of end-to-end training (the same optimiser and batches)")
        ax.set_ylabel("validation loss (BCE, nats per image)")
        top = max(float(c[1][min(2, len(c[1]) - 1)]) for c in curves.values())
        ax.set_ylim(min(float(c[1].min()) for c in curves.values()) * 0.98, top)
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)

    def draw_errors(ax: Axes) -> None:
        bars(ax, ["test squared error per image"],
             {labels["rbm"]: [rbm["test/sq_err_per_image"]], labels["none"]: [none["test/sq_err_per_image"]],
              f"PCA-{code} (linear, the same code size)": [rbm["test/pca_sq_err_per_image"]]},
             "squared error per image (lower is better)")
        ax.set_ylim(0, 1.35 * max(rbm["test/sq_err_per_image"], none["test/sq_err_per_image"],
                                  rbm["test/pca_sq_err_per_image"]))
        ax.legend(fontsize=8, loc="upper center", ncols=2)

    grid = pixels(image_rows([("test digit", x), (labels["rbm"], shown["rbm"]), (labels["none"], shown["none"])],
                             "one test digit of each class and its reconstructions", dm.info, size=56))
    fig = panels([("validation loss (dots: the epochs tested)", draw_curves),
                  (f"test set: pretrained − from scratch = {diff:+.3f} ± {se:.3f} (paired standard error)",
                   draw_errors), ("", grid)],
                 f"deep autoencoder {shape} on the 8x8 digits: pretrained as a stack of RBMs (Hinton & "
                 "Salakhutdinov) vs from a random start", columns=2)
    return Outcome(numbers, held, fig)
