"""The contrastive-embedding lessons of ``scripts/lessons.py``: what SimCLR's disturbed-view objective gives
a code without labels (``contrastive``: its linear probe against an autoencoder's and PCA's at the same code
size, on the digits) and what each disturbance takes from it (``disturbances``: the shapes sprites' factors
read from the code with every disturbance and with one taken away at a time). Their ``Lesson`` entries, with
the claims and criteria, are in ``LESSONS`` of ``lesson_judges.py``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from lesson_kit import Outcome, bars, batched, config_of, load, metrics_of, panels, picture
from matplotlib.axes import Axes
from torch import Tensor

CODES = ("simclr", "ae", "pca")  # the swept lesson/contrastive choices, in the figure's order
CAPTIONS = {"simclr": "simclr: the representation h, before the projection head",
            "ae": "ae: the autoencoder's code", "pca": "pca: the principal components"}


def code_size(run: Path) -> int:
    """The size of the code a run's model encodes to (SimCLR's rep_dim, the others' latent_dim)."""
    model = config_of(run).model
    return int(model.rep_dim if "rep_dim" in model else model.latent_dim)


def judge_contrastive(runs: dict[str, Path]) -> Outcome:
    m = {name: metrics_of(runs[name]) for name in CODES}
    sizes = {name: code_size(runs[name]) for name in CODES}
    assert len(set(sizes.values())) == 1, f"the three codes should have one size, not {sizes}"
    k = sizes["simclr"]
    probe = {name: m[name]["test/linear_probe_acc"] for name in CODES}
    numbers = [f"{name}: linear probe {probe[name]:.1%}, 5-NN {m[name]['test/knn_acc']:.1%} on the test digits "
               f"({k} numbers per digit)" for name in CODES]
    numbers.append(f"simclr's probe {probe['simclr'] - probe['ae']:+.1%} against the autoencoder's, "
                   f"{probe['simclr'] - probe['pca']:+.1%} against PCA's")
    held = probe["simclr"] > probe["ae"] and probe["simclr"] > probe["pca"]

    def draw(ax: Axes) -> None:
        bars(ax, ["linear probe\n(logistic regression)", "5-nearest-neighbour\nclassifier"],
             {name: [m[name]["test/linear_probe_acc"], m[name]["test/knn_acc"]] for name in CODES},
             "accuracy on the test digits (chance 10%)")
        low = min(min(probe.values()), *(m[n]["test/knn_acc"] for n in CODES))
        ax.set_ylim(max(0.0, low - 0.1), 1.0)
        ax.set_xlabel(f"classifiers fitted on the {k}-number codes of the training digits")

    items = [("accuracy of classifiers reading the digit from each code (no model saw a label)", draw)]
    items += [(f"{CAPTIONS[name]} (the run's codes.png)", picture(runs[name], "codes.png")) for name in CODES]
    fig = panels(items, f"contrastive embeddings on the 8x8 digits, {k} numbers per code: linear probe "
                 f"{probe['simclr']:.1%} (simclr) vs {probe['ae']:.1%} (autoencoder) vs {probe['pca']:.1%} (PCA)",
                 columns=2, plot_size=(5.0, 5.0))
    return Outcome(numbers, held, fig)


# ---- disturbances -------------------------------------------------------------------------
VIEWS = ("all", "no_crop", "no_rotation", "no_noise")  # the swept model/views choices
REMOVED = {"all": "every disturbance", "no_crop": "without the crop", "no_rotation": "without the rotation",
           "no_noise": "without the noise"}
SYMMETRY = {"square": 4, "ellipse": 2, "heart": 1}  # a sprite looks the same after a turn of 2π / order
FACTORS = {"shape": "shape\n(probe accuracy)", "scale": "scale R²", "x": "x R²", "y": "y R²",
           "orientation": "orientation R²\n(mod symmetry)"}
SPACES = {"h": "h, the code (encode: what the probes and the evaluator read)",
          "z": "z, the embedding NT-Xent compares (after the projection head)"}
MARGIN = 0.05  # by how much a read-out must rise for the code to count as keeping more of a factor (the criterion)


