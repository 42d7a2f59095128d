"""genlab's RBM against scikit-learn's ``BernoulliRBM``: training speed and the AIS test log-likelihood.

    python scripts/rbm_vs_sklearn.py                                   # mnist10k when present, 100 hidden, 5 epochs
    python scripts/rbm_vs_sklearn.py --hidden 500 --epochs 3 --lr 0.05 --batch-size 100
    python scripts/rbm_vs_sklearn.py --data synthetic --hidden 20      # also prints the exact log Z (H <= 20)
    python scripts/rbm_vs_sklearn.py --ais-runs 100 --ais-betas 1000
    python scripts/rbm_vs_sklearn.py --threads 1                      # both libraries on one thread
    python scripts/rbm_vs_sklearn.py --repeats 5                      # best of 5 alternated trainings (default 3)
    python scripts/rbm_vs_sklearn.py --train-recon                    # genlab also logs train/recon (monitoring)
    python scripts/rbm_vs_sklearn.py --updates-per-batch 1            # one Lightning step per update
    python scripts/rbm_vs_sklearn.py --visible-chains                 # genlab's default PCD chain state

Both train a Bernoulli–Bernoulli RBM with the same hidden size, learning rate, batch size and number of
epochs, in this one process, on the same binary data: the images (mnist10k's 8000 training and 2000 test
images when present, else a synthetic digits-like set of the same shape) are binarised once, U < p with a
fixed seed, before either sees them, and genlab is given them with data binarisation off.

The settings match what ``BernoulliRBM`` does: persistent contrastive divergence with one Gibbs sweep
per update and as many persistent chains as the batch size (sklearn keeps batch-size hidden chains),
plain SGD without momentum or weight decay, the learning rate applied to the batch's *mean* gradient
(sklearn's update is lr / batch_size times the summed statistics). genlab therefore runs
``model=rbm model.persistent=true model.cd_k=1 model.n_chains=<batch size> model.weight_decay=0
model.optimizer.momentum=0 model.optimizer.lr=<lr> model.chain_state=hidden``: the chains keep hidden
states, sampled from the last update's p(h | v_model), as sklearn's do. genlab's loader hands over
``--updates-per-batch`` minibatches at once (``model.updates_per_batch``, default 10 here) and the model
updates on each in turn: the same sequence of minibatch updates, with Lightning's per-step cost spread
over 10 of them. Differences left: sklearn visits the batches in the same order every epoch and starts
its chains from all-zero hidden states; genlab shuffles the images every epoch and starts its chains from
the first batch's images.

genlab trains through its own config (hydra compose of conf/train.yaml), model (genlab.run.build),
datamodule (a TensorDataModule holding these tensors) and Lightning Trainer, without validation,
checkpoints or pictures; the CD gradient is written in closed form and the optimiser steps under Lightning's
manual optimisation (no closure or backward hooks). Beside the update
genlab computes what it logs: the free energies and the NaN
check; with ``--train-recon`` (model.train_recon=true) also train/recon, the reconstruction error of each
minibatch, one more product per update (a sixth of a 784-500 update), which sklearn does not compute.
Only training is timed: sklearn's ``fit`` and the sum of genlab's training epochs, each ``--repeats`` times in
alternation, the best time of each compared (the seed is fixed, so every repeat trains the same model). Both
models are then scored by genlab's AIS: sklearn's ``components_`` (H, D), ``intercept_visible_`` and
``intercept_hidden_`` are copied into a genlab RBM (W = components_.T), and the test log-likelihood is −(F(x) +
log Z) averaged over the test images, in nats per image.

On a CPU that other processes also load, torch's multi-threaded kernels slow down far more than
numpy's (docs/speed.md): give ``--threads 1`` there for a comparison of the two implementations rather
than of thread pools.
"""

from __future__ import annotations

import argparse
import math
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

ROOT = Path(__file__).resolve().parents[1]
# mnist10k beside the checkout, or where GENLAB_MNIST10K says (as scripts/benchmark.py)
MNIST10K = Path(os.environ.get("GENLAB_MNIST10K", ROOT.parent / "shared" / "data" / "mnist10k"))


# ---- data ---------------------------------------------------------------------------------
def load_data(kind: str, seed: int) -> tuple[str, Tensor, Tensor]:
    """(name, train (N, 1, 28, 28), test): binary float32, binarised once (U < p) with ``seed``."""
    if kind in ("auto", "mnist10k") and (MNIST10K / "MNIST" / "raw").is_dir():
        from torchvision.datasets import MNIST

        tr, te = MNIST(str(MNIST10K), train=True), MNIST(str(MNIST10K), train=False)
        name, train, test = "mnist10k", tr.data[:, None].float() / 255, te.data[:, None].float() / 255
    elif kind == "mnist10k":
        raise SystemExit(f"mnist10k not found at {MNIST10K}; use --data synthetic")
    else:
        g = torch.Generator().manual_seed(0)
        # synthetic digits-like data of the same shape: blurred random strokes in [0, 1]
        x = (torch.rand(10000, 1, 28, 28, generator=g) < 0.08).float()
        x = (F.avg_pool2d(F.pad(x, (2, 2, 2, 2)), 5, stride=1) * 3).clamp(0, 1)
        name, train, test = "synthetic", x[:8000], x[8000:]
    gen = torch.Generator().manual_seed(seed)
    train, test = ((torch.rand(x.shape, generator=gen) < x).float() for x in (train, test))
    return name, train, test


