"""Bad input, systematically: every case must end in a short error and a non-zero exit, with no Python
traceback, name the key or file at fault, leave no run or sweep folder behind, and leave an existing run
(with its metrics.json and checkpoint) byte for byte as it was.

The cases: every schema field with a range or choices gets values just outside them and one of the wrong
type; every config group an unknown choice; crafted data files (IDX files with wrong counts, sizes, labels
or lengths; image folders missing test/; PNG headers announcing decompression bombs); paths that are files
or cannot be written; sweeps Optuna or joblib cannot run; genlab-eval and genlab-report on damaged folders;
and the inputs that used to end with exit 0; checkpoints that are damaged, of another model, or crafted to
run code when unpickled.

Speed: this file is also the driver. ``python tests/test_fuzz.py CASES RESULTS SLOT...`` imports torch,
Lightning, Hydra and genlab once, then forks a fresh child per case, one per slot (a folder with its own
copy of the existing run) at a time: a case costs what genlab's own checks do and never sees another
case's state, which in-process runs of Hydra apps would share. The range and type cases all take one path
through genlab-train (Hydra's merge of the override, then ``validate``): one case of each kind of check runs
the command; all of them go through that merge and ``validate`` in-process, without a process each.
"""

from __future__ import annotations

import atexit
import dataclasses
import hashlib
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import time
import typing
import zlib
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.slow  # the fuzz runs its cases in subprocesses (about 3 minutes on 2 cores)

PROJECT = Path(__file__).resolve().parents[1]
SLOTS = 2  # cases run at once (one per core)
CASE_TIMEOUT = 120  # seconds; a case that trains instead of failing is stopped


@dataclasses.dataclass(frozen=True)
class Case:
    id: str
    args: tuple[str, ...]
    expect: tuple[str, ...]  # each must appear in the output
    tool: str = "train"  # train | resume (genlab-train without the short-run overrides) | eval | report
    check: str = ""  # schema cases: the kind of check (the bound or wrong type, and the field's type)


# ---- the cases ------------------------------------------------------------------------------------
# what a selection needs besides its choice to compose a valid config (the key a case's override is refused for
# must be the only fault)
SELECTION_NEEDS = {"data=image_folder": ("data.path={data}/images",)}


def schema_places() -> list[tuple[type, str, list[str]]]:
    """(schema, its key in the config, overrides that select it) for every schema of the registry
    (``genlab.config.schemas``) and every dataclass a schema extends. A schema is placed where a conf/ file's
    defaults list names it: a file the default config composes if one does, else the file of the schema's own
    name, else the first by name; a schema that no file names (a base) where its first descendant is."""
    from omegaconf import OmegaConf

    from genlab.config import conf_dir, schemas

    conf = conf_dir()

    def entries(path: Path) -> list:
        return list(OmegaConf.to_container(OmegaConf.load(path)).get("defaults", []))

    chosen = {k: v for d in entries(conf / "train.yaml") if isinstance(d, dict) for k, v in d.items()}

    def default_files(group: str, name: str) -> set[str]:  # a preset and the presets of its group it extends
        path = conf / group / f"{name}.yaml"
        if not path.is_file():
            return set()
        return {name}.union(*(default_files(group, d) for d in entries(path)
                              if isinstance(d, str) and not d.startswith("/") and d != "_self_"))

    registry = schemas()
    places: dict[str, list[tuple[tuple[int, int, str], str, list[str]]]] = {}
    for path in sorted(conf.rglob("*.yaml")):
        group = path.parent.relative_to(conf).as_posix()
        if group.startswith("hydra"):
            continue
        header = re.match(r"# @package (\S+)", path.read_text())
        package = header.group(1) if header else "" if group == "." else group.replace("/", ".")
        package = "" if package == "_global_" else package
        default = group == "." or path.stem in default_files(group, str(chosen.get(group)))
        select = [] if default else [f"{group}={path.stem}", *SELECTION_NEEDS.get(f"{group}={path.stem}", ())]
        for entry in entries(path):
            name, _, at = entry.lstrip("/").partition("@") if isinstance(entry, str) else ("", "", "")
            if name not in registry:  # another preset, _self_, or a choice of a group
                continue
            key = ".".join(p for p in (package, "" if at in ("", "_here_") else at) if p)
            short = name.split("_", 2)[-1]  # schema_net_conv: conv
            rank = (0 if default else 1, 0 if short == path.stem else 1 if short in path.stem else 2, path.stem)
            places.setdefault(name, []).append((rank, key, select))
    where: dict[type, tuple[str, list[str]]] = {}
    for name, schema in registry.items():
        if name in places:
            _, key, select = min(places[name], key=lambda p: p[0])
            where[schema] = (key, select)
    for schema, (key, select) in list(where.items()):  # a schema's fields typed by a schema (model.text)
        for f in dataclasses.fields(schema):
            kind = typing.get_type_hints(schema)[f.name]
            if dataclasses.is_dataclass(kind) and kind not in where:
                where[kind] = (f"{key}.{f.name}" if key else f.name, select)
    for schema in list(registry.values()):  # the bases: where the first descendant is
        for base in schema.__mro__:
            if dataclasses.is_dataclass(base) and base not in where:
                placed = next((s for s in where if issubclass(s, base)), None)
                if placed is not None:
                    where[base] = where[placed]
    return [(schema, key, select) for schema, (key, select) in where.items()]


def schema_cases() -> list[Case]:
    """For every schema field with a range or choices: values just outside them; and for every schema, a value
    of the wrong type for one field of each type it has."""
    where = schema_places()
    cases, seen = [], set()
    for schema, prefix, select in where:
        hints = typing.get_type_hints(schema)
        parents = [b for b in schema.__mro__[1:2] if dataclasses.is_dataclass(b)]
        inherited = {(f.name, f.default, tuple(f.metadata.items())) for p in parents for f in dataclasses.fields(p)}
        # the folders of frozen runs (model.clip=, model.autoencoder=; "???": omegaconf's MISSING) must be given
        # before a range is checked
        select = [*select, *(f"{prefix}.{f.name}=a-run-folder" for f in dataclasses.fields(schema)
                             if f.default == "???" and hints[f.name] is str and not f.name.startswith("_"))]
        for f in dataclasses.fields(schema):
            meta, key = dict(f.metadata), f"{prefix}.{f.name}" if prefix else f.name
            kind = str(hints[f.name])
            if not meta or (f.name, f.default, tuple(f.metadata.items())) in inherited:  # checked with the parent
                continue
            is_list, is_int = "list" in kind, "int" in kind and "float" not in kind
            bad = []
            for op, step in (("ge", -1), ("gt", 0), ("lt", 0), ("le", 1)):
                if op in meta:
                    bound = meta[op]
                    bad.append((op, bound + step if is_int or op in ("gt", "lt") else bound + step * 1e-3))
            if "choices" in meta:
                numbers = [c for c in meta["choices"] if isinstance(c, int)]
                bad.append(("choices", max(numbers) + 2 if numbers and all(isinstance(c, int) for c in meta["choices"])
                            else "64-true" if f.name == "precision" else "nope"))
            for op, value in bad:
                text = f"[{value}]" if is_list and not isinstance(value, str) else str(value)
                ident = (key, tuple(select), text)
                if ident not in seen:
                    seen.add(ident)
                    cases.append(Case(f"range:{key}={text}:{'+'.join(select)}", (*select, f"{key}={text}"), (key,),
                                      check=f"{op} {kind}"))
            # a wrong type is refused by the schema's type, the same check for every field of one type:
            # one case per schema and field type (the range cases above cover every field)
            wrong = "[1]" if "str" in kind and not is_list else "abc"
            if (key, tuple(select), wrong) not in seen and (schema, kind) not in seen:
                seen.add((key, tuple(select), wrong))
                seen.add((schema, kind))
                cases.append(Case(f"type:{key}={wrong}:{'+'.join(select)}", (*select, f"{key}={wrong}"), (key,),
                                  check=f"type {kind}"))
    return cases


