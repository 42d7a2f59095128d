"""Sample-quality metrics for every model that samples, as pure functions of tensors.

- FID and KID (through torchmetrics) between feature sets of real and generated samples;
- unbiased MMD² with a Gaussian kernel whose bandwidth is the median pairwise distance;
- k-NN precision and recall (Kynkäänniemi et al. 2019);
- mode coverage of 2-D Gaussian mixtures (ring8, grid25).

Features come from the dataset classifier (``genlab.metrics.classifier``) by default; Inception v3
is available from a local weights file (``InceptionFeatures``) and is never downloaded.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import torch
from torch import Tensor, nn

from genlab.errors import UserError

INCEPTION_FILE = "weights-inception-2015-12-05-6726825d.pth"  # torch-fidelity's port of the TF FID network
INCEPTION_URL = f"https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/{INCEPTION_FILE}"
CHUNK = 1024  # rows of one pairwise-distance block: 1024 x 10000 float64 = 80 MB


# ---- FID and KID -----------------------------------------------------------------------
class _Precomputed(nn.Module):
    """The 'feature network' handed to torchmetrics: the features are computed beforehand (once for
    all the metrics), so it passes its input through; ``num_features`` sizes torchmetrics' state."""

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.num_features = num_features

    def forward(self, f: Tensor) -> Tensor:
        return f


def fid_kid(real: Tensor, fake: Tensor, kid_subsets: int = 10, kid_subset_size: int = 1000,
            seed: int = 0) -> tuple[float, float, float]:
    """real (N, D) and fake (M, D) features -> (FID, KID mean, KID std over subsets).

    FID = ‖μ_r − μ_f‖² + Tr(Σ_r + Σ_f − 2(Σ_r Σ_f)^½) between Gaussians fitted to the two sets.
    KID = the unbiased MMD² with the kernel (aᵀb / D + 1)³, averaged over ``kid_subsets`` pairs of
    random subsets of min(kid_subset_size, N, M) samples, drawn under ``seed``. Both in float64.
    Ten subsets by default, not torchmetrics' 100: each costs three 1000x1000 kernel matrices.
    """
    from torchmetrics.image.fid import FrechetInceptionDistance
    from torchmetrics.image.kid import KernelInceptionDistance

    real, fake = real.detach().double().cpu(), fake.detach().double().cpu()
    d = real.shape[1]
    # sync_on_compute=False: the features are already all of them (rank 0 evaluates alone under DDP), and
    # torchmetrics' default gather across processes would wait forever for ranks that do not evaluate
    fid = FrechetInceptionDistance(feature=_Precomputed(d), sync_on_compute=False)
    with warnings.catch_warnings():  # "KID keeps all features in memory": it is given features, not images
        warnings.simplefilter("ignore", UserWarning)
        kid = KernelInceptionDistance(feature=_Precomputed(d), subsets=kid_subsets,
                                      subset_size=min(kid_subset_size, len(real), len(fake)), sync_on_compute=False)
    for metric in (fid, kid):
        metric.update(real, real=True)
        metric.update(fake, real=False)
    with torch.random.fork_rng(devices=[]):  # KID's subsets come from the global stream: fix them
        torch.manual_seed(seed)
        kid_mean, kid_std = kid.compute()
    return fid.compute().item(), kid_mean.item(), kid_std.item()


# ---- MMD² --------------------------------------------------------------------------------
def median_bandwidth(x: Tensor, y: Tensor, max_points: int = 2000, seed: int = 0) -> float:
    """Median Euclidean distance over the distinct pairs of the pooled sample x (N, D) ∪ y (M, D).

    Above ``max_points`` pooled points, over a fixed random subset of them: the median of
    ~2·10⁶ distances is as good as that of 2·10⁸, at a hundredth of the cost.
    """
    n = len(x) + len(y)
    idx = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:max_points] if n > max_points else None
    z = torch.cat([x, y]) if idx is None else torch.cat([x[idx[idx < len(x)]], y[idx[idx >= len(x)] - len(x)]])
    return torch.quantile(torch.pdist(z.double()), 0.5).item()  # the mean of the middle two for an even count


def _kernel_sum(a: Tensor, b: Tensor, gamma: float, same: bool) -> float:
    """Σ_ij exp(−γ‖a_i − b_j‖²) for a (N, D), b (M, D), in blocks of CHUNK rows; ``same`` (a is b):
    the i = j terms are left out."""
    total = 0.0
    for i in range(0, len(a), CHUNK):
        k = torch.exp(-gamma * torch.cdist(a[i : i + CHUNK], b).square())  # (c, M)
        if same:
            r = torch.arange(k.shape[0])
            k[r, r + i] = 0.0
        total += k.sum().item()
    return total


def mmd2_unbiased(x: Tensor, y: Tensor, bandwidth: float | None = None) -> float:
    """Unbiased MMD² between samples x (N, D) and y (M, D) with k(a, b) = exp(−‖a − b‖² / 2h²):

        1/(N(N−1)) Σ_{i≠j} k(x_i, x_j) + 1/(M(M−1)) Σ_{i≠j} k(y_i, y_j) − 2/(NM) Σ_ij k(x_i, y_j)

    h = ``bandwidth``, by default the median pairwise distance of the pooled sample. Unbiased, so
    it scatters around 0 (slightly negative too) for two samples of one distribution. Computed
    in float64 blocks: N = M = 10000 needs a few hundred MB at most.
    """
    x, y = x.flatten(1).double(), y.flatten(1).double()
    n, m = len(x), len(y)
    h = median_bandwidth(x, y) if bandwidth is None else bandwidth
    gamma = 1.0 / (2.0 * h * h)
    kxx = _kernel_sum(x, x, gamma, same=True) / (n * (n - 1))
    kyy = _kernel_sum(y, y, gamma, same=True) / (m * (m - 1))
    kxy = _kernel_sum(x, y, gamma, same=False) / (n * m)
    return kxx + kyy - 2.0 * kxy


