"""Speed and quality of genlab against a hand-written PyTorch loop of the same network.

    python scripts/benchmark.py vae --epochs 10 --repeats 3           # mnist10k when present
    python scripts/benchmark.py vae --data synthetic --epochs 2
    python scripts/benchmark.py vae --precision 32-true bf16-mixed --device cuda
    python scripts/benchmark.py dcgan --epochs 2 --repeats 3 --precision 32-true
    python scripts/benchmark.py vae --compile                         # adds the torch.compile'd loops
    python scripts/benchmark.py vae --updates 16                      # genlab, 16 updates per loader batch
    python scripts/benchmark.py scaling                               # epoch time at 1x, 4x, 16x the data
    python scripts/benchmark.py ddp                                   # 1 process vs 2 (gloo), same global batch

Both sides train the same network on the same in-memory tensors, in this one process, with
the same batch size and optimiser(s). genlab runs through its own config, model, datamodule
and Lightning Trainer (logging to TensorBoard as a user's run does; no validation or picture
callbacks, which the hand loops do not have either). Printed: samples/s of each and the ratio;
for vae (784-512-256-z20, dynamic binarisation) the test negative ELBO of each, for dcgan
(two players, one D step then one G step per batch) the ms per step and the last losses.

Samples/s are measured after the first epoch of every loop (the steady state: torch.compile
compiles during the first steps). genlab binarises with U < p, the hand loop with torch.bernoulli
(a user's natural choice, and slower: docs/speed.md): part of what genlab gains.
"""

from __future__ import annotations

import argparse
import math
import os
import tempfile
import time
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

ROOT = Path(__file__).resolve().parents[1]
# mnist10k beside the checkout, or where GENLAB_MNIST10K says (scripts/gpu_checks.sh carries a copy to a GPU machine)
MNIST10K = Path(os.environ.get("GENLAB_MNIST10K", ROOT.parent / "shared" / "data" / "mnist10k"))


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


def hand_train(
    train: Tensor, epochs: int, precision: str, device: str, seed: int, fused: bool = False, compiled: bool = False,
) -> tuple[HandVAE, float]:
    """fused: Adam's fused kernel (genlab's default) rather than torch's default per-tensor loop;
    compiled: the loss (network and ELBO) through torch.compile. Seconds of epochs 2..epochs."""
    torch.manual_seed(seed)
    model = HandVAE().to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, **({"fused": True} if fused else {}))
    x_all = train.flatten(1).to(device)
    n, bs = x_all.shape[0], 128
    autocast = precision == "bf16-mixed"

    def loss_of(x: Tensor) -> Tensor:
        with torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=autocast):
            return model.neg_elbo(x).mean()

    loss_fn = torch.compile(loss_of) if compiled else loss_of
    start = 0.0
    for epoch in range(epochs):
        if epoch == min(1, epochs - 1):
            _sync(device)
            start = time.perf_counter()
        perm = torch.randperm(n, device=device)
        for i in range(0, n, bs):
            x = torch.bernoulli(x_all[perm[i : i + bs]])  # dynamic binarisation
            loss = loss_fn(x)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    _sync(device)
    return model, time.perf_counter() - start


@torch.no_grad()
def hand_test_nelbo(model: HandVAE, test_bin: Tensor, device: str) -> float:
    torch.manual_seed(123)
    return model.eval().neg_elbo(test_bin.flatten(1).to(device)).mean().item()


# ---- the hand-written DCGAN loop ----------------------------------------------------------
def hand_dcgan_nets(z: int = 100, width: int = 64) -> tuple[nn.Module, nn.Module]:
    """G and D for 28x28 images as conf/model/dcgan.yaml builds them (width 64), written out:
    G: z -> 2w x 7 x 7 -> BN, LReLU -> ConvT 14x14 w -> BN, LReLU -> ConvT 28x28 1 (then tanh);
    D: Conv 14x14 w -> LReLU -> Conv 7x7 2w -> BN, LReLU -> flatten -> Linear 1 (a logit)."""
    w2 = 2 * width
    g = nn.Sequential(
        nn.Linear(z, w2 * 7 * 7), nn.Unflatten(1, (w2, 7, 7)), nn.BatchNorm2d(w2), nn.LeakyReLU(0.2),
        nn.ConvTranspose2d(w2, width, 4, 2, 1), nn.BatchNorm2d(width), nn.LeakyReLU(0.2),
        nn.ConvTranspose2d(width, 1, 4, 2, 1), nn.Tanh(),
    )
    d = nn.Sequential(
        nn.Conv2d(1, width, 4, 2, 1), nn.LeakyReLU(0.2),
        nn.Conv2d(width, w2, 4, 2, 1), nn.BatchNorm2d(w2), nn.LeakyReLU(0.2),
        nn.Flatten(), nn.Linear(w2 * 7 * 7, 1),
    )
    return g, d