def one_per_check(cases: list[Case]) -> list[Case]:
    """The first schema case of each kind of check: these run genlab-train; every schema case is also checked
    in-process (``test_every_schema_field_refuses_values_outside_its_range_naming_it``), through the
    same Hydra merge and ``validate``, at a fraction of the cost of a process each."""
    first: dict[str, Case] = {}
    for case in cases:
        first.setdefault(case.check, case)
    return list(first.values())


def group_cases() -> list[Case]:
    """An unknown choice for every config group, and the groups a run needs left out or set to null."""
    from genlab.config import conf_dir

    groups = sorted(p.name for p in conf_dir().iterdir() if p.is_dir() and p.name != "__pycache__")
    cases = [Case(f"group:{g}=nope", (f"{g}=nope",), (f"{g}=nope: {g} has no config 'nope'",))
             for g in [*groups, "hydra/launcher", "hydra/sweeper"]]
    for g in ("model", "data", "trainer", "paths"):
        cases.append(Case(f"group:~{g}", (f"~{g}",), (g,)))
        cases.append(Case(f"group:{g}=null", (f"{g}=null",), (f"{g}=null",)))
    cases.append(Case("group:model=1", ("model=1",), ("model=1",)))
    return cases


def c(ident: str, *args: str, expect: tuple[str, ...] | str, tool: str = "train") -> Case:
    return Case(ident, args, (expect,) if isinstance(expect, str) else expect, tool)