# ---- genlab -------------------------------------------------------------------------------
def genlab_config(args: argparse.Namespace) -> Any:
    """conf/train.yaml with model=rbm set to sklearn's algorithm (PCD-1, batch-size chains, plain SGD)."""
    from hydra import compose, initialize_config_dir

    from genlab.config import setup_hydra

    setup_hydra()
    overrides = [
        "model=rbm", f"seed={args.seed}", f"model.n_hidden={args.hidden}", "model.persistent=true", "model.cd_k=1",
        f"model.n_chains={args.batch_size}", "model.weight_decay=0", "model.optimizer.momentum=0",
        f"model.optimizer.lr={args.lr}", f"model.ais_runs={args.ais_runs}", f"model.ais_betas={args.ais_betas}",
        f"model.train_recon={args.train_recon}",
        f"model.chain_state={'visible' if args.visible_chains else 'hidden'}",
        f"model.updates_per_batch={args.updates_per_batch}",
    ]
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose("train", overrides=overrides)


def genlab_train(cfg: Any, train: Tensor, test: Tensor, args: argparse.Namespace) -> tuple[Any, float]:
    """Train genlab's RBM through its datamodule, model and Lightning Trainer; (model, seconds of training)."""
    import pytorch_lightning as pl

    from genlab.checkpoints import build_model
    from genlab.data.base import DataInfo, Split, Splits, TensorDataModule

    class InMemory(TensorDataModule):  # the script's (already binary) tensors, through genlab's datamodule
        info = property(lambda self: DataInfo("rbm_vs_sklearn", tuple(train.shape[1:])))

        def load(self) -> Splits:
            return Splits(train=Split(train), val=Split(test[:512]), test=Split(test))

    class Timer(pl.Callback):
        def __init__(self) -> None:
            self.seconds = 0.0

        def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
            self.start = time.perf_counter()

        def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
            self.seconds += time.perf_counter() - self.start

    pl.seed_everything(args.seed, verbose=False)
    # the loader hands over updates_per_batch minibatches at a time; the model updates on each in turn
    dm = InMemory(batch_size=args.batch_size * args.updates_per_batch, binarize=False, seed=args.seed)
    dm.setup("fit")
    model = build_model(cfg.model, dm.info)
    timer = Timer()
    trainer = pl.Trainer(
        accelerator="cpu", devices=1, max_epochs=args.epochs, limit_val_batches=0, num_sanity_val_steps=0,
        enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False, callbacks=[timer],
        logger=pl.loggers.CSVLogger(tempfile.mkdtemp(prefix="genlab-rbm-")), log_every_n_steps=50,
    )
    trainer.fit(model, datamodule=dm)
    return model, timer.seconds


# ---- scikit-learn -------------------------------------------------------------------------
def sklearn_train(train: Tensor, args: argparse.Namespace) -> tuple[Any, float]:
    """sklearn's BernoulliRBM (PCD-1, plain SGD) on the same binary images (float32); (model, seconds of fit)."""
    from sklearn.neural_network import BernoulliRBM

    rbm = BernoulliRBM(n_components=args.hidden, learning_rate=args.lr, batch_size=args.batch_size,
                       n_iter=args.epochs, random_state=args.seed, verbose=0)
    x = train.flatten(1).numpy().astype(np.float32)
    start = time.perf_counter()
    rbm.fit(x)
    return rbm, time.perf_counter() - start


def copy_sklearn(rbm: Any, cfg: Any, info_shape: tuple[int, ...]) -> Any:
    """A genlab RBM holding sklearn's parameters: W = components_.T (D, H), visible biases a =
    intercept_visible_, hidden biases b = intercept_hidden_."""
    from genlab.checkpoints import build_model
    from genlab.data.base import DataInfo

    model = build_model(cfg.model, DataInfo("rbm_vs_sklearn", info_shape))
    with torch.no_grad():
        model.W.copy_(torch.as_tensor(rbm.components_.T, dtype=torch.float32))
        model.visible_bias.copy_(torch.as_tensor(rbm.intercept_visible_, dtype=torch.float32))
        model.hidden_bias.copy_(torch.as_tensor(rbm.intercept_hidden_, dtype=torch.float32))
    return model


