"""Speed and quality of genlab against a hand-written PyTorch loop of the same network.

    python scripts/benchmark.py vae --epochs 10 --repeats 3           # mnist10k when present
    python scripts/benchmark.py vae --data synthetic --epochs 2
    python scripts/benchmark.py vae --precision 32-true bf16-mixed --device cuda

Both sides train the same network on the same in-memory tensors, in this one process, with
the same batch size, optimiser and dynamic binarisation. genlab runs through its own config,
model, datamodule and Lightning Trainer (logging to TensorBoard as a user's run does; no
validation or picture callbacks, which the hand loop does not have either). Printed: samples/s
of each, the ratio, and the test negative ELBO of each.
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

ROOT = Path(__file__).resolve().parents[1]
MNIST10K = ROOT.parent / "shared" / "data" / "mnist10k"


# ---- data ---------------------------------------------------------------------------------
def load_data(kind: str) -> tuple[str, Tensor, Tensor]:
    """(name, train (N, 1, 28, 28) float in [0, 1], test) — mnist10k when present, else synthetic."""
    if kind in ("auto", "mnist10k") and (MNIST10K / "MNIST" / "raw").is_dir():
        from torchvision.datasets import MNIST

        tr, te = MNIST(str(MNIST10K), train=True), MNIST(str(MNIST10K), train=False)
        return "mnist10k", tr.data[:, None].float() / 255, te.data[:, None].float() / 255
    if kind == "mnist10k":
        raise SystemExit(f"mnist10k not found at {MNIST10K}; use --data synthetic")
    g = torch.Generator().manual_seed(0)
    # synthetic digits-like data of the same shape: blurred random strokes in [0, 1]
    x = (torch.rand(10000, 1, 28, 28, generator=g) < 0.08).float()
    x = F.avg_pool2d(F.pad(x, (2, 2, 2, 2)), 5, stride=1).clamp(0, 1) * 3
    return "synthetic", x[:8000].clamp(0, 1), x[8000:].clamp(0, 1)


# ---- the hand-written loop ----------------------------------------------------------------
class HandVAE(nn.Module):
    """784-512-256-z20 MLP VAE, Bernoulli likelihood: the same layers as conf/model/vae.yaml."""

    def __init__(self, d: int = 784, hidden: tuple[int, ...] = (512, 256), z: int = 20) -> None:
        super().__init__()
        sizes = [d, *hidden]
        enc: list[nn.Module] = []
        for a, b in zip(sizes[:-1], sizes[1:]):
            enc += [nn.Linear(a, b), nn.ReLU()]
        self.enc = nn.Sequential(*enc, nn.Linear(sizes[-1], 2 * z))
        dec_sizes = [z, *reversed(hidden)]
        dec: list[nn.Module] = []
        for a, b in zip(dec_sizes[:-1], dec_sizes[1:]):
            dec += [nn.Linear(a, b), nn.ReLU()]
        self.dec = nn.Sequential(*dec, nn.Linear(dec_sizes[-1], d))

    def neg_elbo(self, x: Tensor) -> Tensor:  # x (B, 784) binary -> (B,)
        mu, logvar = self.enc(x).float().chunk(2, dim=1)
        h = mu + torch.randn_like(mu) * (0.5 * logvar).exp()
        logits = self.dec(h).float()
        rec = F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(1)
        kl = 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).sum(1)
        return rec + kl


def hand_train(train: Tensor, epochs: int, precision: str, device: str, seed: int) -> tuple[HandVAE, float]:
    torch.manual_seed(seed)
    model = HandVAE().to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x_all = train.flatten(1).to(device)
    n, bs = x_all.shape[0], 128
    autocast = precision == "bf16-mixed"
    _sync(device)
    start = time.perf_counter()
    for _ in range(epochs):
        perm = torch.randperm(n, device=device)
        for i in range(0, n, bs):
            x = torch.bernoulli(x_all[perm[i : i + bs]])  # dynamic binarisation
            with torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=autocast):
                loss = model.neg_elbo(x).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    _sync(device)
    return model, time.perf_counter() - start


@torch.no_grad()
def hand_test_nelbo(model: HandVAE, test_bin: Tensor, device: str) -> float:
    torch.manual_seed(123)
    return model.eval().neg_elbo(test_bin.flatten(1).to(device)).mean().item()


# ---- genlab -------------------------------------------------------------------------------
def genlab_train(train: Tensor, epochs: int, precision: str, device: str, seed: int) -> tuple[object, float]:
    """Train conf/model/vae.yaml through genlab's datamodule, model and Lightning Trainer."""
    import pytorch_lightning as pl
    from hydra import compose, initialize_config_dir

    from genlab.config import setup_hydra
    from genlab.data.base import Split, Splits, TensorDataModule
    from genlab.run import build

    class InMemory(TensorDataModule):  # the benchmark's tensors, through genlab's datamodule
        info = property(lambda self: _mnist_info())

        def load(self) -> Splits:
            return Splits(train=Split(train), test=Split(train[:512]), val=Split(train[:512]))

    setup_hydra()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=["model=vae", f"seed={seed}"])
    pl.seed_everything(seed, verbose=False)
    dm = InMemory(batch_size=128, binarize=True, seed=seed)
    dm.setup("fit")
    model = build(cfg.model, data_info=dm.info)
    out = tempfile.mkdtemp(prefix="genlab-bench-")
    trainer = pl.Trainer(
        accelerator="gpu" if device == "cuda" else "cpu", devices=1, precision=precision, max_epochs=epochs,
        limit_val_batches=0, num_sanity_val_steps=0, enable_progress_bar=False, enable_model_summary=False,
        enable_checkpointing=False, logger=pl.loggers.TensorBoardLogger(out, name="bench"), log_every_n_steps=50,
    )
    _sync(device)
    start = time.perf_counter()
    trainer.fit(model, datamodule=dm)
    _sync(device)
    return model, time.perf_counter() - start