def hand_dcgan_train(
    train: Tensor, epochs: int, precision: str, device: str, seed: int, fused: bool = False
) -> tuple[dict, float]:
    """Batch 64, Adam 2e-4 (0.5, 0.999) for both, non-saturating loss, one D step then one G step
    per batch, real and fake through D in separate batches (as genlab does)."""
    torch.manual_seed(seed)
    g, d = (m.to(device) for m in hand_dcgan_nets())
    extra = {"fused": True} if fused else {}
    opt_g = torch.optim.Adam(g.parameters(), lr=2e-4, betas=(0.5, 0.999), **extra)
    opt_d = torch.optim.Adam(d.parameters(), lr=2e-4, betas=(0.5, 0.999), **extra)
    x_all = (2 * train - 1).to(device)  # the players' space: [-1, 1]
    n, bs = x_all.shape[0], 64
    autocast = precision == "bf16-mixed"
    last = {"d_loss": 0.0, "g_loss": 0.0}
    start = 0.0
    for epoch in range(epochs):
        if epoch == min(1, epochs - 1):
            _sync(device)
            start = time.perf_counter()
        perm = torch.randperm(n, device=device)
        for i in range(0, n, bs):
            x = x_all[perm[i : i + bs]]
            with torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=autocast):
                with torch.no_grad():
                    fake = g(torch.randn(len(x), 100, device=device))
                d_loss = F.softplus(-d(x).float()).mean() + F.softplus(d(fake).float()).mean()
            opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            opt_d.step()
            d.requires_grad_(False)  # G's step: no gradient for D's weights
            with torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=autocast):
                g_loss = F.softplus(-d(g(torch.randn(len(x), 100, device=device))).float()).mean()
            opt_g.zero_grad(set_to_none=True)
            g_loss.backward()
            opt_g.step()
            d.requires_grad_(True)
        last = {"d_loss": d_loss.item(), "g_loss": g_loss.item()}
    _sync(device)
    return last, time.perf_counter() - start


# ---- genlab -------------------------------------------------------------------------------
class EpochTimer:
    """Seconds of each training epoch (a Lightning callback, made when Lightning is imported)."""

    def __new__(cls, device: str):  # noqa: ANN204
        import pytorch_lightning as pl

        class Timer(pl.Callback):
            def __init__(self) -> None:
                self.seconds: list[float] = []

            def on_train_epoch_start(self, trainer, pl_module) -> None:  # noqa: ANN001
                _sync(device)
                self.start = time.perf_counter()

            def on_train_epoch_end(self, trainer, pl_module) -> None:  # noqa: ANN001
                _sync(device)
                self.seconds.append(time.perf_counter() - self.start)

        return Timer()


def genlab_fit(
    model_name: str, train: Tensor, epochs: int, precision: str, device: str, seed: int,
    batch_size: int, binarize: bool, compile: bool = False, strategy: str = "auto", devices: int = 1,
    updates: int = 1,
) -> tuple[object, float]:
    """Train conf/model/<model_name>.yaml through genlab's datamodule, model and Lightning Trainer.
    ``updates``: model.updates_per_batch, with loader batches of updates x batch_size (the same minibatches
    in the same order). Returns the model and the seconds of epochs 2..epochs (all of it for one epoch)."""
    import pytorch_lightning as pl
    from hydra import compose, initialize_config_dir

    from genlab.checkpoints import build_model
    from genlab.config import setup_hydra
    from genlab.data.base import Split, Splits, TensorDataModule

    class InMemory(TensorDataModule):  # the benchmark's tensors, through genlab's datamodule
        info = property(lambda self: _mnist_info())

        def load(self) -> Splits:
            return Splits(train=Split(train), test=Split(train[:512]), val=Split(train[:512]))

    setup_hydra()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        overrides = [f"model={model_name}", f"seed={seed}", f"model.compile={compile}"]
        if updates > 1:
            overrides.append(f"model.updates_per_batch={updates}")
        cfg = compose("train", overrides=overrides)
    pl.seed_everything(seed, verbose=False)
    dm = InMemory(batch_size=batch_size * updates, binarize=binarize, seed=seed)
    dm.setup("fit")
    model = build_model(cfg.model, dm.info)
    out = tempfile.mkdtemp(prefix="genlab-bench-")
    timer = EpochTimer(device)
    trainer = pl.Trainer(
        accelerator="gpu" if device == "cuda" else "cpu", devices=devices, strategy=strategy, precision=precision,
        max_epochs=epochs, limit_val_batches=0, num_sanity_val_steps=0, enable_progress_bar=False,
        enable_model_summary=False, enable_checkpointing=False, use_distributed_sampler=False, callbacks=[timer],
        logger=pl.loggers.TensorBoardLogger(out, name="bench"), log_every_n_steps=50,
    )
    trainer.fit(model, datamodule=dm)
    return model, sum(timer.seconds[1:] or timer.seconds)


