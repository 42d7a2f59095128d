"""What makes the deep autoencoder (784-1000-500-250-30) generalise: variants of the
``mnist_deep_ae`` preset trained on few images, compared on the VALIDATION split only.

    python scripts/deep_ae_generalisation.py                         # mnist10k, 2000 training images
    python scripts/deep_ae_generalisation.py --max-train 2000 --epochs 60 --variants plain,dropout
    python scripts/deep_ae_generalisation.py --final --data-root /tmp/mnist_affine  # old vs new preset, tested

Each variant trains through genlab (its config, model, datamodule and Trainer) with the test stage off;
the checkpoint genlab would test (the best epoch on val/loss) is then scored here on the training images
and on the validation images: the reconstruction loss per image (BCE in nats, or ½ squared error for
model.likelihood=gaussian) on both — their difference is the generalisation gap — and the squared error
per image on validation beside PCA-30 fitted on the same training images. ``--final`` instead runs
the old and the new preset as a user would (all training images, test stage on) and prints their test
squared error against PCA-30.

``--make-affine DIR`` writes a harder held-out set of the same size: mnist10k with every image randomly
rotated (±25°), scaled (0.8-1.2) and shifted (±3 px), in torchvision's layout, for ``--data-root DIR``.
"""

from __future__ import annotations

import argparse
import os
import struct
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
# mnist10k beside the checkout, or where GENLAB_MNIST10K says (as scripts/benchmark.py)
MNIST10K = Path(os.environ.get("GENLAB_MNIST10K", ROOT.parent / "shared" / "data" / "mnist10k"))

# overrides on top of experiment=mnist_deep_ae; chosen on validation data
VARIANTS = {  # each on top of FROM_SCRATCH with model=ae unless it names a model
    "plain": [],
    "weight_decay": ["model.optimizer._target_=torch.optim.AdamW", "+model.optimizer.weight_decay=0.05"],
    "dropout": ["model.net.dropout=0.1"],
    "dropout_0.2": ["model.net.dropout=0.2"],
    "input_noise": ["model=dae", "model.noise=gaussian", "model.noise_level=0.2"],
    "masking_noise": ["model=dae", "model.noise=masking", "model.noise_level=0.2"],
    "pretrain": ["model=stacked_ae", "model.pretrain_epochs=5"],
    "pretrain_10": ["model=stacked_ae", "model.pretrain_epochs=10"],
    "pretrain_wd": ["model=stacked_ae", "model.pretrain_epochs=5", "model.optimizer._target_=torch.optim.AdamW",
                    "+model.optimizer.weight_decay=0.05"],
    "pretrain_dropout": ["model=stacked_ae", "model.pretrain_epochs=5", "model.net.dropout=0.1"],
    "pretrain_gaussian": ["model=stacked_ae", "model.pretrain_epochs=5", "model.likelihood=gaussian"],
    "pretrain_8": ["model=stacked_ae", "model.pretrain_epochs=8"],
    "pretrain_12": ["model=stacked_ae", "model.pretrain_epochs=12"],
    "pretrain_15": ["model=stacked_ae", "model.pretrain_epochs=15"],
    "pretrain_10_long": ["model=stacked_ae", "model.pretrain_epochs=10", "trainer.max_epochs=90"],
    "pretrain_10_dropout": ["model=stacked_ae", "model.pretrain_epochs=10", "model.net.dropout=0.1"],
    # experiment=mnist_dbn_ae's network: a stack of RBMs (Hinton & Salakhutdinov 2006), sigmoid units
    "rbm_pretrain": ["model=stacked_ae", "model.pretrain=rbm", "model.net.activation=sigmoid",
                     "model.code_activation=none", "model.rbm_epochs=5", "model.rbm_lr=0.1",
                     "model.rbm_code_lr=1e-3", "model.rbm_cd_k=1"],
}
# the preset before this study: the same network and data settings, trained from scratch for 60 epochs
FROM_SCRATCH = ["data=mnist", "data.batch_size=128", "data.val_fraction=0.05", "model.latent_dim=30",
                "model.net.hidden=[1000,500,250]"]


def compose(overrides: list[str]):  # noqa: ANN201
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from genlab.config import conf_dir, setup_hydra

    setup_hydra()
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        return hydra_compose("train", overrides=overrides)


def fit(overrides: list[str], out: Path, test: bool) -> tuple[dict, object]:
    """Train through genlab.train.train; returns (metrics, the composed config)."""
    from omegaconf import open_dict

    from genlab.train import train

    cfg = compose(["logger=csv", "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false",
                   *overrides])
    with open_dict(cfg):
        cfg.paths.output_dir = str(out)
        cfg.test = test
        if not test:  # nothing but the checkpoints: no test metrics, no pictures of test images
            cfg.callbacks = {k: v for k, v in cfg.callbacks.items() if "checkpoint" in k}
    return train(cfg), cfg