# ---- scoring ------------------------------------------------------------------------------
@torch.no_grad()
def score(model: Any, test: Tensor, args: argparse.Namespace) -> dict[str, float]:
    """genlab's AIS: log Z ± its standard error, the mean test log-likelihood −(F(x) + log Z) in nats per
    image, and with H <= 20 the exact log Z beside it."""
    from genlab.models.rbm import MAX_EXACT_HIDDEN

    model = model.eval().cpu()
    torch.manual_seed(args.seed + 1)
    log_z, se = model.ais_log_z(args.ais_runs, args.ais_betas)
    f = model.free_energy(test.flatten(1)).double().mean().item()
    out = {"log_z": log_z, "log_z_se": se, "ll": -(f + log_z)}
    if args.hidden <= MAX_EXACT_HIDDEN:
        exact = model.exact_log_z()
        out.update(exact_log_z=exact, exact_ll=-(f + exact))
    return out


def blas_threads() -> str:
    """The thread counts of the BLAS libraries numpy (and so sklearn) calls."""
    from threadpoolctl import threadpool_info

    return ",".join(str(i["num_threads"]) for i in threadpool_info() if i.get("user_api") == "blas") or "?"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--hidden", type=int, default=100)
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--lr", type=float, default=0.05, help="SGD learning rate on the batch's mean gradient")
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--ais-runs", type=int, default=100)
    p.add_argument("--ais-betas", type=int, default=1000)
    p.add_argument("--data", choices=["auto", "mnist10k", "synthetic"], default="auto")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--train-recon", action="store_true",
                   help="genlab also computes train/recon (a monitoring product sklearn does not compute)")
    p.add_argument("--updates-per-batch", type=int, default=10,
                   help="genlab's SGD updates per loader batch (model.updates_per_batch), each on a minibatch of "
                        "--batch-size")
    p.add_argument("--visible-chains", action="store_true",
                   help="genlab's PCD keeps the chains' visible states (model.chain_state=visible) instead of "
                        "sklearn's hidden states: one product more per update")
    p.add_argument("--repeats", type=int, default=3,
                   help="train both this many times, alternating, and compare the best times (the same seed, so "
                        "the same models)")
    p.add_argument("--threads", type=int, default=None,
                   help="threads of torch and of numpy's BLAS alike (default: each library's own)")
    args = p.parse_args()
    if args.threads is not None:  # the same for both: torch's intra-op pool and the BLAS sklearn calls
        from threadpoolctl import threadpool_limits

        torch.set_num_threads(args.threads)
        threadpool_limits(args.threads)

    name, train, test = load_data(args.data, args.seed)
    n = len(train)
    print(f"data {name}: {n} train / {len(test)} test binary images {tuple(train.shape[1:])}; "
          f"RBM {train[0].numel()}-{args.hidden}, PCD-1, {args.batch_size} chains, SGD lr {args.lr} (no momentum), "
          f"batch {args.batch_size} (genlab: {args.updates_per_batch} per loader batch), {args.epochs} epochs; "
          f"AIS {args.ais_runs} runs x {args.ais_betas} temperatures; "
          f"torch threads {torch.get_num_threads()}, BLAS threads {blas_threads()}")
    cfg = genlab_config(args)
    sk_times, gl_times = [], []
    for _ in range(args.repeats):  # alternated, so that both see the machine's slow and fast spells alike
        sk, sk_s = sklearn_train(train, args)
        gl, gl_s = genlab_train(cfg, train, test, args)
        sk_times.append(sk_s)
        gl_times.append(gl_s)
    sk_s, gl_s = min(sk_times), min(gl_times)  # best of the repeats: the least disturbed run of each
    if args.repeats > 1:
        print("training seconds, run by run: sklearn " + " ".join(f"{t:.2f}" for t in sk_times)
              + "; genlab " + " ".join(f"{t:.2f}" for t in gl_times)
              + "; ratios " + " ".join(f"{a / b:.2f}" for a, b in zip(sk_times, gl_times)))
    results = {"sklearn BernoulliRBM": (sk_s, score(copy_sklearn(sk, cfg, tuple(train.shape[1:])), test, args)),
               "genlab RBM": (gl_s, score(gl, test, args))}

    exact = args.hidden <= 20
    header = f"{'':22s} {'train s':>8s} {'samples/s':>10s} {'log Z (AIS)':>18s} {'test LL (AIS)':>14s}"
    print("\n" + header + (f" {'exact log Z':>12s} {'test LL exact':>14s}" if exact else ""))
    for label, (secs, r) in results.items():
        row = (f"{label:22s} {secs:8.2f} {n * args.epochs / secs:10.0f} "
               f"{r['log_z']:11.3f} ± {r['log_z_se']:.3f} {r['ll']:14.2f}")
        if exact:
            row += f" {r['exact_log_z']:12.3f} {r['exact_ll']:14.2f}"
        print(row)
    (sk_s, sk_r), (gl_s, gl_r) = results.values()
    print(f"\ngenlab / sklearn: speed x{sk_s / gl_s:.2f}, test LL difference {gl_r['ll'] - sk_r['ll']:+.2f} nats "
          f"(positive: genlab better); test LL is nats per image (higher is better)")
    if not all(math.isfinite(r["ll"]) for _, r in results.values()):
        print("warning: a non-finite log-likelihood (a diverged model or AIS)")


if __name__ == "__main__":
    main()
