"""genlab as a user installs it: a wheel (conf/ inside it as genlab.conf) that runs from an empty
folder, a command line that answers --help without loading torch, and the user's own config
folder on Hydra's search path."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import CACHE, CONF

ROOT = CONF.parent


def python(*args: str, cwd: Path, env: dict | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "HYDRA_FULL_ERROR": "0", "PYTHONWARNINGS": "ignore", **(env or {})})


@pytest.fixture(scope="module")
def installed_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """genlab built as a wheel and installed (without its dependencies, which this venv has) into a
    folder of its own, away from the source tree."""
    tmp = tmp_path_factory.mktemp("wheel")
    source = tmp / "source"  # a copy: building writes build/ and *.egg-info into the tree it builds
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(".git", "outputs", ".cache", "build", "*.egg-info",
                                                                "__pycache__", "docs"))
    build = python("-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp / "dist"),
                   str(source), cwd=tmp)
    assert build.returncode == 0, build.stderr[-2000:]
    (wheel,) = (tmp / "dist").glob("genlab-*.whl")
    site = tmp / "site"
    install = python("-m", "pip", "install", "--no-deps", "-q", "--target", str(site), str(wheel), cwd=tmp)
    assert install.returncode == 0, install.stderr[-2000:]
    return site


@pytest.mark.slow
def test_the_installed_wheel_trains_from_an_empty_folder(installed_wheel: Path, tmp_path: Path) -> None:
    env = {"PYTHONPATH": str(installed_wheel)}
    where = python("-c", "import genlab, genlab.conf; print(genlab.__file__); print(genlab.conf.__file__)",
                   cwd=tmp_path, env=env)
    assert where.stdout.split() == [str(installed_wheel / "genlab" / "__init__.py"),
                                    str(installed_wheel / "genlab" / "conf" / "__init__.py")]
    assert sorted(p.name for p in (installed_wheel / "genlab" / "conf" / "model").glob("*.yaml")) == sorted(
        p.name for p in (CONF / "model").glob("*.yaml"))  # every config shipped
    run = python("-m", "genlab.train", "debug=fast", "trainer.enable_progress_bar=false",
                 f"paths.cache_dir={CACHE}", cwd=tmp_path, env=env)
    assert run.returncode == 0, run.stderr[-2000:]
    (folder,) = (tmp_path / "outputs" / "debug" / "runs").iterdir()  # below the folder it was started in
    assert json.loads((folder / "metrics.json").read_text())["model"] == "ae"


def test_help_and_completion_do_not_load_torch(tmp_path: Path) -> None:
    probe = ("import sys, runpy; sys.argv = ['genlab-train', '--help']\n"
             "try:\n    runpy.run_module('genlab.train', run_name='__main__')\nexcept SystemExit:\n    pass\n"
             "print('LOADED', sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'pytorch_lightning')))")
    res = python("-c", probe, cwd=tmp_path)
    assert "== Configuration groups ==" in res.stdout and "model:" in res.stdout
    assert res.stdout.strip().splitlines()[-1] == "LOADED []"
    groups = res.stdout.split("== Configuration groups ==")[1].split("== Config ==")[0]
    assert "schema" not in groups  # the internal schemas are not offered as choices


def test_a_users_own_config_folder_on_the_search_path(tmp_path: Path) -> None:
    mine = tmp_path / "myconf" / "model"
    mine.mkdir(parents=True)
    (mine / "tiny_ae.yaml").write_text("defaults:\n  - ae\n  - _self_\nlatent_dim: 3\n")  # extends genlab's ae
    res = python("-m", "genlab.train", f"hydra.searchpath=[file://{tmp_path / 'myconf'}]", "model=tiny_ae",
                 "--cfg", "job", cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "latent_dim: 3" in res.stdout and "genlab.models.autoencoder.Autoencoder" in res.stdout