@torch.no_grad()
def score(cfg, out: Path) -> dict[str, float]:  # noqa: ANN001
    """BCE per image on train and validation, squared error per image on validation and PCA-30's,
    for the checkpoint genlab tests (the best on val/loss)."""
    import json

    from hydra.utils import instantiate

    from genlab.models.autoencoder import recon_nll
    from genlab.models.pca import fit_pca, pca_reconstruct
    from genlab.run import load_model

    best = out / json.loads((out / "metrics.json").read_text())["best_checkpoint"]
    model = load_model(cfg.model, best).eval()
    dm = instantiate(cfg.data)
    dm.setup("fit")
    train, val = dm.tensors("train").x, dm.tensors("val").x

    def bce(x: torch.Tensor) -> float:
        nll = [recon_nll(model.decoder(model.encode(b)), b, model.likelihood) for b in x.split(512)]
        return torch.cat(nll).mean().item()

    sq = ((torch.cat([model.reconstruct(b) for b in val.split(512)]) - val) ** 2).flatten(1).sum(1).mean().item()
    pca = fit_pca(train, 30)
    pca_sq = ((pca_reconstruct(pca, val) - val) ** 2).flatten(1).sum(1).mean().item()
    return {"train_bce": bce(train), "val_bce": bce(val), "val_sq": sq, "val_pca30": pca_sq}


def make_affine(folder: Path, seed: int = 0) -> None:
    """mnist10k, every image randomly rotated, scaled and shifted, written as IDX files."""
    import torch.nn.functional as F
    from torchvision.datasets import MNIST

    g = torch.Generator().manual_seed(seed)
    raw = folder / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for train, prefix in ((True, "train"), (False, "t10k")):
        ds = MNIST(str(MNIST10K), train=train)
        x = ds.data[:, None].float() / 255
        n = len(x)
        angle = (torch.rand(n, generator=g) * 2 - 1) * 25 * torch.pi / 180
        scale = 0.8 + 0.4 * torch.rand(n, generator=g)
        shift = (torch.rand(n, 2, generator=g) * 2 - 1) * 3 / 14  # ±3 px in [-1, 1] coordinates
        cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
        theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        out = (F.grid_sample(x, grid, align_corners=False) * 255).round().clamp(0, 255).to(torch.uint8)[:, 0]
        (raw / f"{prefix}-images-idx3-ubyte").write_bytes(struct.pack(">4i", 2051, *out.shape) + out.numpy().tobytes())
        labels = ds.targets.to(torch.uint8).numpy()
        (raw / f"{prefix}-labels-idx1-ubyte").write_bytes(struct.pack(">2i", 2049, len(labels)) + labels.tobytes())
    print(f"written {raw}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-root", default=str(MNIST10K))
    p.add_argument("--max-train", type=int, default=2000)
    p.add_argument("--epochs", type=int, default=60, help="of each variant (a variant may set its own)")
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--final", action="store_true", help="old and new preset on all training images, tested")
    p.add_argument("--make-affine", type=Path, default=None)
    p.add_argument("--out", type=Path, default=Path("/tmp/deep_ae"))
    args = p.parse_args()
    if args.make_affine:
        make_affine(args.make_affine)
        return
    base = [f"data.root={args.data_root}", f"seed={args.seed}"]
    if args.final:
        for name, extra in (("old preset", ["model=ae", *FROM_SCRATCH, "trainer.max_epochs=60"]),
                            ("new preset", ["experiment=mnist_deep_ae"])):
            metrics, _ = fit([*base, *extra], args.out / name.replace(" ", "_"), test=True)
            m, pca = metrics["test/sq_err_per_image"], metrics["test/pca_sq_err_per_image"]
            print(f"{name:<12} test squared error {m:.2f} | PCA-30 {pca:.2f} | ratio {m / pca:.3f}", flush=True)
        return
    print(f"{'variant':<18}{'train loss':>10}{'val loss':>9}{'gap':>7}{'val sq':>8}{'PCA-30':>8}{'ratio':>7}{'s':>6}")
    for name in args.variants.split(","):
        start = time.time()
        out = args.out / name
        variant = VARIANTS[name]
        model = [] if any(o.startswith("model=") for o in variant) else ["model=ae"]
        study = [*base, *model, *FROM_SCRATCH, f"trainer.max_epochs={args.epochs}", f"data.max_train={args.max_train}"]
        _, cfg = fit([*study, *variant], out, test=False)
        s = score(cfg, out)
        print(f"{name:<18}{s['train_bce']:>10.1f}{s['val_bce']:>9.1f}{s['val_bce'] - s['train_bce']:>7.1f}"
              f"{s['val_sq']:>8.2f}{s['val_pca30']:>8.2f}{s['val_sq'] / s['val_pca30']:>7.3f}"
              f"{time.time() - start:>6.0f}", flush=True)


if __name__ == "__main__":
    main()