LR = "model.optimizer.lr"
EV = "callbacks.evaluator.metrics"
IL = "callbacks.image_logger"
STEP_LR = "{_target_:torch.optim.lr_scheduler.StepLR,_partial_:true"
OPTUNA = ("-m", "hparams_search=ae_optuna", "hydra.sweeper.n_trials=1")
HAND_CASES = [
    # keys added with + that no schema or constructor takes
    *[c(f"unknown:{k}", f"+{k}=1", expect=k) for k in (
        "new_key", "model.nope", "model.net.nope", "data.nope", "trainer.nope", "paths.nope", "model.optimizer.nope",
        "callbacks.evaluator.nope", f"{EV}.probes.nope", f"{IL}.nope", f"{IL}.latent.nope",
        "callbacks.model_checkpoint.nope", "logger.csv.nope", "callbacks.foo", "logger.foo")],
    c("unknown:logger.tensorboard.nope", "logger=tensorboard", "+logger.tensorboard.nope=1",
      expect="logger.tensorboard.nope"),
    c("unknown:+model.scheduler.nope", "+model.scheduler.nope=1", expect="model.scheduler"),
    c("target:model", "model._target_=genlab.models.nope.Nope", expect="model._target_"),
    c("target:callback", "+callbacks.foo._target_=genlab.nope.Foo", expect="callbacks.foo._target_"),
    c("target:metric-not-a-metric", f"+{EV}.mine._target_=builtins.dict", expect=f"{EV}.mine"),
    # the optimiser and the scheduler
    *[c(f"optimizer:lr={v}", f"{LR}={v}", expect=LR) for v in ("-1", "0", "abc", "inf", "nan")],
    c("optimizer:betas", "model.optimizer.betas=[2.0,0.9]", expect="model.optimizer"),
    c("optimizer:eps", "+model.optimizer.eps=-1", expect="model.optimizer"),
    c("optimizer:weight_decay", "+model.optimizer.weight_decay=-1", expect="model.optimizer"),
    c("optimizer:target", "model.optimizer._target_=torch.optim.Nope", expect="model.optimizer._target_"),
    c("optimizer:not-partial", "model.optimizer._partial_=false", expect="model.optimizer"),
    c("optimizer:abc", "model.optimizer=abc", expect="model.optimizer"),
    c("optimizer:null", "model.optimizer=null", expect="model.optimizer"),
    c("optimizer:removed", "~model.optimizer", expect="model.optimizer"),
    c("optimizer:gan-g-lr", "model=gan", "model.optimizer_g.lr=-1", expect="model.optimizer_g.lr"),
    c("optimizer:gan-d-abc", "model=gan", "model.optimizer_d=abc", expect="model.optimizer_d"),
    c("scheduler:abc", "model.scheduler=abc", expect="model.scheduler"),
    c("scheduler:missing-arg", f"model.scheduler={STEP_LR}}}", expect="model.scheduler"),
    c("scheduler:bad-arg", f"model.scheduler={STEP_LR},step_size:abc}}", expect="model.scheduler"),
    c("scheduler:not-partial", "model.scheduler={_target_:torch.optim.lr_scheduler.StepLR,step_size:2}",
      expect="model.scheduler"),
    # the trainer against Lightning's rules and this machine
    c("trainer:gpu", "trainer=gpu", expect=("trainer.accelerator", "trainer=cpu")),
    c("trainer:accelerator=cuda", "trainer.accelerator=cuda", expect="trainer=cpu"),
    c("trainer:accelerator=nope", "trainer.accelerator=nope", expect="trainer.accelerator"),
    c("trainer:accelerator=tpu", "trainer.accelerator=tpu", expect="trainer"),
    *[c(f"trainer:devices={v}", f"trainer.devices={v}", expect="trainer.devices")
      for v in ("0", "-2", "abc", "999", "[]")],
    *[c(f"trainer:precision={v}", f"trainer.precision={v}", expect="trainer.precision") for v in ("bf16-true", "16")],
    c("trainer:strategy=nope", "trainer.strategy=nope", expect=("trainer.strategy", "ddp")),
    c("trainer:ddp-devices=64", "trainer=ddp_cpu", "trainer.devices=64",
      expect="trainer.devices"),
    c("trainer:num_nodes=0", "trainer.num_nodes=0", expect="trainer.num_nodes"),
    c("trainer:gpu-ddp", "trainer=ddp_gpu", expect=("trainer.accelerator", "trainer=cpu")),
    c("trainer:limit_train=1.5", "trainer.limit_train_batches=1.5", expect="trainer.limit_train_batches"),
    c("trainer:limit_val=2.5", "trainer.limit_val_batches=2.5", expect="trainer.limit_val_batches"),
    c("trainer:limit_train=0", "trainer.limit_train_batches=0", expect="trainer.limit_train_batches"),
    c("trainer:max_epochs=0", "trainer.max_epochs=0", expect="trainer.max_epochs"),
    c("trainer:max_steps=0", "trainer.max_steps=0", expect="trainer.max_steps"),
    c("trainer:limit_train<1batch", "trainer.limit_train_batches=0.0001", expect="trainer.limit_train_batches"),
    c("trainer:limit_val<1batch", "trainer.limit_val_batches=0.0001", "data.val_fraction=0.5",
      expect="trainer.limit_val_batches"),
    c("trainer:val_check=1000", "trainer.val_check_interval=1000", expect="trainer.val_check_interval"),
    c("trainer:val_check=1.5", "trainer.val_check_interval=1.5", expect="trainer.val_check_interval"),
    c("trainer:min>max", "trainer.min_epochs=3", "trainer.max_epochs=1", expect="trainer.min_epochs"),
    *[c(f"trainer:max_time={v}", f"trainer.max_time={v}", expect="trainer.max_time")
      for v in ("abc", "00:00:00:00", "1:2:3")],
    c("trainer:fast_dev_run=-1", "trainer.fast_dev_run=-1", expect="trainer.fast_dev_run"),
    c("trainer:deterministic=abc", "trainer.deterministic=abc", expect="trainer.deterministic"),
    c("trainer:mps", "trainer.accelerator=mps", expect="trainer.accelerator"),
    c("trainer:two-player-accumulate", "model=gan", "data=toy2d", "trainer.accumulate_grad_batches=2",
      expect="trainer.accumulate_grad_batches"),
    c("trainer:two-player-clip", "model=gan", "data=toy2d", "trainer.gradient_clip_val=1",
      expect="trainer.gradient_clip_val"),
    # callbacks, the evaluator's metrics, the pictures
    c("callbacks:monitor=nope", "callbacks.model_checkpoint.monitor=nope", expect="callbacks.model_checkpoint.monitor"),
    c("callbacks:mode=sideways", "callbacks.model_checkpoint.mode=sideways", expect="callbacks.model_checkpoint"),
    c("callbacks:save_top_k=abc", "callbacks.model_checkpoint.save_top_k=abc",
      expect="callbacks.model_checkpoint.save_top_k"),
    *[c(f"metric:{k}={v}", f"{EV}.{k}={v}", expect=f"{EV}.{k}") for k, v in (
        ("sample_quality.n_samples", "1"), ("sample_quality.pr_k", "0"), ("sample_quality.kid_subsets", "0"),
        ("sample_quality.feature_network", "nope"), ("sample_quality.n_samples", "abc"),
        ("likelihood.samples", "0"), ("likelihood.chunk", "abc"), ("probes.knn_k", "0"), ("probes.max_train", "1"),
        ("code_usage.threshold", "-1"), ("mode_coverage.min_share", "0"), ("mode_coverage.n_samples", "0"),
        ("sample_classes.per_class", "0"), ("factors.max_train", "1"), ("reconstruction.pca_baseline", "abc"))],
    c("metric:pr_k>=n_samples", f"{EV}.sample_quality.n_samples=3", expect=f"{EV}.sample_quality.n_samples"),
    # arguments only the data can refuse: refused when it is set up, before training
    c("metric:knn_k>train", f"{EV}.probes.knn_k=100000", expect=f"{EV}.probes.knn_k=100000 exceeds the"),
    c("metric:novelty-knn_k>train", f"{EV}.novelty.knn_k=100000", "data.holdout_class=3",
      expect=f"{EV}.novelty.knn_k=100000 exceeds the"),
    c("metric:not-a-metric", f"+{EV}.mine=1", expect=f"{EV}.mine"),
    c("metric:noise_robustness", f"+{EV}.noise_robustness._target_=genlab.metrics.robustness.NoiseRobustness",
      f"+{EV}.noise_robustness.noise_level=-1", expect=f"{EV}.noise_robustness.noise_level"),
    c("metric:jacobian", f"+{EV}.jacobian._target_=genlab.metrics.robustness.EncoderJacobian",
      f"+{EV}.jacobian.top=0", expect=f"{EV}.jacobian.top"),
    *[c(f"pictures:{k}={v}", f"{IL}.{k}={v}", expect=f"{IL}.{k}") for k, v in (
        ("n_images", "-1"), ("n_points", "0"), ("seed", "-1"), ("latent.manifold_size", "0"),
        ("latent.manifold_range", "[0.9,0.1]"), ("latent.traversal_range", "0"), ("latent.traversal_steps", "1"),
        ("latent.arithmetic_classes", "[1,1]"), ("latent.embedding_points", "-1"), ("latent", "abc"),
        ("latent.interpolation_steps", "abc"))],
    # the model, the data options
    c("model:masking>1", "model=dae", "model.noise=masking", "model.noise_level=1.5", expect="model.noise_level"),
    c("model:salt>1", "model=dae", "model.noise=salt_and_pepper", "model.noise_level=2", expect="model.noise_level"),
    c("model:hidden=-5", "model.net.hidden=[512,-5]", expect="model.net.hidden"),
    c("data:val_fraction", "data.val_fraction=0.9999", expect="data.val_fraction"),
    c("data:noise=inf", "data=toy2d", "data.noise=inf", expect="data.noise"),
    c("data:noise=nan", "data=toy2d", "data.noise=nan", expect="data.noise"),
    c("data:holdout", "data.holdout_class=11", expect="data.holdout_class"),
    c("data:no-test", "data=toy2d", "data.n_samples=1", expect="test sample"),
    c("data:shapes", "data=shapes", "data.shapes=[nope]", expect="data.shapes"),
    c("data:colour", "data=shapes_colour", "data.colour_a=[1.0,0.5]", expect="data.colour_a"),
    # run modes and the top level
    c("mode:nothing", "train=false", "test=false", expect=("train=false", "test=false")),
    c("top:matmul=low", "float32_matmul_precision=low", expect="float32_matmul_precision"),
    c("top:seed=1.5", "seed=1.5", expect="seed"),
    c("top:tags=abc", "tags=abc", expect="tags"),
    c("top:+hydra.nope", "+hydra.nope=1", expect="nope"),
    c("evaluator:metrics=abc", "callbacks.evaluator.metrics=abc", expect="callbacks.evaluator.metrics"),
    # folders: files, below files, where nothing can be made, names that escape
    c("paths:log_dir=file", "paths.log_dir={slot}/afile", expect="paths.log_dir"),
    c("paths:log_dir=under-file", "paths.log_dir={slot}/afile/sub", expect="paths.log_dir"),
    c("paths:log_dir=proc", "paths.log_dir=/proc/genlab-fuzz", expect="paths.log_dir"),
    c("paths:cache_dir=file", "paths.cache_dir={slot}/afile", expect="paths.cache_dir"),
    c("paths:cache_dir=proc", "paths.cache_dir=/proc/genlab-fuzz", expect="paths.cache_dir"),
    c("paths:classifiers=file", "paths.cache_dir={data}/cache_with_file", expect="paths.cache_dir"),
    c("paths:classifier_cache=file", "callbacks.evaluator.classifier_cache={slot}/afile",
      expect="callbacks.evaluator.classifier_cache"),
    c("paths:cached-classifier=folder", "paths.cache_dir={data}/cache_with_folder", expect="digits-0.pt"),
    c("paths:output_dir", "paths.output_dir={slot}/elsewhere", expect="paths.output_dir"),
    c("paths:run.dir=file", "hydra.run.dir={slot}/afile", expect="hydra.run.dir"),
    c("paths:checkpoint-dirpath=file", "callbacks.model_checkpoint.dirpath={slot}/afile",
      expect="callbacks.model_checkpoint.dirpath"),
    c("paths:logger-save_dir=file", "logger.csv.save_dir={slot}/afile/x", expect="logger.csv.save_dir"),
    c("paths:log_dir=read-only", "paths.log_dir={data}/read_only/outputs", expect="paths.log_dir"),
    c("evaluator:classifier_epochs=-1", "callbacks.evaluator.classifier_epochs=-1",
      expect="callbacks.evaluator.classifier_epochs"),
    *[c(f"paths:task_name={v[:12]}", f"task_name={v}", expect="task_name") for v in (
        "x" * 300, "../../x", "a/b", ".", "..", "", ".hidden", "a b")],
    # sweeps: the sweeper's and launcher's settings, and jobs that all fail
    c("sweep:all-jobs-fail", "-m", "model.latent_dim=-1,-2", expect="model.latent_dim"),
    # one bad job of a grid: refused before the first job runs (no sweep folder), the job named
    c("sweep:one-bad-job", "-m", "model.latent_dim=8,-1", expect="job #1 of the sweep (model.latent_dim=-1)"),
    c("sweep:optuna-metric-name", *OPTUNA, "optimized_metric=val_loss", expect="optimized_metric=val_loss"),
    c("sweep:optuna-n_trials=0", *OPTUNA, "hydra.sweeper.n_trials=0", expect="hydra.sweeper.n_trials"),
    c("sweep:optuna-n_trials=-1", *OPTUNA, "hydra.sweeper.n_trials=-1", expect="hydra.sweeper.n_trials"),
    c("sweep:optuna-n_jobs=0", *OPTUNA, "hydra.sweeper.n_jobs=0", expect="hydra.sweeper.n_jobs"),
    c("sweep:optuna-direction", *OPTUNA, "hydra.sweeper.direction=up", expect="hydra.sweeper.direction"),
    c("sweep:optuna-no-metric", *OPTUNA, "optimized_metric=null", expect="optimized_metric"),
    c("sweep:optuna-adversarial-val-loss", *OPTUNA, "model=gan", expect="the val/loss of GAN is an adversarial"),
    c("sweep:joblib-n_jobs=0", "-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=0", "model=ae,pca",
      expect="hydra.launcher.n_jobs"),
    c("sweep:task_name", "-m", "task_name=../x", "seed=0,1", expect="task_name"),
    c("sweep:log_dir=file", "-m", "paths.log_dir={slot}/afile", "seed=0,1", expect="paths.log_dir"),
    c("sweep:subdir", "-m", "hydra.sweep.subdir=../../x", "seed=0,1", expect="hydra.sweep.subdir"),
    c("sweep:sweeper=nope", "-m", "hydra/sweeper=nope", "seed=0,1", expect="hydra/sweeper has no config"),
    c("sweep:bad-seeds", "-m", "seed=-1,-2", expect="seed"),
    c("sweep:joblib-jobs-fail", "-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "model.latent_dim=-1,-2",
      expect="model.latent_dim"),
    c("sweep:sweep.dir=file", "-m", "hydra.sweep.dir={slot}/afile", "seed=0,1", expect="hydra.sweep.dir"),
    c("sweep:null-choice", "-m", "model=ae,null", expect="model=ae,null"),
]


