"""The classifier two-sample test (Lopez-Paz & Oquab 2017): the lectures' third way of comparing a model's
pdf with the data's, after a likelihood (KL) and the MMD. A fresh classifier learns to tell model samples
from real training images; its accuracy on held-out samples and real test images says how far apart the
two distributions are where a small network can see it: 0.5 means it cannot tell them apart, 1.0 that
every sample gives itself away. Under the null hypothesis (one distribution) the number of right answers
on N held-out points is Binomial(N, 1/2), which gives the test's p-value.

A pure function of tensors, as ``sample_quality``; the Evaluator's metric is ``sampling.TwoSampleTest``.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from scipy.stats import binom
from torch import Tensor, nn


class TwoSampleResult(NamedTuple):
    accuracy: float  # balanced: the mean of the accuracies on the two held-out sets
    p_value: float  # one-sided, P(Binomial(N, 1/2) >= right answers) on the N held-out points
    n_test: int


def critic(shape: tuple[int, ...], width: int = 32) -> nn.Module:
    """A small classifier of one sample -> a logit: a two-layer CNN for images (C, H, W), an MLP for
    vectors (D,). Small on purpose: it should see what a discriminator of the same budget sees, not
    memorise the training samples."""
    if len(shape) == 3:
        c = shape[0]
        return nn.Sequential(  # (B, C, H, W) -> (B, 2w, H/4, W/4) -> (B, 2w, 4, 4) -> (B, 1)
            nn.Conv2d(c, width, 3, stride=2, padding=1), nn.LeakyReLU(0.2),
            nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), nn.LeakyReLU(0.2),
            nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(2 * width * 16, 1))
    d = int(torch.tensor(shape).prod())
    return nn.Sequential(nn.Flatten(), nn.Linear(d, 4 * width), nn.LeakyReLU(0.2),
                         nn.Linear(4 * width, 4 * width), nn.LeakyReLU(0.2), nn.Linear(4 * width, 1))


@torch.inference_mode(False)  # callable from a test loop, which runs under inference mode
@torch.enable_grad()
def c2st(real_train: Tensor, fake_train: Tensor, real_test: Tensor, fake_test: Tensor, epochs: int = 20,
         batch_size: int = 128, lr: float = 1e-3, seed: int = 0,
         device: torch.device | str = "cpu") -> TwoSampleResult:
    """Train ``critic`` to tell fake_train (label 1) from real_train (label 0), each (N, *shape), for
    ``epochs`` passes of Adam under ``seed``; score it on real_test and fake_test (M, *shape).

    Inputs are standardised by the training set's mean and std (one scalar pair for images, one per
    feature for vectors), so points of any scale train alike. Deterministic for a seed on one device.
    """
    if min(len(real_train), len(fake_train), len(real_test), len(fake_test)) < 1:
        raise ValueError("c2st needs at least one sample in each of the four sets")
    x = torch.cat([real_train, fake_train]).detach().float()  # samples of a sampler that used gradients: no graph
    y = torch.cat([torch.zeros(len(real_train)), torch.ones(len(fake_train))])
    image = x.dim() == 4
    mean = x.mean() if image else x.flatten(1).mean(0)
    std = (x.std() if image else x.flatten(1).std(0)).clamp_min(1e-6)
    prep = lambda t: ((t.detach().float() if image else t.detach().float().flatten(1)) - mean) / std  # noqa: E731
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = critic(tuple(x.shape[1:])).to(device)
        order = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    loss_fn = nn.BCEWithLogitsLoss()
    xs, ys = prep(x), y
    net.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(xs), generator=order).split(batch_size):
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(net(xs[idx].to(device)).squeeze(1), ys[idx].to(device))
            loss.backward()
            opt.step()
    net.eval()
    with torch.no_grad():
        said = [torch.cat([net(prep(b).to(device)).squeeze(1).cpu() > 0 for b in part.split(1024)])
                for part in (real_test, fake_test)]
    right_real, right_fake = int((~said[0]).sum()), int(said[1].sum())
    accuracy = 0.5 * (right_real / len(real_test) + right_fake / len(fake_test))
    n = len(real_test) + len(fake_test)
    p = float(binom.sf(right_real + right_fake - 1, n, 0.5))
    return TwoSampleResult(accuracy, p, n)