def genlab_train(train: Tensor, epochs: int, precision: str, device: str, seed: int,
                 compile: bool = False, updates: int = 1) -> tuple[object, float]:
    """The VAE of conf/model/vae.yaml, batch 128, dynamic binarisation; ``updates`` per loader batch."""
    return genlab_fit("vae", train, epochs, precision, device, seed, batch_size=128, binarize=True, compile=compile,
                      updates=updates)


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
# Three loops per precision: the hand loop with torch's default Adam (what a hand-written loop
# gets), the hand loop with Adam(fused=True) (what genlab's models build by default; see
# genlab.models.plumbing.make_optimizer), and genlab; with --compile also the hand loop with its loss
# torch.compile'd and genlab with model.compile=true; with --updates K > 1 also genlab with
# model.updates_per_batch=K (loader batches of K x 128 cut into the same minibatches of 128, so
# Lightning's per-step cost is paid once per K updates). Their runs alternate and the best of each is
# kept: other processes on a shared machine slow single runs down, never up.


def best_times(runs: list, repeats: int) -> list[tuple[object, float]]:
    """[(result of the fastest run, its seconds)] per callable in runs, over alternating repeats."""
    best: list[tuple[object, float]] = [(None, math.inf)] * len(runs)
    for _ in range(repeats):
        for i, run in enumerate(runs):
            out, secs = run()
            if secs < best[i][1]:
                best[i] = (out, secs)
    return best


def print_table(rows: list[tuple[str, str, float, str]], hand_fp32: float, fused_fp32: float) -> None:
    """rows: (precision, loop, samples/s, quality); ratios to the hand loops in fp32."""
    print(f"{'precision':<12}{'loop':<28}{'samples/s':>11}{'vs hand fp32':>14}{'vs fused fp32':>15}  quality")
    for prec, loop, rate, quality in rows:
        print(f"{prec:<12}{loop:<28}{rate:>11.0f}{rate / hand_fp32:>14.3f}{rate / fused_fp32:>15.3f}  {quality}")


def bench_vae(args: argparse.Namespace) -> None:
    name, train, test = load_data(args.data)
    test_bin = torch.bernoulli(test, generator=torch.Generator().manual_seed(0))
    n = train.shape[0] * max(1, args.epochs - 1)  # samples of the timed epochs
    print(f"VAE 784-512-256-z20, batch 128, Adam 1e-3, {args.epochs} epochs on {name} "
          f"({train.shape[0]} train / {test.shape[0]} test), device {args.device}, {torch.get_num_threads()} threads")
    # a short warm-up of every path, so one-off costs (allocations, kernels, compiling) are not timed
    hand_train(train[:1024], 2, "32-true", args.device, args.seed)
    hand_train(train[:1024], 2, "32-true", args.device, args.seed, fused=True)
    genlab_train(train[:1024], 2, "32-true", args.device, args.seed)
    rows, hand_fp32, fused_fp32 = [], math.nan, math.nan
    k = args.updates
    for prec in args.precision:
        loops = [  # (label, run, how its test -ELBO is taken)
            ("hand, torch's default Adam", partial(hand_train, train, args.epochs, prec, args.device, args.seed),
             hand_test_nelbo),
            ("hand, Adam(fused=True)",
             partial(hand_train, train, args.epochs, prec, args.device, args.seed, fused=True), hand_test_nelbo),
            ("genlab (fused Adam)", partial(genlab_train, train, args.epochs, prec, args.device, args.seed),
             genlab_test_nelbo),
        ]
        if k > 1:
            loops.append((f"genlab, {k} updates/batch",
                          partial(genlab_train, train, args.epochs, prec, args.device, args.seed, updates=k),
                          genlab_test_nelbo))
        if args.compile:
            loops += [("hand compiled, fused Adam", partial(hand_train, train, args.epochs, prec, args.device,
                                                            args.seed, fused=True, compiled=True), hand_test_nelbo),
                      ("genlab model.compile=true", partial(genlab_train, train, args.epochs, prec, args.device,
                                                            args.seed, compile=True), genlab_test_nelbo)]
            if k > 1:
                loops.append((f"genlab compiled, {k} upd/b", partial(genlab_train, train, args.epochs, prec,
                                                                    args.device, args.seed, compile=True, updates=k),
                              genlab_test_nelbo))
        best = best_times([run for _, run, _ in loops], args.repeats)
        if prec.startswith("32"):
            hand_fp32, fused_fp32 = n / best[0][1], n / best[1][1]
        for (loop, _, nelbo), (model, secs) in zip(loops, best):
            rows.append((prec, loop, n / secs, f"test -ELBO {nelbo(model, test_bin, args.device):.2f}"))
        print(f"{prec}: genlab / hand = {best[0][1] / best[2][1]:.3f} (torch's default Adam), "
              f"{best[1][1] / best[2][1]:.3f} (fused Adam in both)"
              + (f"; with {k} updates/batch {best[1][1] / best[3][1]:.3f}" if k > 1 else ""))
    print_table(rows, hand_fp32, fused_fp32)