def data_cases() -> list[Case]:
    """Crafted data files (written by ``crafted_data``), each named in the message."""
    mnist = [(name, f"{{data}}/{name}", f"{{data}}/{name}/MNIST/raw/{file}") for name, file in (
        ("count", "train-labels-idx1-ubyte"), ("size20", "train-images-idx3-ubyte"),
        ("label200", "train-labels-idx1-ubyte"), ("trunc_images", "train-images-idx3-ubyte"),
        ("trunc_labels", "t10k-labels-idx1-ubyte"), ("magic", "train-images-idx3-ubyte"),
        ("empty", "train-images-idx3-ubyte"), ("trailing", "t10k-images-idx3-ubyte"))]
    cases = [Case(f"mnist:{name}", ("data=mnist", f"data.root={root}"), (file,)) for name, root, file in mnist]
    cases.append(Case("mnist_colour:count", ("data=mnist_colour", "data.root={data}/count"),
                      ("{data}/count/MNIST/raw/train-labels-idx1-ubyte",)))
    cases.append(Case("fashion:size20", ("data=fashion_mnist", "data.root={data}/fashion20"),
                      ("{data}/fashion20/FashionMNIST/raw/train-images-idx3-ubyte",)))
    folder = "data=image_folder"
    cases += [
        Case("folder:train-only", (folder, "data.path={data}/train_only"), ("{data}/train_only", "test/")),
        Case("folder:test-only", (folder, "data.path={data}/test_only"), ("{data}/test_only", "train/")),
        Case("folder:bomb", (folder, "data.path={data}/bomb"), ("{data}/bomb/a/bomb.png", "decompression bomb")),
        Case("folder:bomb-warning", (folder, "data.path={data}/bomb_warn"), ("{data}/bomb_warn/a/bomb.png",)),
        Case("folder:bomb-header", (folder, "data.path={data}/bomb", "data.image_size=null"), ("bomb.png",)),
        Case("folder:corrupt", (folder, "data.path={data}/corrupt"), ("{data}/corrupt/a/bad.png",)),
        Case("folder:empty", (folder, "data.path={data}/no_images"), ("{data}/no_images",)),
        Case("folder:is-file", (folder, "data.path={slot}/afile"), ("afile",)),
        Case("unpaired:missing", ("data=unpaired_folder", "model=cyclegan", "data.path={data}/unpaired_missing"),
             ("testB",)),
        Case("unpaired:bomb", ("data=unpaired_folder", "model=cyclegan", "data.path={data}/unpaired_bomb"),
             ("bomb.png",)),
    ]
    return cases


