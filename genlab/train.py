"""genlab-train: compose the config, train, test the best checkpoint (the latest for models whose
val/loss cannot rank them), write the metrics.

    genlab-train                                   # the default: an MLP autoencoder on digits
    genlab-train model=conv_ae data=mnist data.root=/path/to/mnist
    genlab-train -m model=ae,dae seed=0,1           # one directory and metrics.json per job
    genlab-train resume=outputs/train/runs/<run>    # continue a run in its folder, bit for bit

Only Hydra and the config schemas are imported at start: ``--help`` and shell completion never
load torch or Lightning, which ``train`` imports when a run really starts.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import hydra
from omegaconf import DictConfig

from genlab.config import CONFIG_PATH, is_run, setup_hydra, validate
from genlab.errors import IncompatibleError, UserError, WriteFailed, stopped_early_in
from genlab.files import write_error
from genlab.runfolder import RunFolder, discard_failed_run
from genlab.signals import defer_signals, raise_deferred, stoppable

setup_hydra()


def train(cfg: DictConfig) -> dict[str, Any]:
    """The recipe. Returns the metrics written to ``metrics.json``."""
    from contextlib import nullcontext

    from genlab import run
    from genlab.safety import set_user_trust

    set_user_trust(cfg.trust)  # this command's, never a resumed folder's: frozen components read it
    validate(cfg)  # types were checked while composing; ranges and choices here
    run.RESUMED_CHOICES.clear()  # an earlier run's in this process (a sweep, the tests) never names this one
    if cfg.get("resume"):  # the run's own config, from its last checkpoint
        cfg = run.resumed_config(cfg)
    # one process in a run folder at a time (the other processes of a data-parallel run are its own)
    with RunFolder(cfg.paths.output_dir).lock() if run.is_main_process() else nullcontext():
        return fit_and_test(cfg)


def fit_and_test(cfg: DictConfig) -> dict[str, Any]:
    """Build the data and the model, fit, test the checkpoint to test, write the run's records."""
    from contextlib import nullcontext

    import pytorch_lightning as pl
    import torch

    from genlab import run
    from genlab.callbacks.evaluator import Evaluator
    from genlab.callbacks.interrupt import raise_pending, stopping_at_once_in_the_test

    run.smoke_budget(cfg)  # debug=fast: a token evaluation too
    run.route_framework_logs()
    torch.set_float32_matmul_precision(cfg.float32_matmul_precision)
    pl.seed_everything(cfg.seed, workers=True, verbose=False)

    datamodule = run.build(cfg.data)
    model = run.new_model(cfg, datamodule.info)  # checks the model/data pair
    start = run.checked_start(cfg.ckpt_path, model, cfg) if cfg.ckpt_path else None
    datamodule.prepare_data()
    datamodule.setup("fit")  # missing files fail here, before any training
    run.log.info("data %s | model %s", datamodule.info.describe(), type(model).__name__)
    loggers = run.build_group(cfg.get("logger"))
    run.log_config(loggers, cfg)

    metrics: dict[str, float] = {}
    if cfg.train:
        trainer, model = run.fit(cfg, model, datamodule, loggers, start)
    else:
        trainer = run.make_trainer(cfg, model, loggers)
    # a trained run's test stage, and the writing of its records, stop at once at a signal (interrupted.json)
    with stopping_at_once_in_the_test(trainer) if cfg.train and cfg.test else nullcontext():
        if cfg.train:
            metrics.update(model.restored_metrics)  # what a resumed run logged before; newer values replace them
            metrics.update({k: float(v) for k, v in trainer.callback_metrics.items()})
        tested = run.checkpoint_to_test(trainer) if cfg.train else start
        if cfg.test:
            # the test's random draws (a VAE's z) start from the seed: its figures depend on the tested
            # checkpoint alone, not on what training drew last, so a resumed run tests as the uninterrupted one
            pl.seed_everything(cfg.seed, workers=True, verbose=False)
            trainer.test(model, datamodule=datamodule, ckpt_path=tested, weights_only=not cfg.trust, verbose=False)
            metrics.update({k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("test/")})
        raise_pending()  # a stop in the test whose raise was lost: never finish the run over it
        if trainer.is_global_zero:  # under data parallelism, one process writes what the run keeps
            evaluations = [cb.last for cb in trainer.callbacks if isinstance(cb, Evaluator)]
            run.finish(cfg, loggers, metrics, tested, evaluations, model.val_loss_record())
    return metrics


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="train")
def _main(cfg: DictConfig) -> float | None:
    try:
        return recipe(cfg)
    except BaseException as error:
        stop = stopped_early_in(error)  # a signal outside training and the test: nothing new to save
        if stop is None:
            raise
        stop.kept = stopped_early(cfg)
        raise stop from None


