"""The manifold lessons of ``scripts/lessons.py``: nature draws a low-dimensional h and a smooth map makes
x = g(h); an autoencoder whose code has h's size recovers h where PCA with as many components cannot. Two
manifolds with a known h: the swiss roll (2-D points along a spiral, h = its angle t) and the sprites of
``data=shapes`` moved over the canvas (one shape, scale and rotation fixed, h = the position x, y).

"Recovers" means that h is a function of the code: h is read back from the test codes by a k-nearest-
neighbour regression fitted on the training codes (R², 1: h determined by the code; 0: no better than h's
mean), so that any smooth, one-to-one re-parametrisation of h counts, as it must (a code is h only up to
one); for a 1-D code also Spearman's rank correlation |ρ| with h (1: the code orders the points as h does).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from lesson_kit import Outcome, load, metrics_of, panels, picture
from matplotlib.axes import Axes
from scipy.stats import spearmanr
from torch import Tensor

KNN_K = 10


def knn_r2(train_codes: Tensor, train_h: Tensor, test_codes: Tensor, test_h: Tensor) -> list[float]:
    """Per column of h (N, K): the test R² of a k-NN regression (k = KNN_K, codes standardised with the
    training statistics) from the codes (N, d) to that column."""
    from sklearn.metrics import r2_score
    from sklearn.neighbors import KNeighborsRegressor
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    reg = make_pipeline(StandardScaler(), KNeighborsRegressor(KNN_K))
    reg.fit(train_codes.double().numpy(), train_h.double().numpy())
    predicted = reg.predict(test_codes.double().numpy()).reshape(len(test_h), -1)
    return [float(r2_score(test_h[:, k].double().numpy(), predicted[:, k])) for k in range(test_h.shape[1])]


def codes(run: Path) -> tuple[dict[str, dict[str, Tensor]], dict[str, Tensor], Any, Any]:
    """The run's autoencoder and PCA with as many components (fitted on the same training split): their codes
    of the training and test split ({"ae": {"train": (N, d), "test": ...}, "pca": ...}), the true h of both
    splits, and the autoencoder and its datamodule (``load``)."""
    from genlab.models.pca import fit_pca, pca_encode

    model, dm = load(run)
    train, test = dm.tensors("train"), dm.tensors("test")
    d = model.latent_dim
    fit = fit_pca(train.x, d)
    with torch.no_grad():
        out = {"ae": {"train": model.encode(train.x), "test": model.encode(test.x)},
               "pca": {"train": pca_encode(fit, train.x), "test": pca_encode(fit, test.x)}}
    return out, {"train": train.factors, "test": test.factors}, model, dm


def scatter_against(ax: Axes, h: Tensor, code: Tensor, title: str, xlabel: str, ylabel: str) -> None:
    """The code (N,) against the true h (N,), one dot per test point."""
    ax.scatter(h.numpy(), code.numpy(), s=2, alpha=0.5, c=h.numpy(), cmap="viridis")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)


def judge_manifold(runs: dict[str, Path]) -> Outcome:
    run = runs["ae"]
    m = metrics_of(run)
    z, h, model, dm = codes(run)
    d = model.latent_dim
    t = h["test"][:, 0]
    rho = {k: abs(float(spearmanr(v["test"][:, 0].numpy(), t.numpy()).statistic)) for k, v in z.items()}
    r2 = {k: knn_r2(v["train"], h["train"], v["test"], h["test"])[0] for k, v in z.items()}
    numbers = [f"{name}: |Spearman ρ| of the {d}-number code with t {rho[key]:.3f}, t read back from the code "
               f"(k-NN R²) {r2[key]:.3f}" for key, name in (("ae", "autoencoder"), ("pca", f"PCA-{d}"))]
    numbers.append(f"test squared error per point {m['test/sq_err_per_image']:.3f} (PCA-{d}: "
                   f"{m['test/pca_sq_err_per_image']:.3f})")
    held = r2["ae"] >= 0.9 and r2["ae"] - r2["pca"] >= 0.2

    x = dm.tensors("test").x
    with torch.no_grad():  # the decoder's curve: codes over the range the test points use
        lo, hi = z["ae"]["test"].min(), z["ae"]["test"].max()
        curve = model.decode(torch.linspace(float(lo), float(hi), 400)[:, None])

    def data(ax: Axes) -> None:
        shown = ax.scatter(x[:, 0].numpy(), x[:, 1].numpy(), s=2, c=t.numpy(), cmap="viridis")
        ax.plot(curve[:, 0].numpy(), curve[:, 1].numpy(), color="red", lw=1, label="decoder over the code's range")
        ax.figure.colorbar(shown, ax=ax, label="t (nature's h)")
        ax.set_aspect("equal")
        ax.legend(fontsize=8, loc="lower left")
        ax.set_xlabel("x₁")
        ax.set_ylabel("x₂")

    fig = panels([("test points coloured by the angle t", data),
                  ("", lambda ax: scatter_against(ax, t, z["ae"]["test"][:, 0], f"autoencoder: |ρ| = {rho['ae']:.2f}",
                                                  "t", "code")),
                  ("", lambda ax: scatter_against(ax, t, z["pca"]["test"][:, 0], f"PCA-{d}: |ρ| = {rho['pca']:.2f}",
                                                  "t", "first principal component"))],
                 "the swiss roll: a 1-number autoencoder code determines the angle t (piece by piece: the code "
                 "need not run in t's order), the first principal component does not", plot_size=(4.2, 3.6))
    return Outcome(numbers, held, fig)


def judge_image_manifold(runs: dict[str, Path]) -> Outcome:
    run = runs["ae"]
    m = metrics_of(run)
    z, h, model, _ = codes(run)
    d = model.latent_dim
    r2 = {k: knn_r2(v["train"], h["train"], v["test"], h["test"]) for k, v in z.items()}
    numbers = [f"{name}: sprite position read back from the {d}-number code (k-NN R²): x {r2[key][0]:.3f}, "
               f"y {r2[key][1]:.3f}" for key, name in (("ae", "autoencoder"), ("pca", f"PCA-{d}"))]
    numbers.append(f"test squared error per image {m['test/sq_err_per_image']:.2f} (PCA-{d}: "
                   f"{m['test/pca_sq_err_per_image']:.2f})")
    held = min(r2["ae"]) >= 0.9 and all(a - p >= 0.2 for a, p in zip(r2["ae"], r2["pca"]))
    xy = h["test"]
    # colour: the sprite's position as red (x) and blue (y), so that a code plane that keeps the canvas's
    # order shows a smooth colour field
    colours = np.stack([xy[:, 0].numpy(), 0.5 * np.ones(len(xy)), xy[:, 1].numpy()], axis=1)
    colours = (colours - colours.min(0)) / np.ptp(colours, 0).clip(1e-9)

    def code_plane(key: str, title: str):  # noqa: ANN202 - a panel's drawing function
        def draw(ax: Axes) -> None:
            c = z[key]["test"]
            ax.scatter(c[:, 0].numpy(), c[:, 1].numpy(), s=3, c=colours)
            ax.set_xlabel("code 1")
            ax.set_ylabel("code 2")
            ax.set_title(title, fontsize=9)
        return draw

    def canvas(ax: Axes) -> None:
        ax.scatter(xy[:, 0].numpy(), xy[:, 1].numpy(), s=3, c=colours)
        ax.invert_yaxis()
        ax.set_xlabel("sprite centre x (nature's h₁)")
        ax.set_ylabel("sprite centre y (h₂)")
        ax.set_title("the test sprites' positions (colour: red ~ x, blue ~ y)", fontsize=9)

    fig = panels([("test images and their reconstructions", picture(run, "reconstructions.png")),
                  ("", canvas),
                  ("", code_plane("ae", f"autoencoder codes (same colours): R² x {r2['ae'][0]:.2f}, "
                                        f"y {r2['ae'][1]:.2f}")),
                  ("", code_plane("pca", f"PCA-{d} codes: R² x {r2['pca'][0]:.2f}, y {r2['pca'][1]:.2f}"))],
                 "a sprite moved over the canvas: how well the 2-number codes of an autoencoder and of PCA-2 keep "
                 "its position",
                 columns=4, plot_size=(3.8, 3.4))
    return Outcome(numbers, held, fig)