def tool_cases() -> list[Case]:
    """genlab-eval and genlab-report on bad folders, damaged records and outputs that cannot be written."""
    cases = []
    for tool in ("eval", "report"):
        for name, path, expect in (
            ("missing", "{data}/nowhere", "nowhere"), ("file", "{slot}/afile", "afile"),
            ("not-a-run", "{data}/no_images", "no genlab run"), ("bad-json", "{data}/runs/bad_json", "metrics.json"),
            ("json-list", "{data}/runs/json_list", "metrics.json"), ("json-strings", "{data}/runs/json_strings",
                                                                     "metrics.json"),
            ("bad-overrides", "{data}/runs/bad_overrides", "overrides.yaml"),
        ):
            cases.append(Case(f"{tool}:{name}", (path,), (expect,), tool))
    cases += [
        Case("eval:bad-yaml", ("{data}/runs/bad_yaml",), ("config.yaml",), "eval"),
        Case("eval:yaml-list", ("{data}/runs/yaml_list",), ("config.yaml",), "eval"),
        Case("eval:no-checkpoint", ("{data}/runs/no_checkpoint",), ("no checkpoint",), "eval"),
        Case("eval:out-folder", ("{run}", "--out", "{slot}"), ("--out",), "eval"),
        Case("eval:out-under-file", ("{run}", "--out", "{slot}/afile/t.csv"), ("--out",), "eval"),
        Case("eval:out-proc", ("{run}", "--out", "/proc/genlab-fuzz/t.csv"), ("--out",), "eval"),
        Case("eval:n-samples=1", ("{run}", "--n-samples", "1"), ("--n-samples",), "eval"),
        Case("eval:n-samples=abc", ("{run}", "--n-samples", "abc"), ("--n-samples",), "eval"),
        Case("eval:device=cuda", ("{run}", "--device", "cuda"), ("--device",), "eval"),
        Case("eval:device=nope", ("{run}", "--device", "nope"), ("--device",), "eval"),
        Case("eval:no-args", (), ("RUN_DIR",), "eval"),
        Case("report:confidence=1.5", ("{run}", "--confidence", "1.5"), ("--confidence",), "report"),
        Case("report:confidence=abc", ("{run}", "--confidence", "abc"), ("--confidence",), "report"),
        Case("report:out-file", ("{run}", "--out", "{slot}/afile"), ("--out",), "report"),
        Case("report:out-under-file", ("{run}", "--out", "{slot}/afile/r"), ("--out",), "report"),
        Case("report:metric", ("{run}", "--metric", "test/nope"), ("test/nope",), "report"),
        Case("report:no-metrics", ("{data}/runs/no_metrics",), ("metrics.json",), "report"),
        Case("report:no-args", (), ("SWEEP_DIR",), "report"),
    ]
    return cases


TOOLS = {"eval": "genlab.evaluate", "report": "genlab.report", "sample": "genlab.sample"}


def cli_option_cases() -> list[Case]:
    """For every option of genlab-eval, genlab-report and genlab-sample, read from their parsers (a new
    option is fuzzed without a line here): the value left out, a value of the wrong type, one outside what
    the type allows (-1 for counts, indices and seeds; nan for fractions; a file below a file for paths; an
    unknown name for words), a value given to a flag, and an option no tool has."""
    import argparse
    import importlib

    cases = []
    for tool, module in TOOLS.items():
        for action in importlib.import_module(module).parser()._actions:
            if not action.option_strings or isinstance(action, argparse._HelpAction):
                continue
            opt = max(action.option_strings, key=len)
            if action.nargs == 0:  # a flag: it takes no value
                cases.append(Case(f"{tool}:{opt}=1", ("{run}", f"{opt}=1"), (opt,), tool))
                continue
            bad = {int: ["abc", "-1"], float: ["abc", "nan"], Path: ["{slot}/afile/x.png"]}.get(action.type, ["nope"])
            cases.append(Case(f"{tool}:{opt}:no-value", ("{run}", opt), (opt,), tool))
            cases += [Case(f"{tool}:{opt}={value}", ("{run}", opt, value), (opt,), tool) for value in bad]
        cases.append(Case(f"{tool}:--nope", ("{run}", "--nope"), ("--nope",), tool))
    return cases


CKPT = "{data}/ckpt"
CHECKPOINT_CASE_LIST = [
    *[Case(f"ckpt:{name}", (f"ckpt_path={path}",), (expect,)) for name, path, expect in (
        ("missing", f"{CKPT}/missing.ckpt", "missing.ckpt"), ("empty", f"{CKPT}/empty.ckpt", "empty.ckpt"),
        ("random", f"{CKPT}/random.ckpt", "random.ckpt"), ("truncated", f"{CKPT}/truncated.ckpt", "truncated.ckpt"),
        ("plain-dict", f"{CKPT}/dict.ckpt", "dict.ckpt"), ("directory", f"{CKPT}", "ckpt"),
        ("malicious", f"{CKPT}/malicious.ckpt", "malicious.ckpt"), ("best", "best", "ckpt_path"))],
    Case("ckpt:other-model", ("model=vae", f"ckpt_path={CKPT}/ae.ckpt"), ("ae.ckpt",)),
    Case("ckpt:other-latent", ("model.latent_dim=8", f"ckpt_path={CKPT}/ae.ckpt"), ("ae.ckpt",)),
    Case("eval:corrupt-checkpoint", ("{data}/runs/corrupt_ckpt",), ("corrupt_ckpt/checkpoints/",), "eval"),
    Case("eval:other-model-checkpoint", ("{data}/runs/vae_with_ae_ckpt",), ("vae_with_ae_ckpt/checkpoints/",), "eval"),
    Case("eval:malicious-checkpoint", ("{data}/runs/malicious_ckpt",), ("malicious_ckpt/checkpoints/", "--trust"),
         "eval"),
    Case("eval:convert-untrusted", ("{run}", "--convert"), ("--convert", "--trust"), "eval"),
    c("ckpt:last", "ckpt_path=last", expect=("ckpt_path=last", "resume=")),
]
# resume=: genlab-train with only the output folders set (a resumed run takes no other overrides)
RESUME_CASES = [Case(f"resume:{name}", (f"resume={path}", *extra), expect, "resume") for name, path, extra, expect in (
    ("missing", "{data}/nowhere", (), ("nowhere",)),
    ("file", "{slot}/afile", (), ("afile",)),
    ("not-a-run", "{data}/no_images", (), ("no_images",)),
    ("no-checkpoint", "{data}/runs/no_checkpoint", (), ("no_checkpoint", "checkpoints/last.ckpt")),
    ("corrupt-checkpoint", "{data}/runs/corrupt_ckpt", (), ("corrupt_ckpt/checkpoints/last.ckpt", "damaged")),
    ("malicious-checkpoint", "{data}/runs/malicious_ckpt", (), ("malicious_ckpt/checkpoints/last.ckpt", "--trust")),
    ("bad-yaml", "{data}/runs/bad_yaml", (), ("config.yaml",)),
    ("other-overrides", "{run}", ("model.latent_dim=3",), ("model.latent_dim",)),
    ("bad-max-epochs", "{run}", ("trainer.max_epochs=-5",), ("trainer.max_epochs",)),
)]


