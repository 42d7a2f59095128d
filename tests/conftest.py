"""Shared fixtures: compose the real config with tiny, fast overrides."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, open_dict

from genlab.config import conf_dir, setup_hydra

CONF = conf_dir()
MODELS = sorted(p.stem for p in (CONF / "model").glob("*.yaml"))
DATASETS = sorted(p.stem for p in (CONF / "data").glob("*.yaml"))
EXPERIMENTS = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))

# tiny built-in data for every smoke run: small images / few points, 2 batches per stage
TINY = {
    "digits": ["data.max_train=96", "data.batch_size=32"],
    "shapes": ["data.n_samples=300", "data.image_size=32", "data.batch_size=32"],
    "toy2d": ["data.n_samples=300", "data.batch_size=32"],
}
FAST = ["trainer=debug", "trainer.enable_progress_bar=false", "logger=csv"]

# one classifier cache for the whole session: pytest-xdist's workers inherit it from the controller that
# imported this file first (genlab writes cache files atomically, so workers may fill it at once)
CACHE = Path(os.environ.setdefault("GENLAB_TEST_CACHE", tempfile.mkdtemp(prefix="genlab-test-cache-")))

if os.environ.get("PYTEST_XDIST_WORKER"):
    # several workers share the cores: one torch thread each, for the runs they start too
    os.environ["OMP_NUM_THREADS"] = "1"
    import torch

    torch.set_num_threads(1)

setup_hydra()


@pytest.fixture
def make_cfg(tmp_path: Path) -> Callable[..., DictConfig]:
    """compose('train', overrides) with the run directory set to a temporary folder."""

    def _make(*overrides: str) -> DictConfig:
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            cfg = compose("train", overrides=list(overrides))
        with open_dict(cfg):
            cfg.paths.output_dir = str(tmp_path / "run")
            cfg.paths.log_dir = str(tmp_path / "logs")
            cfg.paths.cache_dir = str(CACHE)  # one classifier cache for the session, never the repo's
        return cfg

    return _make


def run_cli(*args: str, cwd: Path | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    """Run genlab-train in a subprocess, as a user would."""
    env = {**os.environ, "HYDRA_FULL_ERROR": "0", "PYTHONWARNINGS": "ignore"}
    return subprocess.run(
        [sys.executable, "-m", "genlab.train", *args, f"paths.cache_dir={CACHE}"],
        capture_output=True, text=True, cwd=cwd, timeout=timeout, env=env,
    )


@pytest.fixture(scope="session")
def image_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny folder of PNGs in two class subfolders, for data=image_folder."""
    from PIL import Image

    root = tmp_path_factory.mktemp("images")
    for c in ("a", "b"):
        (root / c).mkdir()
        for i in range(6):
            Image.new("RGB", (12, 12), (40 * i, 200 if c == "a" else 0, 90)).save(root / c / f"{i}.png")
    return root


def write_idx(raw: Path, prefix: str, images: np.ndarray, labels: np.ndarray) -> None:
    """Real IDX files: big-endian magic 2051 (uint8, 3 dims) / 2049 (uint8, 1 dim) and sizes."""
    raw.mkdir(parents=True, exist_ok=True)
    (raw / f"{prefix}-images-idx3-ubyte").write_bytes(struct.pack(">4i", 2051, *images.shape) + images.tobytes())
    (raw / f"{prefix}-labels-idx1-ubyte").write_bytes(struct.pack(">2i", 2049, len(labels)) + labels.tobytes())


@pytest.fixture(scope="session")
def fake_mnist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data.root with tiny MNIST files (96 train / 48 test digit-like blobs) in torchvision's layout,
    so that presets made for MNIST run offline without the real files."""
    root = tmp_path_factory.mktemp("mnist")
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 96), ("t10k", 48)):
        labels = rng.integers(0, 10, n, dtype=np.uint8)
        images = np.zeros((n, 28, 28), dtype=np.uint8)
        for i, c in enumerate(labels):  # a bright square whose place says the class
            r, col = 4 + 2 * (c // 5) * 5, 4 + 4 * (c % 5)
            images[i, r : r + 8, col : col + 6] = 200 + rng.integers(0, 55)
        write_idx(root / "MNIST" / "raw", prefix, images, labels)
    return root
