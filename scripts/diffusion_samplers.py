"""A finished diffusion run's samplers side by side: the sample scores and the seconds per 1,000 samples of the
ancestral sampler over all T steps against DDIM (and strided ancestral sampling) with fewer steps.

    python scripts/diffusion_samplers.py RUN_DIR                          # ddpm:T, ddim:50, ddim:25
    python scripts/diffusion_samplers.py RUN_DIR --samplers ddpm:1000 ddpm:100 ddim:50 ddim:25 dpm_solver:10
    python scripts/diffusion_samplers.py RUN_DIR --threads 1 --n 2000

RUN_DIR is a genlab-train run of model=ddpm or cddpm (e.g. experiment=ring8_ddpm). The tested checkpoint is
loaded and, for each SAMPLER:STEPS, scored by genlab's evaluator with only its sample metrics (mode coverage and
MMD² on toy2d; FID, KID, precision and recall, and the class accuracy of conditional models, on labelled images,
with the run's classifier cache), the same seed for every sampler; then ``--n`` samples are drawn once more and
timed. Seconds are wall-clock on the machine it runs on, scaled to 1,000 samples.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

SAMPLE_METRICS = ("sample_quality", "mode_coverage", "sample_classes")


def score_sampler(model: torch.nn.Module, dm: object, cache: str | None, kind: str, steps: int, eta: float = 0.0,
                  n_timed: int = 2000, overrides: tuple[str, ...] = ()) -> tuple[dict[str, float], float]:
    """A diffusion model's sample metrics with the sampler ``kind`` (ddpm, ddim, dpm_solver) and ``steps``
    steps, from genlab's evaluator with only its sample metrics and the classifier cache ``cache``, the
    evaluator's seed (``overrides``: more of its settings, "metrics.sample_classes.per_class=50"); and the
    wall-clock seconds per 1,000 samples, timed on ``n_timed`` more."""
    from genlab.callbacks.evaluator import configured_evaluator

    model.sampler = model.make_scheduler(kind, eta)
    evaluator = configured_evaluator(cache, [f"sample_steps={steps}", *overrides])
    evaluator.metrics = {k: v for k, v in evaluator.metrics.items() if k in SAMPLE_METRICS}
    scores = evaluator.evaluate(model, dm)
    y = torch.randint(dm.info.num_classes or 1, (n_timed,)) if model.conditional else None
    start = time.perf_counter()
    with torch.no_grad():
        for i in range(0, n_timed, 1000):
            model.sample(min(1000, n_timed - i), None if y is None else y[i:i + 1000], steps)
    return scores, (time.perf_counter() - start) * 1000 / n_timed


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", type=Path)
    p.add_argument("--samplers", nargs="+", default=None, help="SAMPLER:STEPS, SAMPLER ddpm, ddim or dpm_solver "
                   "(default: ddpm over all T steps, ddim:50, ddim:25)")
    p.add_argument("--n", type=int, default=2000, help="samples drawn for the timing")
    p.add_argument("--eta", type=float, default=0.0, help="DDIM's η")
    p.add_argument("--threads", type=int, default=None, help="torch threads (1 on busy shared cores)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from hydra.utils import instantiate

    from genlab.config import setup_hydra
    from genlab.run import load_model, stored_config

    setup_hydra()
    cfg = stored_config(args.run_dir)
    best = args.run_dir / json.loads((args.run_dir / "metrics.json").read_text())["best_checkpoint"]
    model = load_model(cfg.model, best).eval()
    dm = instantiate(cfg.data)
    dm.setup("test")
    samplers = args.samplers or [f"ddpm:{model.timesteps}", "ddim:50", "ddim:25"]
    cache = cfg.get("callbacks", {}).get("evaluator", {}).get("classifier_cache")
    print(f"{args.run_dir.name}: {type(model).__name__}, T = {model.timesteps}, data {dm.info.describe()}")
    rows = []
    for spec in samplers:
        kind, _, steps = spec.partition(":")
        scores, seconds = score_sampler(model, dm, cache, kind, int(steps), args.eta, args.n)
        rows.append((spec, seconds, {k.removeprefix("test/"): v for k, v in scores.items()}))
        shown = ", ".join(f"{k}={v:.4g}" for k, v in rows[-1][2].items() if not k.endswith("_floor"))
        print(f"{spec:>10}: {seconds:8.2f} s per 1,000 samples | {shown}", flush=True)


if __name__ == "__main__":
    main()