def all_cases(schema: list[Case]) -> list[Case]:
    generated = {case.id for case in cli_option_cases()}  # a hand case of the same id gives way
    return [*one_per_check(schema), *group_cases(), *HAND_CASES, *data_cases(),
            *(case for case in tool_cases() if case.id not in generated), *cli_option_cases(),
            *CHECKPOINT_CASE_LIST, *RESUME_CASES]


# ---- the files the cases read -------------------------------------------------------------------
def png_header(width: int, height: int) -> bytes:
    """A small PNG announcing width x height pixels (an IHDR, a few bytes of IDAT, IEND): what PIL reads
    before it decides whether the image is a decompression bomb."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def write_mnist(root: Path, folder: str = "MNIST", n: int = 32, size: int = 28, labels: np.ndarray | None = None,
                n_labels: int | None = None) -> Path:
    """A data.root with IDX files in torchvision's layout (train and t10k); returns the raw folder."""
    from conftest import write_idx

    raw = root / folder / "raw"
    rng = np.random.default_rng(0)
    for prefix in ("train", "t10k"):
        y = labels if labels is not None and prefix == "train" else rng.integers(0, 10, n_labels or n, dtype=np.uint8)
        write_idx(raw, prefix, rng.integers(0, 255, (n, size, size), dtype=np.uint8), y)
    return raw


def image(path: Path, colour: int = 90) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (12, 12), (colour, 200, 90)).save(path)


RANDOM_BYTES = np.random.default_rng(0).bytes(4096)  # a damaged file, the same in every run of the test