# ---- precision and recall ----------------------------------------------------------------
def _knn_radii(x: Tensor, k: int) -> Tensor:
    """(N,) distance from each x_i (N, D) to its k-th nearest neighbour among the others."""
    radii = []
    for i in range(0, len(x), CHUNK):
        d = torch.cdist(x[i : i + CHUNK], x)  # (c, N); column of the point itself holds 0
        radii.append(d.topk(k + 1, dim=1, largest=False).values[:, k])
    return torch.cat(radii)


def _in_manifold(query: Tensor, ref: Tensor, radii: Tensor) -> Tensor:
    """(Q,) bool: query_q (Q, D) lies in the ball of radius radii_i (R,) around some ref_i (R, D)."""
    inside = [(torch.cdist(query[i : i + CHUNK], ref) <= radii).any(1) for i in range(0, len(query), CHUNK)]
    return torch.cat(inside)


def precision_recall(real: Tensor, fake: Tensor, k: int = 3) -> tuple[float, float]:
    """k-NN precision and recall (Kynkäänniemi et al. 2019) of fake (M, D) against real (N, D).

    Each set's manifold is the union of balls around its points reaching their k-th nearest
    neighbour. Precision: the share of fake samples inside the real manifold (quality); recall:
    the share of real samples inside the fake manifold (coverage). Both sets need more than k points.
    """
    real, fake = real.flatten(1).double(), fake.flatten(1).double()
    precision = _in_manifold(fake, real, _knn_radii(real, k)).double().mean().item()
    recall = _in_manifold(real, fake, _knn_radii(fake, k)).double().mean().item()
    return precision, recall


def feature_metrics(real: Tensor, fake: Tensor, k: int = 3, kid_subsets: int = 10, seed: int = 0) -> dict[str, float]:
    """FID, KID (mean and std), MMD², precision and recall of fake (M, D) against real (N, D) features.

    KID's subsets hold at most half of the smaller set, so that they differ and its std says something.
    """
    half = max(2, min(len(real), len(fake)) // 2)
    fid, kid, kid_std = fid_kid(real, fake, kid_subsets, kid_subset_size=min(1000, half), seed=seed)
    precision, recall = precision_recall(real, fake, k)
    return {"fid": fid, "kid": kid, "kid_std": kid_std, "mmd2": mmd2_unbiased(real, fake),
            "precision": precision, "recall": recall}


# ---- mode coverage -------------------------------------------------------------------------
def mode_coverage(samples: Tensor, modes: Tensor, sigma: float, min_share: float = 0.2) -> tuple[int, float]:
    """samples (N, 2) of a mixture of K isotropic Gaussians (std ``sigma``) centred on modes (K, 2)
    -> (modes covered, share of high-quality samples).

    A sample is high quality within 3σ of its nearest mode. A mode is covered when at least
    max(1, ⌈min_share · N / K⌉) high-quality samples are nearest to it, i.e. a fifth of its share
    under equal weights by default (as PacGAN's grid experiment: 20 of 2,500 samples for 25 modes),
    so that a few stray samples do not count as coverage; ``min_share=0``: one sample suffices.
    """
    dist, nearest = torch.cdist(samples.double(), modes.double()).min(1)  # (N,), (N,)
    good = dist <= 3.0 * sigma
    counts = torch.bincount(nearest[good], minlength=len(modes))  # (K,) high-quality samples per mode
    need = max(1, math.ceil(min_share * len(samples) / len(modes)))
    return int((counts >= need).sum()), good.double().mean().item()


# ---- Inception v3 ----------------------------------------------------------------------------
def inception_weights(path: str | Path | None = None) -> Path:
    """The local Inception weights file: ``path``, by default where torch-fidelity keeps it
    (``<torch hub dir>/checkpoints``); UserError naming the file and the folder when it is missing."""
    p = Path(path) if path else Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_FILE
    if not p.is_file():
        raise UserError(
            f"feature_network=inception needs the Inception v3 weights file {p.name}, which is not in {p.parent}. "
            f"genlab never downloads it: fetch {INCEPTION_URL} yourself and set "
            "the sample_quality metric's inception_weights=<path to the file>, or use feature_network=classifier."
        )
    return p


class InceptionFeatures(nn.Module):
    """Inception v3's 2048 pool features (the FID network): images (B, C, H, W) in [0, 1] with 1 or
    3 channels -> (B, 2048). Needs torch-fidelity (``pip install "genlab[inception]"``)."""

    def __init__(self, weights: str | Path | None = None) -> None:
        super().__init__()
        from torchmetrics.image.fid import NoTrainInceptionV3

        path = inception_weights(weights)
        try:
            self.net = NoTrainInceptionV3("inception-v3-compat", ["2048"], feature_extractor_weights_path=str(path))
        except ModuleNotFoundError as e:
            raise UserError('feature_network=inception needs torch-fidelity: pip install "genlab[inception]".') from e

    def forward(self, x: Tensor) -> Tensor:
        x = (x.clamp(0, 1) * 255).round().to(torch.uint8)  # its input: uint8, resized to 299x299 inside
        if x.shape[1] == 1:  # greyscale as RGB
            x = x.expand(-1, 3, -1, -1)
        return self.net(x).flatten(1)
