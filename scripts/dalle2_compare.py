"""DALLE-2's parts side by side: one finished unCLIP decoder run sampled from held-out captions without a prior
(the caption's text embedding in the image embedding's place), and through each prior run given, at each
decoder guidance scale; scored by the attribute fidelity of the samples (each attribute read back by a
classifier of the data's true values, seen and held-out combinations apart), their diversity per caption, and
FID/KID/precision/recall against test images. Prints a table and writes it as JSON.

    python scripts/dalle2_compare.py outputs/train/runs/<unclip> --prior outputs/train/runs/<diffusion_prior> \\
        --prior outputs/train/runs/<regression_prior> --scales 0,1,2,4 --n 300 --n-samples 500

Every variant uses the same decoder weights and the same evaluation seed, so only the condition path differs.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

KEYS = ("attribute_fidelity/all", "attribute_fidelity/all_seen", "attribute_fidelity/all_held_out",
        "attribute_fidelity/shape", "attribute_fidelity/colour", "attribute_fidelity/size",
        "attribute_fidelity/position", "caption_diversity", "fid", "kid", "precision", "recall")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="a finished unclip run folder")
    parser.add_argument("--prior", type=Path, action="append", default=[], help="a finished prior run (repeatable)")
    parser.add_argument("--scales", default="0,1,2,4", help="decoder guidance scales, comma-separated")
    parser.add_argument("--n", type=int, default=300, help="captions scored for attribute fidelity")
    parser.add_argument("--n-samples", type=int, default=500, help="samples scored for FID and the others")
    parser.add_argument("--diverse", type=int, default=25, help="captions with 4 samples each for the diversity")
    parser.add_argument("--out", type=Path, default=None, help="the JSON to write (default: RUN/dalle2_compare.json)")
    args = parser.parse_args(argv)

    import torch
    from omegaconf import OmegaConf

    from genlab.callbacks.evaluator import configured_evaluator
    from genlab.checkpoints import frozen_component
    from genlab.config import setup_hydra
    from genlab.errors import UserError
    from genlab.evaluate import default_device, load_run
    from genlab.metrics.base import eval_mode
    from genlab.models.unclip import UnCLIPDecoder
    from genlab.run import build, load_model, route_framework_logs

    try:
        setup_hydra()
        route_framework_logs()
        device = default_device()
        cfg, ckpt = load_run(args.run, False)
        dm = build(cfg.data)
        dm.setup("fit")
        dm.setup("test")
        model = load_model(cfg.model, ckpt, device, data_info=dm.info).eval()
        if not isinstance(model, UnCLIPDecoder):
            raise UserError(f"{args.run} holds a {type(model).__name__}, not an unCLIP decoder (model=unclip).")
        priors = {"none (text embedding)": None}
        spec = UnCLIPDecoder.frozen_runs["prior"]
        for folder in args.prior:
            prior = frozen_component(OmegaConf.create({"prior": str(folder)}), "prior", "--prior", spec, dm.info)
            priors[f"{type(prior).__name__} ({folder.name})"] = prior
        evaluator = configured_evaluator(cfg.paths.cache_dir, [
            f"metrics.attribute_fidelity.n={args.n}", f"metrics.sample_quality.n_samples={args.n_samples}",
            f"metrics.attribute_fidelity.diverse_captions={args.diverse}"])
        wanted = ("attribute_fidelity", "sample_quality")
        evaluator.metrics = {k: v for k, v in evaluator.metrics.items() if k in wanted}
        scales = [float(s) for s in args.scales.split(",")]
        rows = []
        for name, prior in priors.items():
            model.use_prior(prior)
            for s in scales:
                model.guidance_scale = s
                start = time.perf_counter()
                with eval_mode(model), torch.no_grad():
                    scores = evaluator.evaluate(model, dm)
                row = {"prior": name, "scale": s, "seconds": round(time.perf_counter() - start, 1),
                       **{k: scores.get(f"test/{k}") for k in KEYS}}
                rows.append(row)
                print(json.dumps(row), flush=True)
    except UserError as e:
        print(f"dalle2_compare: error: {e}", file=sys.stderr)
        sys.exit(2)
    out = args.out or args.run / "dalle2_compare.json"
    out.write_text(json.dumps(rows, indent=1))
    shown = ("prior", "scale", *KEYS[:3], "caption_diversity", "fid", "precision", "recall")
    print("| " + " | ".join(shown) + " |")
    print("|" + " --- |" * len(shown))
    for row in rows:
        print("| " + " | ".join(f"{row[k]:.3g}" if isinstance(row[k], float) else str(row[k]) for k in shown) + " |")
    print(f"written to {out}")


if __name__ == "__main__":
    main()