def _mnist_info():
    from genlab.data.base import DataInfo

    return DataInfo("benchmark", (1, 28, 28), num_classes=None)


@torch.no_grad()
def genlab_test_nelbo(model, test_bin: Tensor, device: str) -> float:
    torch.manual_seed(123)
    return model.eval().to(device).neg_elbo(test_bin.to(device)).mean().item()


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


# ---- main ---------------------------------------------------------------------------------
def bench_vae(args: argparse.Namespace) -> None:
    name, train, test = load_data(args.data)
    test_bin = torch.bernoulli(test, generator=torch.Generator().manual_seed(0))
    n = train.shape[0] * args.epochs
    print(f"VAE 784-512-256-z20, batch 128, Adam 1e-3, {args.epochs} epochs on {name} "
          f"({train.shape[0]} train / {test.shape[0]} test), device {args.device}, {torch.get_num_threads()} threads")
    # a short warm-up of both paths, so one-off costs (allocations, kernels) are not timed
    hand_train(train[:1024], 1, "32-true", args.device, args.seed)
    genlab_train(train[:1024], 1, "32-true", args.device, args.seed)
    rows = []
    hand_fp32_rate = math.nan
    for prec in args.precision:
        # alternate the two paths and keep the best of each: other processes on a shared
        # machine slow down single runs, never speed them up
        best_h, best_g = math.inf, math.inf
        for _ in range(args.repeats):
            hm, ht = hand_train(train, args.epochs, prec, args.device, args.seed)
            gm, gt = genlab_train(train, args.epochs, prec, args.device, args.seed)
            best_h, best_g = min(best_h, ht), min(best_g, gt)
        hr, gr = n / best_h, n / best_g
        if prec.startswith("32"):
            hand_fp32_rate = hr
        hn, gn = hand_test_nelbo(hm, test_bin, args.device), genlab_test_nelbo(gm, test_bin, args.device)
        rows.append((prec, hr, gr, hn, gn))
    print(f"{'precision':<12}{'hand samples/s':>16}{'genlab samples/s':>18}{'genlab/hand':>13}"
          f"{'genlab/hand fp32':>18}{'hand -ELBO':>12}{'genlab -ELBO':>14}")
    for prec, hr, gr, hn, gn in rows:
        print(f"{prec:<12}{hr:>16.0f}{gr:>18.0f}{gr / hr:>13.3f}{gr / hand_fp32_rate:>18.3f}{hn:>12.2f}{gn:>14.2f}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", choices=["vae"])
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--data", choices=["auto", "mnist10k", "synthetic"], default="auto")
    p.add_argument("--precision", nargs="+", default=["32-true", "bf16-mixed"])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--repeats", type=int, default=3, help="timed runs of each path; the best is reported")
    args = p.parse_args()
    {"vae": bench_vae}[args.model](args)


if __name__ == "__main__":
    main()