DCGAN_LOOPS = ("hand, torch's default Adam", "hand, Adam(fused=True)", "genlab (fused Adam)")


def bench_dcgan(args: argparse.Namespace) -> None:
    name, train, _ = load_data(args.data)
    n = train.shape[0] * max(1, args.epochs - 1)  # the timed epochs
    steps = math.ceil(train.shape[0] / 64) * max(1, args.epochs - 1)
    print(f"DCGAN 28x28 (conf/model/dcgan.yaml, width 64, z 100), batch 64, Adam 2e-4, {args.epochs} epochs on "
          f"{name} ({train.shape[0]} train), device {args.device}, {torch.get_num_threads()} threads")
    _check_same_nets()
    gl = partial(genlab_fit, "dcgan", device=args.device, seed=args.seed, batch_size=64, binarize=False)
    hand_dcgan_train(train[:512], 2, "32-true", args.device, args.seed)  # warm-up, untimed
    hand_dcgan_train(train[:512], 2, "32-true", args.device, args.seed, fused=True)
    gl(train[:512], 2, "32-true")
    rows, hand_fp32, fused_fp32 = [], math.nan, math.nan
    for prec in args.precision:
        best = best_times([
            partial(hand_dcgan_train, train, args.epochs, prec, args.device, args.seed),
            partial(hand_dcgan_train, train, args.epochs, prec, args.device, args.seed, fused=True),
            partial(gl, train, args.epochs, prec),
        ], args.repeats)
        if prec.startswith("32"):
            hand_fp32, fused_fp32 = n / best[0][1], n / best[1][1]
        for loop, (out, secs) in zip(DCGAN_LOOPS, best):
            if isinstance(out, dict):
                d_loss, g_loss = out["d_loss"], out["g_loss"]
            else:  # genlab's epoch means of the last epoch
                logged = out.trainer.callback_metrics
                d_loss, g_loss = (float(logged.get(f"train/{k}", math.nan)) for k in ("d_loss", "g_loss"))
            quality = f"{1000 * secs / steps:.1f} ms/step, last d_loss {d_loss:.2f} g_loss {g_loss:.2f}"
            rows.append((prec, loop, n / secs, quality))
        print(f"{prec}: genlab / hand = {best[0][1] / best[2][1]:.3f} (torch's default Adam), "
              f"{best[1][1] / best[2][1]:.3f} (fused Adam in both)")
    print_table(rows, hand_fp32, fused_fp32)


def _check_same_nets() -> None:
    """The hand-written nets have genlab's layers and parameter counts (else the ratio means nothing)."""
    from genlab.nets.gan import dcgan

    ref = dcgan(in_shape=(1, 28, 28), latent_dim=100, width=64)
    g, d = hand_dcgan_nets()
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    mine, theirs = (count(g), count(d)), (count(ref.generator), count(ref.body) + ref.features + 1)
    if mine != theirs:
        raise SystemExit(f"hand nets {mine} parameters, genlab's {theirs}: the benchmark is out of date")