def crafted_data(data: Path, template: Path) -> None:
    """Every bad file a case reads, under ``data`` (``template``: a real finished run to damage copies of)."""
    write_mnist(data / "count", n_labels=31)
    write_mnist(data / "size20", size=20)
    write_mnist(data / "label200", labels=np.full(32, 200, dtype=np.uint8))
    write_mnist(data / "fashion20", folder="FashionMNIST", size=20)
    for name, file, change in (("trunc_images", "train-images-idx3-ubyte", lambda b: b[:-100]),
                               ("trunc_labels", "t10k-labels-idx1-ubyte", lambda b: b[:-5]),
                               ("magic", "train-images-idx3-ubyte", lambda b: b"\x00\x00\x09\x03" + b[4:]),
                               ("empty", "train-images-idx3-ubyte", lambda b: b""),
                               ("trailing", "t10k-images-idx3-ubyte", lambda b: b + b"\x00" * 7)):
        raw = write_mnist(data / name)
        (raw / file).write_bytes(change((raw / file).read_bytes()))
    for name in ("train_only/train/a", "test_only/test/a", "bomb/a", "bomb_warn/a", "corrupt/a"):
        image(data / name / "ok.png")
    (data / "no_images").mkdir()
    (data / "bomb/a/bomb.png").write_bytes(png_header(20000, 20000))  # 4e8 pixels: over twice PIL's limit
    (data / "bomb_warn/a/bomb.png").write_bytes(png_header(10000, 10000))  # 1e8: over the limit, under twice
    (data / "corrupt/a/bad.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    for sub in ("trainA", "trainB", "testA"):
        image(data / "unpaired_missing" / sub / "x.png")
    for sub in ("trainA", "trainB", "testA", "testB"):
        image(data / "unpaired_bomb" / sub / "x.png")
    (data / "unpaired_bomb/testB/bomb.png").write_bytes(png_header(20000, 20000))
    for i in range(6):
        image(data / "images" / f"{i}.png", 40 * i)
    (data / "cache_with_file").mkdir()
    (data / "cache_with_file/classifiers").write_text("not a folder")
    (data / "cache_with_folder/classifiers/digits-0.pt").mkdir(parents=True)  # a folder where a file belongs
    (data / "read_only").mkdir()
    (data / "read_only").chmod(0o555)
    runs = data / "runs"
    damage = {
        "bad_json": lambda r: (r / "metrics.json").write_text("{not json"),
        "json_list": lambda r: (r / "metrics.json").write_text("[1, 2]"),
        "json_strings": lambda r: (r / "metrics.json").write_text('{"metrics": {"test/x": "abc"}}'),
        "bad_overrides": lambda r: (r / ".hydra/overrides.yaml").write_text("- [unclosed"),
        "bad_yaml": lambda r: (r / ".hydra/config.yaml").write_text("model: [unclosed\n  data: {"),
        "yaml_list": lambda r: (r / ".hydra/config.yaml").write_text("- 1\n- 2\n"),
        "no_checkpoint": lambda r: shutil.rmtree(r / "checkpoints"),
        "no_metrics": lambda r: (r / "metrics.json").unlink(),
        "corrupt_ckpt": lambda r: [p.write_bytes(RANDOM_BYTES) for p in (r / "checkpoints").glob("*.ckpt")],
        "vae_with_ae_ckpt": lambda r: swap_model(r / ".hydra/config.yaml"),
        "malicious_ckpt": lambda r: [p.write_bytes(malicious_pickle(data / "PWNED"))
                                     for p in (r / "checkpoints").glob("*.ckpt")],
    }
    for name, change in damage.items():
        shutil.copytree(template, runs / name)
        change(runs / name)
    ckpt = data / "ckpt"
    ckpt.mkdir()
    real = sorted((template / "checkpoints").glob("*.ckpt"))[0].read_bytes()
    (ckpt / "empty.ckpt").write_bytes(b"")
    (ckpt / "random.ckpt").write_bytes(RANDOM_BYTES)
    (ckpt / "truncated.ckpt").write_bytes(real[: len(real) // 2])
    (ckpt / "ae.ckpt").write_bytes(real)
    (ckpt / "malicious.ckpt").write_bytes(malicious_pickle(data / "PWNED"))
    import torch

    torch.save({"just": "a dict"}, ckpt / "dict.ckpt")


def swap_model(config: Path) -> None:
    """A run's config naming the VAE where its checkpoint holds an autoencoder."""
    config.write_text(config.read_text().replace("genlab.models.autoencoder.Autoencoder", "genlab.models.vae.VAE"))


def malicious_pickle(marker: Path) -> bytes:
    """A pickle that, if unpickled with code execution allowed, writes ``marker``."""
    import pickle

    class Payload:
        def __reduce__(self) -> tuple:
            return (Path.write_text, (marker, "pwned"))

    return pickle.dumps(Payload())


def tree_digest(folder: Path) -> str:
    """A digest of every file's relative path and bytes under ``folder``."""
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        h.update(str(p.relative_to(folder)).encode())
        if p.is_file():
            h.update(p.read_bytes())
    return h.hexdigest()


def run_folders(slot: Path) -> list[str]:
    """Every run or sweep folder below a slot (the existing run included)."""
    found = [*slot.glob("**/runs/*"), *slot.glob("**/multiruns/*")]
    return sorted(str(p.relative_to(slot)) for p in found if p.is_dir())


# ---- the driver: one process that forks a fresh child per case -------------------------------------
BASE_ARGS = ("logger=csv", "trainer.enable_progress_bar=false", "trainer.max_epochs=1",
             "trainer.limit_train_batches=2", "trainer.limit_val_batches=2", "trainer.limit_test_batches=2",
             "data.max_train=64")


def expand(text: str, slot: Path, data: Path, run: Path) -> str:
    return text.replace("{slot}", str(slot)).replace("{data}", str(data)).replace("{run}", str(run))


def command(case: dict, slot: Path, data: Path, run: Path, cache: Path) -> list[str]:
    """The case's arguments; genlab-train's get the slot's folders and a short run first (unless it sets them)."""
    args = [expand(a, slot, data, run) for a in case["args"]]
    if case["tool"] not in ("train", "resume"):
        return args
    given = {a.lstrip("+~").split("=", 1)[0] for a in args}
    base = [f"paths.log_dir={slot}/outputs", f"paths.cache_dir={cache}"]
    base += list(BASE_ARGS) if case["tool"] == "train" else []
    flags = [a for a in args if a.startswith("-")]  # Hydra's flags (-m) before the overrides
    return flags + [a for a in base if a.split("=", 1)[0] not in given] + [a for a in args if a not in flags]


def child(case: dict, argv: list[str], slot: Path) -> None:
    """In the forked child: run the tool as its console script would, output to the slot's file, and exit as
    it would (atexit handlers run: genlab's sweep clean-up is one); never returns."""
    code = 1
    try:
        os.chdir(slot / "cwd")
        fd = os.open(slot / "case.out", os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        import torch

        torch.set_num_threads(1)
        try:
            if case["tool"] in ("train", "resume"):
                from genlab import train

                sys.argv = ["genlab-train", *argv]
                train.main()
            else:
                module = __import__(TOOLS[case["tool"]], fromlist=["main"])
                module.main(argv)
            code = 0
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
            if not isinstance(e.code, (int, type(None))):
                print(e.code, file=sys.stderr)  # as the interpreter prints sys.exit("message")
    except BaseException:
        import traceback

        traceback.print_exc()
        code = 99
    # what the interpreter's exit does that a user sees: atexit handlers and flushed output; its teardown of
    # every module (1.3 s a case, as the pages the parent shares are copied) is left out
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def drive(cases_file: Path, results_file: Path, slots: list[Path]) -> None:
    """The zygote: import everything once, then run each case in a forked child, one per slot at a time,
    and record its exit code, output, duration, leftover folders and whether the slot's run changed."""
    os.environ.pop("HYDRA_FULL_ERROR", None)
    import hydra_plugins.hydra_joblib_launcher.joblib_launcher  # noqa: F401  (imported once, here)
    import hydra_plugins.hydra_optuna_sweeper.optuna_sweeper  # noqa: F401
    import pytorch_lightning  # noqa: F401

    import genlab.callbacks.images  # noqa: F401
    import genlab.evaluate  # noqa: F401
    import genlab.report  # noqa: F401
    import genlab.train  # noqa: F401

    spec = json.loads(cases_file.read_text())
    data, cache, cases = Path(spec["data"]), Path(spec["cache"]), list(spec["cases"])
    runs = {str(s): next(p for p in (s / "outputs/train/runs").iterdir()) for s in slots}
    before = {str(s): (run_folders(s), tree_digest(runs[str(s)])) for s in slots}
    busy: dict[int, tuple[Path, dict, float]] = {}
    free = list(slots)
    with results_file.open("w") as out:
        while cases or busy:
            while cases and free:
                slot, case = free.pop(), cases.pop(0)
                argv = command(case, slot, data, runs[str(slot)], cache)
                pid = os.fork()
                if pid == 0:
                    child(case, argv, slot)
                busy[pid] = (slot, case, time.monotonic())
            pid, status = os.waitpid(-1, os.WNOHANG)
            if pid == 0:
                for other, (_, _, start) in busy.items():
                    if time.monotonic() - start > CASE_TIMEOUT:
                        os.kill(other, 9)
                time.sleep(0.01)
                continue
            slot, case, start = busy.pop(pid)
            code = os.waitstatus_to_exitcode(status)
            folders, digest = before[str(slot)]
            result = {"id": case["id"], "rc": code, "seconds": round(time.monotonic() - start, 2),
                      "out": (slot / "case.out").read_text(errors="replace"),
                      "leftover": sorted(set(run_folders(slot)) - set(folders)),
                      "modified": tree_digest(runs[str(slot)]) != digest}
            for extra in result["leftover"]:  # the next case starts clean
                shutil.rmtree(slot / extra, ignore_errors=True)
            out.write(json.dumps(result) + "\n")
            out.flush()
            free.append(slot)


if __name__ == "__main__":
    drive(Path(sys.argv[1]), Path(sys.argv[2]), [Path(s) for s in sys.argv[3:]])


# ---- the tests -------------------------------------------------------------------------------------
SCHEMA_CASES = schema_cases()  # every one checked in-process, one of each kind as a command
CASES = all_cases(SCHEMA_CASES)
# root makes folders in read-only ones: that case would train instead of failing, so it is not run
NOT_RUN = frozenset({"paths:log_dir=read-only"} if os.geteuid() == 0 else ())


@pytest.fixture(scope="session")
def fuzz_results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    """Every case's result: a real finished run is made once, copied into each slot, and the crafted files
    written; then the driver runs all cases."""
    base = tmp_path_factory.mktemp("fuzz")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(PROJECT), str(PROJECT / "tests")]),
           "PYTHONWARNINGS": "ignore"}
    env.pop("HYDRA_FULL_ERROR", None)
    template_root, cache = base / "template", base / "cache"
    made = subprocess.run(
        [sys.executable, "-m", "genlab.train", f"paths.log_dir={template_root}", f"paths.cache_dir={cache}",
         "trainer=debug", "callbacks=model_checkpoint", *BASE_ARGS],
        capture_output=True, text=True, cwd=base, env=env, timeout=300)
    assert made.returncode == 0, made.stderr[-2000:]
    (template,) = (template_root / "train" / "runs").iterdir()
    assert (template / "metrics.json").is_file() and list((template / "checkpoints").glob("*.ckpt"))
    data = base / "data"
    crafted_data(data, template)
    slots = []
    for i in range(SLOTS):
        slot = base / f"slot{i}"
        shutil.copytree(template, slot / "outputs" / "train" / "runs" / template.name)
        (slot / "cwd").mkdir()
        (slot / "afile").write_text("a file where a folder is expected")
        slots.append(slot)
    spec = {"data": str(data), "cache": str(cache),
            "cases": [dataclasses.asdict(case) for case in CASES if case.id not in NOT_RUN]}
    (base / "cases.json").write_text(json.dumps(spec))
    started = time.monotonic()
    subprocess.run([sys.executable, __file__, str(base / "cases.json"), str(base / "results.jsonl"),
                    *map(str, slots)], env=env, cwd=base, timeout=1200, check=True)
    results = {r["id"]: r for r in map(json.loads, (base / "results.jsonl").read_text().splitlines())}
    results["_meta"] = {"seconds": time.monotonic() - started, "data": str(data), "pwned": (data / "PWNED").exists()}
    slowest = sorted((r for r in results.values() if "id" in r), key=lambda r: -r["seconds"])[:15]
    print(f"\nfuzz: {len(CASES)} cases in {results['_meta']['seconds']:.0f} s; slowest: "
          + ", ".join(f"{r['id']} {r['seconds']:.1f} s" for r in slowest))
    return results


def marks(case: Case) -> list:
    if case.id in NOT_RUN:
        return [pytest.mark.skip(reason="root writes in read-only folders")]
    return []


def error_message(out: str) -> str:
    """The error a case ended with: from genlab's (or argparse's) "<tool>: error:" line on, else Hydra's own
    message; never the lines that only echo the command line back."""
    lines = out.splitlines()
    start = next((i for i, line in enumerate(lines) if re.match(r"genlab-\w+: error:", line)), None)
    if start is not None:
        return "\n".join(lines[start:])
    return "\n".join(line for line in lines if not line.startswith("Error executing job with overrides"))


@pytest.mark.parametrize("case", [pytest.param(case, id=case.id, marks=marks(case)) for case in CASES])
def test_bad_input_fails_cleanly(fuzz_results: dict[str, dict], case: Case) -> None:
    result = fuzz_results[case.id]
    out = result["out"]
    assert result["rc"] != 0, f"exit 0:\n{out[-1500:]}"
    assert "Traceback" not in out, out[-3000:]
    if not case.id.endswith(":--nope"):  # the one case meant to give an option no tool has
        assert "unrecognized arguments" not in out, out[-1500:]  # the case itself is wrong
    message, data = error_message(out), fuzz_results["_meta"]["data"]
    for text in case.expect:
        text = text.replace("{data}", data)
        assert text in message, (text, message[-1500:])
    assert not result["leftover"], result["leftover"]
    assert not result["modified"], "the existing run was modified"


_composed: dict[tuple[str, ...], typing.Any] = {}


def composed(select: tuple[str, ...], tmp: Path) -> typing.Any:
    """The config a run with these overrides gets (composed once per selection), with its folders set."""
    from hydra import compose, initialize_config_dir
    from omegaconf import open_dict

    from genlab.config import conf_dir, validate

    if select not in _composed:
        with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
            cfg = compose("train", overrides=[*BASE_ARGS, *select])
        with open_dict(cfg):
            cfg.paths.output_dir, cfg.paths.log_dir = str(tmp / "run"), str(tmp / "logs")
        validate(cfg)  # the selection alone is valid: the case's override is what is refused
        _composed[select] = cfg
    return _composed[select]


@pytest.mark.parametrize("case", [pytest.param(case, id=case.id) for case in SCHEMA_CASES])
def test_every_schema_field_refuses_values_outside_its_range_naming_it(case: Case, tmp_path_factory) -> None:
    """Every range and type case, through what genlab-train does with it after composing: Hydra merges the
    override into the composed config (a wrong type fails there) and ``validate`` checks ranges and choices.
    The full command line (short error, exit code, no folder left) is run for one case of each kind above."""
    import copy

    from hydra._internal.config_loader_impl import ConfigLoaderImpl
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import ConfigCompositionException

    from genlab.config import validate
    from genlab.errors import UserError

    tmp = tmp_path_factory.getbasetemp() / "schema-cases"
    *select, override = (a.replace("{data}", str(tmp / "data")) for a in case.args)
    cfg = copy.deepcopy(composed(tuple(select), tmp))
    with pytest.raises((UserError, ConfigCompositionException)) as refused:
        ConfigLoaderImpl._apply_overrides_to_config(OverridesParser.create().parse_overrides([override]), cfg)
        validate(cfg)
    message = str(refused.value)
    for text in case.expect:
        assert text in message, (text, message)


def test_fuzz_covers_enough_cases_in_time(fuzz_results: dict[str, dict]) -> None:
    assert len(CASES) >= 200 and len({case.id for case in CASES}) == len(CASES)
    assert len(SCHEMA_CASES) >= 250 and len({case.id for case in SCHEMA_CASES}) == len(SCHEMA_CASES)
    assert not fuzz_results["_meta"]["pwned"], "a checkpoint's pickle ran code"
    assert fuzz_results["_meta"]["seconds"] < 600


def test_summary_gives_no_absurd_ratio_when_pca_is_exact(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    from genlab.run import print_summary

    for model, pca, expected in ((2.0, 1e-13, "~0"), (2.0, 0.001, "2e+03x"), (2.2, 2.0, "+10.0% vs PCA")):
        result = {"model": "ae", "data": "digits", "seed": 0, "best_checkpoint": None,
                  "metrics": {"test/sq_err_per_image": model, "test/pca_sq_err_per_image": pca}}
        print_summary(result, tmp_path, [])
        line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("test squared error"))
        assert expected in line and "e+1" not in line, line
