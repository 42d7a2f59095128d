"""Data parallelism: the loaders shard by rank as torch's DistributedSampler does, and a 2-process
DDP run on CPU (gloo) trains on half the batches per process, writes one run and agrees with one process."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import run_cli
from torch.utils.data import DistributedSampler

from genlab.config.preflight import installed
from genlab.data.base import Split, TensorLoader, TrainLoader, epoch_order, shard
from genlab.data.unpaired import UnpairedLoader

pytestmark = pytest.mark.slow  # every test here starts several processes

@pytest.mark.parametrize("n,world", [(10, 2), (11, 2), (7, 3), (2, 4), (1, 3)])
def test_shard_takes_what_a_distributed_sampler_takes(n: int, world: int) -> None:
    order = torch.randperm(n, generator=torch.Generator().manual_seed(n))
    for rank in range(world):
        # the sampler's own positions (unshuffled: its padding and striding alone), applied to the order
        positions = list(DistributedSampler(range(n), num_replicas=world, rank=rank, shuffle=False))
        assert shard(order, rank, world).tolist() == order[positions].tolist()


def test_shards_are_disjoint_equal_and_cover_the_epoch() -> None:
    x = torch.arange(103).view(-1, 1)
    loaders = [TrainLoader(Split(x), 8, shuffle=True, seed=3, rank=r, world=2) for r in range(2)]
    assert len(loaders[0]) == len(loaders[1]) == 7  # ceil(ceil(103 / 2) / 8)
    for epoch in range(3):
        seen = [torch.cat([b["x"][:, 0] for b in ld]) for ld in loaders]
        assert len(seen[0]) == len(seen[1]) == 52
        assert set(seen[0].tolist()) | set(seen[1].tolist()) == set(range(103))
        assert len(set(seen[0].tolist()) & set(seen[1].tolist())) <= 1  # the one padded sample
        order = epoch_order(103, 3, epoch)  # the same permutation on both ranks, new each epoch
        assert torch.equal(seen[0], shard(order, 0, 2)) and torch.equal(seen[1], shard(order, 1, 2))


def test_batch_i_of_all_ranks_is_batch_i_of_one_process_with_the_global_batch() -> None:
    x = torch.arange(64).view(-1, 1)
    one = list(TensorLoader(Split(x), 16, shuffle=True, seed=1))
    ranks = [list(TensorLoader(Split(x), 8, shuffle=True, seed=1, rank=r, world=2)) for r in range(2)]
    assert len(ranks[0]) == len(one)
    for i, batch in enumerate(one):
        together = torch.cat([ranks[0][i]["x"], ranks[1][i]["x"]])[:, 0]
        assert sorted(together.tolist()) == sorted(batch["x"][:, 0].tolist())


def test_evaluation_loaders_shard_in_stored_order_and_a_bad_rank_is_refused() -> None:
    x = torch.arange(9).view(-1, 1)
    parts = [torch.cat([b["x"][:, 0] for b in TensorLoader(Split(x), 4, shuffle=False, rank=r, world=2)])
             for r in range(2)]
    assert parts[0].tolist() == [0, 2, 4, 6, 8] and parts[1].tolist() == [1, 3, 5, 7, 0]
    with pytest.raises(ValueError, match="rank 2"):
        TensorLoader(Split(x), 4, shuffle=False, rank=2, world=2)


def test_unpaired_ranks_read_the_b_stream_of_one_process_with_the_global_batch() -> None:
    a, b = Split(torch.arange(40).view(-1, 1)), Split(torch.arange(100, 130).view(-1, 1))
    one = UnpairedLoader(a, b, 8, shuffle=True, seed=2, epoch=lambda: 1)
    ranks = [UnpairedLoader(a, b, 4, shuffle=True, seed=2, epoch=lambda: 1, rank=r, world=2) for r in range(2)]
    batches = [list(ld) for ld in ranks]
    for i, batch in enumerate(one):
        got_b = torch.cat([batches[0][i]["x_b"], batches[1][i]["x_b"]])[:, 0]
        assert sorted(got_b.tolist()) == sorted(batch["x_b"][:, 0].tolist())


TRAIN = ["model=ae", "data=digits", "data.max_train=256", "trainer.max_epochs=3", "trainer.enable_progress_bar=false",
         "trainer.enable_model_summary=false", "logger=csv", "callbacks.image_logger.n_points=100"]


def test_two_process_ddp_on_cpu_splits_the_batches_and_writes_one_run(tmp_path: Path) -> None:
    one = run_cli(*TRAIN, "trainer=cpu", "data.batch_size=32", f"paths.log_dir={tmp_path / 'one'}")
    two = run_cli(*TRAIN, "trainer=ddp_cpu", "trainer.devices=2", "data.batch_size=16",
                  f"paths.log_dir={tmp_path / 'two'}")
    assert one.returncode == 0, one.stderr[-2000:]
    assert two.returncode == 0, two.stderr[-2000:]
    assert "Starting with 2 processes" in two.stdout + two.stderr
    assert "sync_dist" not in two.stdout + two.stderr
    assert two.stdout.count("run directory :") == 1  # one summary
    runs = {k: list((tmp_path / k).glob("train/runs/*")) for k in ("one", "two")}
    assert len(runs["one"]) == 1 and len(runs["two"]) == 1  # the second process joined the run's folder
    [run] = runs["two"]
    assert len(list(run.rglob("metrics.json"))) == 1
    # each process iterated half of every epoch: with half the batch per process, as many steps as one process
    # with the whole batch (256 training samples: 8 batches of 32, or 8 batches of 16 on each of 2 processes)
    steps = [torch.load(r[0] / "checkpoints" / "last.ckpt", weights_only=True)["global_step"]
             for r in (runs["one"], runs["two"])]
    assert steps == [3 * 8, 3 * 8]
    m1 = json.loads((runs["one"][0] / "metrics.json").read_text())["metrics"]
    m2 = json.loads((run / "metrics.json").read_text())["metrics"]
    # the same global batches, averaged gradients: equal but for float rounding and the padded test shard
    for key in ("test/loss", "test/sq_err_per_image"):
        assert m2[key] == pytest.approx(m1[key], rel=0.02), key
    assert m2["test/pca_sq_err_per_image"] == m1["test/pca_sq_err_per_image"]  # whole test set, once


def test_submitit_local_runs_a_two_job_sweep_each_with_its_metrics(tmp_path: Path) -> None:
    done = run_cli("-m", "hydra/launcher=submitit_local", "seed=0,1", "trainer=debug", "logger=csv",
                   "trainer.enable_progress_bar=false", f"paths.log_dir={tmp_path}")
    assert done.returncode == 0, done.stderr[-2000:]
    [sweep] = list(tmp_path.glob("train/multiruns/*"))
    jobs = sorted(p.parent.name for p in sweep.glob("*/metrics.json"))
    assert jobs == ["0", "1"]
    assert [json.loads((sweep / j / "metrics.json").read_text())["seed"] for j in jobs] == [0, 1]
    assert list(sweep.glob(".submitit/*/*.out"))  # the jobs ran through submitit


def test_slurm_launcher_sizes_jobs_from_the_trainer() -> None:
    from conftest import CONF
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    def launcher(*overrides: str) -> dict:
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            cfg = compose("train", overrides=["hydra/launcher=slurm", *overrides], return_hydra_config=True)
        node = cfg.hydra.launcher
        return {k: OmegaConf.select(node, k) for k in ("nodes", "tasks_per_node", "gpus_per_node", "partition",
                                                       "timeout_min", "_target_")}

    gpu = launcher("trainer=ddp_gpu", "trainer.devices=4", "trainer.num_nodes=2", "hydra.launcher.partition=gpu",
                   "hydra.launcher.timeout_min=30")
    assert gpu == {"nodes": 2, "tasks_per_node": 4, "gpus_per_node": 4, "partition": "gpu", "timeout_min": 30,
                   "_target_": "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"}
    cpu = launcher("trainer=ddp_cpu", "trainer.devices=2")
    assert (cpu["nodes"], cpu["tasks_per_node"], cpu["gpus_per_node"]) == (1, 2, None)


@pytest.mark.parametrize("overrides, expect", [
    (["hydra/launcher=submitit_local", "hydra.launcher.cpus_per_task=0"], "hydra.launcher.cpus_per_task=0: give"),
    (["hydra/launcher=slurm", "hydra.launcher.mem_gb=-1"], "hydra.launcher.mem_gb=-1: give the memory"),
    (["hydra/launcher=submitit_local", "hydra.launcher.submitit_folder=/proc/genlab/%j"],
     "hydra.launcher.submitit_folder=/proc/genlab/%j: no folder can be made there"),
    (["hparams_search=ae_optuna", "hydra.sweeper.storage=nope://x"],
     "hydra.sweeper.storage=nope://x: not a database URL SQLAlchemy can open"),
    pytest.param(["hparams_search=ae_optuna", "hydra.sweeper.storage=mysql://u@h/db"],
                 "hydra.sweeper.storage=mysql://u@h/db: SQLAlchemy has no driver for mysql here",
                 marks=pytest.mark.skipif(installed("MySQLdb"), reason="the MySQL driver is installed here")),
    (["hparams_search=ae_optuna", "hydra.sweeper.storage=sqlite:////nonexistent/genlab/study.db"],
     "the folder /nonexistent/genlab of its SQLite file does not exist"),
    (["hparams_search=ae_optuna", "optimized_metric=val_loss"], "optimized_metric=val_loss: a run's metrics are named"),
])
def test_launcher_and_sweeper_settings_are_refused_before_the_sweep(overrides: list[str], expect: str) -> None:
    """Settings submitit and Optuna would accept until the jobs are submitted or the study is opened."""
    from conftest import CONF
    from hydra import compose, initialize_config_dir

    from genlab.config.preflight import launch_errors

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=overrides, return_hydra_config=True)
    errors = launch_errors(cfg, multirun=True)
    assert any(expect in e for e in errors), errors
    valid = [o for o in overrides if o.startswith(("hydra/launcher=", "hparams_search="))]
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        assert launch_errors(compose("train", overrides=valid, return_hydra_config=True), multirun=True) == []


def test_slurm_launcher_refuses_a_device_count_it_cannot_size(tmp_path: Path) -> None:
    done = run_cli("-m", "hydra/launcher=slurm", "trainer.devices=auto", "seed=0,1", f"paths.log_dir={tmp_path}")
    assert done.returncode == 2
    assert "trainer.devices" in done.stderr and "Traceback" not in done.stderr
    assert not any(tmp_path.iterdir())


def test_simclr_contrasts_with_the_global_batch_under_two_process_ddp(tmp_path: Path) -> None:
    """The all-gather of the views (with gradients) works on gloo: the run finishes with finite figures."""
    two = run_cli("model=simclr", "data=digits", "data.max_train=128", "trainer.max_epochs=1",
                  "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false", "logger=csv",
                  "trainer=ddp_cpu", "trainer.devices=2", "data.batch_size=16", f"paths.log_dir={tmp_path}",
                  "callbacks.evaluator.metrics.embedding.n=100", "callbacks.image_logger.n_points=100")
    assert two.returncode == 0, two.stderr[-2000:]
    [run] = list(tmp_path.glob("train/runs/*"))
    metrics = json.loads((run / "metrics.json").read_text())["metrics"]
    assert torch.isfinite(torch.tensor([metrics["test/loss"], metrics["test/linear_probe_acc"]])).all()


def test_an_rbm_averages_its_written_gradients_under_two_process_ddp(tmp_path: Path) -> None:
    """The RBM writes its CD gradient without a backward pass, so DDP's hooks never see it: the model averages
    it over the processes itself. Two processes with half the batch each end near one process with the whole."""
    args = ["model=rbm", "data=digits", "data.binarize=true", "data.max_train=256", "trainer.max_epochs=3",
            "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false", "logger=csv",
            "model.n_hidden=16", "model.ais_runs=20", "model.ais_betas=200", "model.sample_steps=20",
            "callbacks.image_logger.n_points=100"]
    one = run_cli(*args, "trainer=cpu", "data.batch_size=32", f"paths.log_dir={tmp_path / 'one'}")
    two = run_cli(*args, "trainer=ddp_cpu", "trainer.devices=2", "data.batch_size=16",
                  f"paths.log_dir={tmp_path / 'two'}", timeout=240)
    assert one.returncode == 0, one.stderr[-2000:]
    assert two.returncode == 0, two.stderr[-2000:]
    m1, m2 = (json.loads(next((tmp_path / k).glob("train/runs/*/metrics.json")).read_text())["metrics"]
              for k in ("one", "two"))
    assert torch.isfinite(torch.tensor([m2["test/loss"], m2["test/recon"]])).all()
    assert m2["test/recon"] == pytest.approx(m1["test/recon"], rel=0.05)


def test_written_gradients_go_through_the_strategys_mean() -> None:
    from types import SimpleNamespace

    from genlab.data.base import DataInfo
    from genlab.models.rbm import RBM

    model = RBM(data_info=DataInfo("tiny", (1, 1, 4)), n_hidden=3)
    mine = {name: torch.randn_like(p) for name, p in model.named_parameters()}
    for name, p in model.named_parameters():
        p.grad = mine[name].clone()
    ops: list[str] = []
    # a stand-in for the all-reduce of two processes whose other process holds 2 + the gradient
    reduce = lambda t, reduce_op: ops.append(reduce_op) or (t + (t + 2)) / 2  # noqa: E731
    model._trainer = SimpleNamespace(world_size=2, strategy=SimpleNamespace(reduce=reduce))
    model.reduce_gradients()
    assert ops == ["mean"] * 3
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.grad, mine[name] + 1, msg=name)
    model._trainer = SimpleNamespace(world_size=1, strategy=None)  # one process: left as written
    model.reduce_gradients()
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.grad, mine[name] + 1, msg=name)


def test_a_gan_trains_and_is_scored_by_rank_0_alone_under_two_process_ddp(tmp_path: Path) -> None:
    """Each player's step leaves the other's weights without a gradient, which DDP must be told to look for
    (genlab-train picks ddp_find_unused_parameters_true); rank 0 scores the samples (FID, KID through
    torchmetrics) while rank 1 waits for the broadcast of the scores, so no metric may wait for the other
    process (torchmetrics gathers its states by default)."""
    two = run_cli("model=gan", "data=digits", "data.max_train=128", "trainer.max_epochs=1",
                  "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false", "logger=csv",
                  "trainer=ddp_cpu", "trainer.devices=2", "data.batch_size=16", f"paths.log_dir={tmp_path}",
                  "callbacks.evaluator.metrics.sample_quality.n_samples=200",
                  "callbacks.evaluator.metrics.mode_coverage.n_samples=200", "callbacks.image_logger.n_points=100",
                  timeout=240)
    assert two.returncode == 0, two.stderr[-2000:]
    [run] = list(tmp_path.glob("train/runs/*"))
    metrics = json.loads((run / "metrics.json").read_text())["metrics"]
    assert torch.isfinite(torch.tensor([metrics["test/fid"], metrics["test/kid"], metrics["test/loss"]])).all()


def test_models_get_the_ddp_they_can_train_under_or_a_reason() -> None:
    import functools
    from types import SimpleNamespace

    from genlab.data.base import DataInfo
    from genlab.errors import UserError
    from genlab.models.autoencoder import Autoencoder
    from genlab.models.gan import GAN
    from genlab.models.pca import PCA
    from genlab.nets.autoencoder import mlp_pair
    from genlab.nets.gan import mlp_gan
    from genlab.run import ddp_strategy_for

    info = DataInfo("pts", (2,), bounded=False)
    gan = GAN(data_info=info, net=functools.partial(mlp_gan, hidden=[8]), latent_dim=2)
    ae = Autoencoder(data_info=info, net=functools.partial(mlp_pair, hidden=[8]), latent_dim=1)
    assert ddp_strategy_for(gan, "ddp") == "ddp_find_unused_parameters_true"
    assert ddp_strategy_for(gan, "ddp_spawn") == "ddp_spawn_find_unused_parameters_true"
    assert ddp_strategy_for(gan, "auto") == "auto"
    assert ddp_strategy_for(ae, "ddp") == "ddp"  # every weight gets a gradient: no search, which costs a graph walk
    with pytest.raises(UserError, match="trainer.strategy=ddp$"):
        ddp_strategy_for(gan, "ddp_find_unused_parameters_false")
    two = SimpleNamespace(world_size=2, gradient_clip_val=None, accumulate_grad_batches=1, precision="32-true")
    assert "PCA cannot train in 2 processes" in PCA(data_info=info, latent_dim=1).trainer_refusal(two)
    assert PCA(data_info=info, latent_dim=1).trainer_refusal(SimpleNamespace(**{**vars(two), "world_size": 1})) is None
    assert ae.trainer_refusal(two) is None