def bench_scaling(args: argparse.Namespace) -> None:
    """Epoch time of genlab's VAE and of the fused hand loop on 1x, 4x and 16x the synthetic data: both
    should grow linearly; where they do not, the machine (caches, memory) is the cause if both bend alike."""
    _, train, _ = load_data("synthetic")
    prec = args.precision[0]
    print(f"VAE epoch time against data size (synthetic, {train.shape[0]} samples = 1x), batch 128, "
          f"{prec}, device {args.device}, {torch.get_num_threads()} threads")
    genlab_train(train[:1024], 2, prec, args.device, args.seed)  # warm-up
    base: dict[str, float] = {}
    print(f"{'data':<6}{'samples':>9}{'genlab s/epoch':>16}{'us/sample':>11}{'vs 1x':>7}"
          f"{'hand s/epoch':>14}{'us/sample':>11}{'vs 1x':>7}")
    for k in (1, 4, 16):
        data = train.repeat(k, 1, 1, 1)
        (_, g), (_, h) = best_times([partial(genlab_train, data, 2, prec, args.device, args.seed),
                                     partial(hand_train, data, 2, prec, args.device, args.seed, fused=True)],
                                    args.repeats)
        per = {"genlab": g / len(data), "hand": h / len(data)}
        base = base or per
        print(f"{k}x{'':<4}{len(data):>9}{g:>16.2f}{1e6 * per['genlab']:>11.1f}{per['genlab'] / base['genlab']:>7.2f}"
              f"{h:>14.2f}{1e6 * per['hand']:>11.1f}{per['hand'] / base['hand']:>7.2f}")


def bench_ddp(args: argparse.Namespace) -> None:
    """One process against two (Lightning's DDP over gloo on the CPU), the same global batch of 128:
    samples/s of the steady-state epochs. Each setting runs in its own process (DDP starts the others)."""
    import subprocess
    import sys

    _, train, _ = load_data(args.data)
    print(f"VAE under DDP on {args.device}: global batch 128, {args.epochs} epochs, {train.shape[0]} samples")
    print(f"{'processes':<11}{'batch each':>11}{'samples/s':>11}{'vs 1 process':>14}")
    rates = {}
    for devices in (1, args.devices):
        cmd = [sys.executable, __file__, "ddp-run", "--devices", str(devices), "--epochs", str(args.epochs),
               "--data", args.data, "--device", args.device, "--precision", args.precision[0]]
        out = subprocess.run(cmd, capture_output=True, text=True)
        line = next((x for x in out.stdout.splitlines() if x.startswith("RESULT ")), None)
        if line is None:
            raise SystemExit(f"the {devices}-process run failed:\n{out.stderr[-3000:]}")
        rates[devices] = float(line.split()[1])
        print(f"{devices:<11}{128 // devices:>11}{rates[devices]:>11.0f}{rates[devices] / rates[1]:>14.3f}")


def ddp_run(args: argparse.Namespace) -> None:
    """One setting of bench_ddp: rank 0 prints RESULT <samples/s>."""
    _, train, _ = load_data(args.data)
    strategy = "ddp" if args.devices > 1 else "auto"
    model, secs = genlab_fit("vae", train, args.epochs, args.precision[0], args.device, args.seed,
                             batch_size=128 // args.devices, binarize=True, strategy=strategy, devices=args.devices)
    if model.trainer.is_global_zero:
        print(f"RESULT {train.shape[0] * max(1, args.epochs - 1) / secs:.1f}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", choices=["vae", "dcgan", "scaling", "ddp", "ddp-run"])
    p.add_argument("--compile", action="store_true", help="vae: also the torch.compile'd hand loop and genlab")
    p.add_argument("--updates", type=int, default=8,
                   help="vae: also genlab with model.updates_per_batch=UPDATES (1: leave that row out)")
    p.add_argument("--devices", type=int, default=2, help="ddp: the processes to compare with one")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--data", choices=["auto", "mnist10k", "synthetic"], default="auto")
    p.add_argument("--precision", nargs="+", default=["32-true", "bf16-mixed"])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--repeats", type=int, default=3, help="timed runs of each path; the best is reported")
    args = p.parse_args()
    benches = {"vae": bench_vae, "dcgan": bench_dcgan, "scaling": bench_scaling, "ddp": bench_ddp, "ddp-run": ddp_run}
    benches[args.model](args)


if __name__ == "__main__":
    main()