def read_outs(run: Path) -> dict[str, dict[str, float]]:
    """What a linear read-out finds of each factor on the test sprites, in h (the evaluator's test/acc/shape and
    test/r2/<factor> from metrics.json) and in z (the same probe and ridge fits here); in both, the orientation
    as (cos nθ, sin nθ) with n the shape's order of symmetry, the mean R² of the two (test/r2/rotation reads θ
    itself, which a square at θ and θ + 90° cannot tell apart)."""
    from threadpoolctl import threadpool_limits

    from genlab.metrics.factors import factor_r2

    m = metrics_of(run)
    model, dm = load(run)
    names = list(dm.info.factor_names)
    order = torch.tensor([float(SYMMETRY[s]) for s in dm.info.class_names])  # the shape label's symmetry

    def targets(split: str) -> tuple[Tensor, Tensor]:
        s = dm.tensors(split)
        n_theta = order[s.y] * s.factors[:, names.index("rotation")]  # (N,)
        return s.x, torch.cat([s.factors, n_theta.cos()[:, None], n_theta.sin()[:, None]], 1)  # (N, K + 2)

    (x_train, f_train), (x_test, f_test) = targets("train"), targets("test")
    out = {"h": {"shape": m["test/acc/shape"], **{k: m[f"test/r2/{k}"] for k in ("scale", "x", "y")}}}
    with threadpool_limits(1):  # one BLAS thread, as the trainings: more only wait on each other on shared cores
        angle = slice(len(names), len(names) + 2)
        r2 = factor_r2(batched(model.encode, x_train), f_train[:, angle], batched(model.encode, x_test),
                       f_test[:, angle], ("cos", "sin"))
        out["h"]["orientation"] = float(np.mean(list(r2.values())))
        r2 = factor_r2(batched(model.embed, x_train), f_train, batched(model.embed, x_test), f_test,
                       [*names, "cos", "sin"], ["shape"])
        out["z"] = {k: r2[k] for k in ("shape", "scale", "x", "y")}
        out["z"]["orientation"] = float(np.mean([r2["cos"], r2["sin"]]))
    return out


def judge_disturbances(runs: dict[str, Path]) -> Outcome:
    read = {v: read_outs(runs[v]) for v in VIEWS}

    def said(r: dict[str, float]) -> str:
        return (f"shape {r['shape']:.1%}, R² scale {r['scale']:.2f}, x {r['x']:.2f}, y {r['y']:.2f}, "
                f"orientation {r['orientation']:.2f}")

    numbers = [f"{REMOVED[v]} ({v}): in h {said(read[v]['h'])}; in z {said(read[v]['z'])}" for v in VIEWS]

    def gain(views: str, factor: str, space: str = "h") -> float:
        return read[views][space][factor] - read["all"][space][factor]

    scale_gain, orient_gain = gain("no_crop", "scale"), gain("no_rotation", "orientation")
    numbers.append(f"in h, taking the crop away moves the scale R² {scale_gain:+.3f}, taking the rotation away the "
                   f"orientation R² {orient_gain:+.3f} (and x, y {gain('no_rotation', 'x'):+.3f}, "
                   f"{gain('no_rotation', 'y'):+.3f}), taking the noise away the shape probe "
                   f"{gain('no_noise', 'shape'):+.1%}")
    numbers.append(f"in z, the same: scale {gain('no_crop', 'scale', 'z'):+.3f}, orientation "
                   f"{gain('no_rotation', 'orientation', 'z'):+.3f}, x, y {gain('no_rotation', 'x', 'z'):+.3f}, "
                   f"{gain('no_rotation', 'y', 'z'):+.3f}, shape {gain('no_noise', 'shape', 'z'):+.1%}")
    held = scale_gain >= MARGIN and orient_gain >= MARGIN
    low = min(0.0, *(r[s][f] for r in read.values() for s in SPACES for f in FACTORS)) - 0.05

    def draw(ax: Axes, space: str) -> None:
        width = 0.8 / len(VIEWS)
        for i, v in enumerate(VIEWS):
            pos = np.arange(len(FACTORS)) + (i - (len(VIEWS) - 1) / 2) * width
            drawn = ax.bar(pos, [read[v][space][f] for f in FACTORS], width, label=REMOVED[v])
            ax.bar_label(drawn, fmt="%.2f", fontsize=7)
        ax.set_xticks(np.arange(len(FACTORS)), list(FACTORS.values()))
        ax.set_ylim(low, 1.18)
        ax.axhline(0, color="0.5", lw=0.8)
        ax.set_ylabel("on the test sprites (1: all of it)")
        ax.set_xlabel(f"what a linear read-out finds in {space}")
        ax.legend(fontsize=8, loc="upper center", ncols=4, title="SimCLR trained on views that differ by",
                  title_fontsize=8)

    shown = picture(runs["all"], "views.png")
    items = [("", shown.repeat(2, axis=0).repeat(2, axis=1)),  # titled by the run: the disturbances it drew
             *((f"in {SPACES[space]}", lambda ax, space=space: draw(ax, space)) for space in SPACES)]
    fig = panels(items, f"taking a disturbance away: in h, scale R² {scale_gain:+.2f} (no crop), orientation R² "
                 f"{orient_gain:+.2f} (no rotation)", columns=1, plot_size=(9.5, 4.2))
    return Outcome(numbers, held, fig)