def recipe(cfg: DictConfig) -> float | None:
    """``train`` with the house answers: a UserError in one line (its fresh folder removed), a signal's stop
    with the resume= command; the optimised metric for a sweeper."""
    raise_deferred()  # a signal while Hydra made the folder: stop now, where the folder is known
    from genlab.run import choice, is_main_process  # torch and Lightning: seconds, in which a signal may come

    # a record the log cannot write (a full disk) is not worth a traceback per line: the write that fails
    # the run is reported below, in one line
    logging.raiseExceptions = False
    try:
        try:
            metrics = train(cfg)
        except OSError as e:  # a write refused by the system outside genlab's own writers (loggers, Hydra's)
            failed = write_error(e.filename or cfg.paths.output_dir, e)
            if failed is None:
                raise
            raise failed from None
    except UserError as e:
        msg = str(e)
        if isinstance(e, WriteFailed):
            folder = RunFolder(cfg.paths.output_dir)
            folder.remove_empty_files()  # what the failed writes left as zero bytes
            then = "; a stopped run continues from its last checkpoint with resume=<its folder>"
            msg = e.advice("paths.log_dir", then if folder.has_results() or is_run(cfg.get("resume")) else "")
        if isinstance(e, IncompatibleError):
            msg = f"model={choice('model')} cannot run on data={choice('data')}: {e.reason}"
        print(f"genlab-train: {'error: ' if e.exit_code else ''}{msg}", file=sys.stderr)
        if not is_run(cfg.get("resume")) and is_main_process():  # never remove a folder the user named
            discard_failed_run()
        sys.exit(e.exit_code)
    except BaseException as e:
        from genlab.callbacks.interrupt import Interrupted

        if stopped_early_in(e) is not None or not isinstance(e, Interrupted):
            raise
        print(f"genlab-train: {e}; continue it with: genlab-train resume={e.checkpoint.parent.parent}",
              file=sys.stderr)
        sys.exit(e.exit_code)
    name = cfg.get("optimized_metric")
    if name and name not in metrics and optimising():  # the sweeper would fail on None with a traceback
        print(f"genlab-train: error: optimized_metric={name}: the run logged no such metric (it is kept in "
              f"{cfg.paths.output_dir}); it logged {', '.join(sorted(metrics))}.", file=sys.stderr)
        sys.exit(UserError.exit_code)
    return metrics.get(name) if name else None


def optimising() -> bool:
    """Whether this run is a trial of a sweeper that reads its result (Optuna), not of a grid sweep or alone."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from genlab.sweep import BASIC_SWEEPER

    hydra = HydraConfig.get()
    return hydra.mode == RunMode.MULTIRUN and str(hydra.sweeper.get("_target_")) != BASIC_SWEEPER


def stopped_early(cfg: DictConfig) -> str | None:
    """After a signal outside training and the test: a fresh folder with nothing in it is removed (never one
    the user named with resume=); the run folder when it holds a checkpoint to resume from, else None."""
    from hydra.core.hydra_config import HydraConfig

    run = sys.modules.get("genlab.run")  # not imported yet: no process of a data-parallel run was started
    if not is_run(cfg.get("resume")) and (run is None or run.is_main_process()):
        discard_failed_run()
    folder = RunFolder(HydraConfig.get().runtime.output_dir)
    return str(folder.path) if folder.last_checkpoint.is_file() else None


def main() -> None:
    """The command (``genlab-train`` calls it through ``genlab.entry.train``). Overrides Hydra would
    stop on with a traceback (``model=null``) are refused here, before Hydra parses them."""
    from genlab.config.preflight import command_line_error

    problem = command_line_error(sys.argv[1:])
    if problem:
        print(f"genlab-train: error: {problem}", file=sys.stderr)
        sys.exit(2)
    defer_signals()  # Hydra makes the run folder next: a signal there is raised once the recipe starts
    _main()


if __name__ == "__main__":
    stoppable("genlab-train", main)
