"""Robustness of what a model does with its input: how reconstructions and codes move when Gaussian
noise is added to the test images (the denoising autoencoder's claim), and the encoder's Jacobian
∂h/∂x at test points, whose singular values say along how many input directions the code is
sensitive (the contractive autoencoder's claim: sensitive along the data manifold, flat off it).
Pure functions on tensors first, then the metric objects.

Both metric objects are opt-in: they are not in the default list of ``conf/callbacks/evaluator.yaml``
(the Jacobian costs d backward passes per test point). Add them from the command line,
``'+callbacks.evaluator.metrics.jacobian={_target_: genlab.metrics.robustness.EncoderJacobian}'``,
or from a preset (``experiment=lesson_denoising``, ``experiment=lesson_contractive``).

Shapes: N samples, D = flattened data dimension, d = code size, k = min(d, D) singular values.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Annotated

import torch
from torch import Tensor

from genlab.capabilities import CanEncode, CanReconstruct, capable
from genlab.config.fields import Bounds, checked
from genlab.data.base import TensorDataModule
from genlab.errors import GenlabWarning
from genlab.metrics.base import Context, Metric, seeded
from genlab.metrics.reconstruction import squared_error_per_image

Encoder = Callable[..., Tensor]  # encode(x (B, *shape), y (B,) | None) -> h (B, d)


# ---- input noise ----------------------------------------------------------------------------
def add_noise(x: Tensor, level: float, bounded: bool = False, noise: Tensor | None = None) -> Tensor:
    """x (N, *shape) + level·ε, ε ~ N(0, I): the noisy input, same shape.

    ``noise``: ε itself (same shape as x), so that callers fix it under a seed and reuse it; None
    draws it from the global random stream. ``bounded``: clamp to [0, 1], as the denoising
    autoencoder corrupts data in [0, 1], so that the noisy input stays in the range the model
    was trained on (and the noise that remains is what the model is asked to remove).
    """
    eps = torch.randn_like(x, dtype=torch.float32) if noise is None else noise.to(x.device)
    out = x.float() + level * eps
    return out.clamp(0, 1) if bounded else out


def code_shift(h: Tensor, h_noisy: Tensor) -> float:
    """The relative code shift E‖h(x + ε) − h(x)‖² / E‖h(x) − mean h‖² of codes (N, d) of clean
    inputs and of their noisy copies.

    How far noise moves a code, relative to how far the codes of different inputs lie from their
    mean (the total variance of the clean codes, divisor N). The ratio is scale-free: encoders whose
    codes differ in scale (a sigmoid code, an unbounded one) compare on it, and an encoder that
    shrinks every code towards a constant does not look robust by doing so. 0: noise does not move
    codes at all; 1: it moves them as far as the typical distance to the mean code.
    """
    h, h_noisy = h.double().flatten(1), h_noisy.double().flatten(1)
    spread = (h - h.mean(0)).pow(2).sum(1).mean()
    shift = (h_noisy - h).pow(2).sum(1).mean()
    return float(shift / spread) if spread > 0 else float("nan")


# ---- the encoder's Jacobian -----------------------------------------------------------------
def encoder_jacobian(encode: Encoder, x: Tensor, y: Tensor | None = None) -> Tensor:
    """∂h/∂x (N, d, D) of a per-sample encoder at each x (N, *shape) (flattened to D inputs).

    Reverse mode (d vector-Jacobian products per point) vmap'd over the points, as
    ``genlab.models.autoencoder.contractive_penalty`` builds it; ``y`` (N,) or (N, C): the labels
    or conditioning vectors a conditional encoder takes, held fixed. Works inside ``torch.no_grad``
    and Lightning's inference mode (the test stage): the points are copied out of inference mode
    and gradients are switched on for the transform.
    """
    from torch.func import jacrev, vmap

    shape = tuple(x.shape[1:])
    with torch.inference_mode(False), torch.enable_grad():
        flat = x.detach().float().flatten(1).clone()  # a normal tensor, also when x is an inference tensor
        if y is None:
            return vmap(jacrev(lambda xi: encode(xi.view(1, *shape)).flatten(1)[0]))(flat)
        labels = y.detach().clone()
        return vmap(jacrev(lambda xi, yi: encode(xi.view(1, *shape), yi[None]).flatten(1)[0]))(flat, labels)


def jacobian_singular_values(jac: Tensor) -> Tensor:
    """Jacobians (N, d, D) -> their singular values (N, k), k = min(d, D), in decreasing order."""
    return torch.linalg.svdvals(jac.detach().double()).float()


def spectrum_summary(sv: Tensor, top: int = 3) -> dict[str, float]:
    """Means over N points of what singular values (N, k) (decreasing, per point) say:

    - ``fro``: ‖J‖_F = sqrt(Σ σ_i²), how sensitive the code is to the input overall;
    - ``top``: the mean of the ``top`` largest σ, the sensitivity along the strongest directions;
    - ``tail_share``: Σ_{i > top} σ_i² / Σ σ_i², the share of ‖J‖²_F outside those directions: how
      fast the spectrum decays (0: the code moves along ``top`` input directions only). Points
      with J = 0 are left out of this mean; NaN if all are.
    """
    sv = sv.double()
    sq = sv.pow(2)
    total = sq.sum(1)
    tail = sq[:, top:].sum(1)
    moving = total > 0
    share = (tail[moving] / total[moving]).mean() if moving.any() else torch.tensor(float("nan"))
    return {"fro": float(total.sqrt().mean()), "top": float(sv[:, :top].mean()), "tail_share": float(share)}


def mean_spectrum(sv: Tensor) -> Tensor:
    """Singular values (N, k) of N points -> the mean spectrum (k,): the mean of the i-th largest."""
    return sv.double().mean(0).float()


# ---- the metric objects ----------------------------------------------------------------------
class NoiseRobustness(Metric):
    """How reconstructions and codes move under Gaussian input noise of standard deviation
    ``noise_level`` (clamped to [0, 1] for bounded data when ``clamp``), on up to ``n_points`` test
    images (a fixed subset) with the noise drawn under the evaluator's seed:

    - ``test/noisy_sq_err_per_image``: ‖x − x̂(x + ε)‖² per image, the reconstruction of the noisy
      input against the clean one (models that reconstruct), beside
      ``test/noisy_input_sq_err_per_image``, ‖x − (x + ε)‖², the noisy input's own error: below it,
      the model removes noise;
    - ``test/code_shift``: E‖h(x + ε) − h(x)‖² / E‖h(x) − mean h‖² (models that encode; ``code_shift``).
    """

    columns = ("noisy_sq_err_per_image", "code_shift")

    @checked
    def __init__(self, noise_level: Annotated[float, Bounds(ge=0)] = 0.3, clamp: bool = True,
                 n_points: Annotated[int | None, Bounds(ge=1)] = 2000) -> None:
        self.noise_level, self.clamp, self.n_points = noise_level, clamp, n_points

    def applies(self, ctx: Context) -> bool:
        return capable(ctx.model, CanReconstruct) or capable(ctx.model, CanEncode)

    def compute(self, ctx: Context) -> dict[str, float]:
        test = ctx.split("test")
        key = "test"
        if self.n_points is not None and self.n_points < len(test):
            test, key = test.pick(self.n_points, ctx.seed), f"test:{self.n_points}"
        x, y, model = TensorDataModule.scale(test.x), ctx.labels(test), ctx.model
        with seeded(ctx.device, ctx.seed):
            eps = torch.randn(x.shape)
        noisy = add_noise(x, self.noise_level, self.clamp and ctx.info.bounded, eps)
        out: dict[str, float] = {}
        if capable(model, CanReconstruct):
            x_hat = ctx.map(lambda xb, y=None: model.reconstruct(xb, y), noisy, y)
            out["test/noisy_sq_err_per_image"] = squared_error_per_image(x, x_hat).mean().item()
            out["test/noisy_input_sq_err_per_image"] = squared_error_per_image(x, noisy).mean().item()
        if capable(model, CanEncode):
            h = ctx.codes(test, key)
            if h is not None:
                h_noisy = ctx.map(lambda xb, y=None: model.encode(xb, y).flatten(1), noisy, y)
                out["test/code_shift"] = code_shift(h, h_noisy)
        return out


class EncoderJacobian(Metric):
    """The singular values of the encoder's Jacobian ∂h/∂x at ``n_points`` fixed test points
    (``chunk`` points at a time), summarised by ``spectrum_summary``: ``test/jacobian_fro`` (mean
    ‖J‖_F), ``test/jacobian_sv_top`` (mean of the ``top`` largest σ) and ``test/jacobian_sv_tail_share``
    (the share of ‖J‖²_F beyond them); with ``spectrum`` > 0 also the mean of the i-th largest σ,
    ``test/jacobian_sv/<i>`` for i = 1..spectrum (the spectrum a figure plots)."""

    columns = ("jacobian_fro", "jacobian_sv_tail_share")

    @checked
    def __init__(self, n_points: Annotated[int, Bounds(ge=1)] = 200, top: Annotated[int, Bounds(ge=1)] = 3,
                 spectrum: Annotated[int, Bounds(ge=0)] = 0, chunk: Annotated[int, Bounds(ge=1)] = 50) -> None:
        self.n_points, self.top, self.spectrum, self.chunk = n_points, top, spectrum, chunk

    def applies(self, ctx: Context) -> bool:
        return capable(ctx.model, CanEncode)

    def singular_values(self, ctx: Context) -> Tensor | None:
        """(n, k) singular values at the fixed test points, on the CPU; None, with a warning, when the
        encoder cannot be differentiated by torch.func."""
        test = ctx.split("test").pick(self.n_points, ctx.seed)
        x, y, model = TensorDataModule.scale(test.x), ctx.labels(test), ctx.model
        out = []
        try:
            for idx in torch.arange(len(x)).split(self.chunk):
                yb = None if y is None else y[idx].to(ctx.device)
                out.append(jacobian_singular_values(encoder_jacobian(model.encode, x[idx].to(ctx.device), yb)).cpu())
        except RuntimeError as e:
            warnings.warn(f"EncoderJacobian: the encoder's Jacobian could not be computed ({e}); skipped.",
                          GenlabWarning,
                          stacklevel=2)
            return None
        return torch.cat(out)

    def compute(self, ctx: Context) -> dict[str, float]:
        sv = self.singular_values(ctx)
        if sv is None or not torch.isfinite(sv).all():
            return {}
        s = spectrum_summary(sv, self.top)
        out = {"test/jacobian_fro": s["fro"], "test/jacobian_sv_top": s["top"], "test/jacobian_sv_tail_share":
               s["tail_share"]}
        for i, value in enumerate(mean_spectrum(sv)[: self.spectrum].tolist(), start=1):
            out[f"test/jacobian_sv/{i}"] = value
        return out
