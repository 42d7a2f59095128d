"""genlab-sample: new samples from a finished run, as a labelled grid.

    genlab-sample outputs/train/runs/<run> -n 16                          # free samples
    genlab-sample outputs/train/runs/<run> --class 7 --class 3 -n 8       # a conditional model, one row per class
    genlab-sample outputs/train/runs/<run> --prompt "a handwritten seven" -n 16   # a caption-conditioned model
    genlab-sample outputs/train/runs/<run> --variations image.png -n 8   # unCLIP: samples sharing its embedding
    genlab-sample outputs/train/runs/<run> -n 64 --steps 50 --seed 1 --out grid.png

The run is rebuilt from its composed config and its tested checkpoint (as genlab-eval does); the grid goes
to ``--out`` or, by default, to ``<run>/samples/<what>_seed<seed>.png`` — a new name for every request
(``samples_seed0-2.png`` when ``samples_seed0.png`` exists), so no earlier grid is overwritten without being asked.

torch is imported only once the request and the run folder are checked: ``--help`` and a wrong path are
answered at once.
"""

from __future__ import annotations

import argparse
import contextlib
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from genlab.errors import UserError, WriteFailed

if TYPE_CHECKING:
    import torch

COLUMNS = 8
MAX_GRID = 4096  # samples in one grid (n x rows): a 64x64-pixel sample is 12 KB, so a grid stays under ~50 MB


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")[:60] or "prompt"


def read_image(path: Path, shape: tuple[int, ...]) -> torch.Tensor:
    """The image file ``path`` as the data's samples are: (C, H, W) in [0, 1], resized to ``shape``'s size."""
    import torch.nn.functional as F
    from torchvision.io import ImageReadMode, decode_image

    mode = ImageReadMode.GRAY if shape[0] == 1 else ImageReadMode.RGB
    try:
        image = decode_image(str(path), mode=mode).float().div(255)  # (C, h, w)
    except (RuntimeError, ValueError) as e:
        raise UserError(f"--variations {path}: not an image torchvision can read (PNG, JPEG): {e}") from None
    size = tuple(shape[1:])
    return F.interpolate(image[None], size=size, mode="bilinear", antialias=True)[0].clamp(0, 1) \
        if tuple(image.shape[1:]) != size else image


def draw(model: torch.nn.Module, n: int, prompts: list[str], classes: list[int], steps: int | None,
         variations: list[Path] = ()) -> tuple[torch.Tensor, list[str], str]:
    """The samples (rows·n, *shape), one row label per block of n, and what was asked (for the file name)."""
    import torch

    from genlab.capabilities import CanSample, CanSampleFromText, CanVary, capable
    from genlab.nets.text import words

    if variations:
        if not capable(model, CanVary):
            raise UserError(f"--variations: this run's model ({type(model).__name__}) cannot make variations of an "
                            "image; train an unCLIP decoder (model=unclip).")
        x = torch.stack([read_image(p, tuple(model.data_info.shape)) for p in variations]).to(model.device)
        return (model.variations(x, n, steps), [f"like {p.name}" for p in variations],
                "variations_" + "_".join(slug(p.stem) for p in variations)[:80])
    if prompts:
        if not capable(model, CanSampleFromText):
            raise UserError(f"--prompt: this run's model ({type(model).__name__}) is not conditioned on text; "
                            "train one that is (e.g. experiment=mnist_caption_to_image).")
        for prompt in prompts:  # words the text encoder never saw read as <unk>: say so, refuse all-unknown
            unknown = model.unknown_words(prompt)
            if unknown and model.data_info.attributes:  # captions of attributes: a word outside them names a value
                from genlab.data.captioned import known_words  # the data cannot have

                raise UserError(f"--prompt {prompt!r}: the captions never say {', '.join(map(repr, unknown))}; "
                                f"they name {known_words()}.")
            if unknown and len(unknown) == len(words(prompt)):
                raise UserError(f"--prompt {prompt!r}: none of its words was in the captions the text encoder "
                                "trained on; try e.g. 'a handwritten seven'.")
            if unknown:
                print(f"genlab-sample: note: --prompt {prompt!r}: unknown words {unknown} read as <unk>",
                      file=sys.stderr)
        return model.sample_texts(prompts, n, steps), prompts, "_".join(slug(p) for p in prompts)[:80]
    if not capable(model, CanSample):
        raise UserError(f"this run's model ({type(model).__name__}) cannot sample.")
    if classes:
        info = model.data_info
        if not model.conditional:
            raise UserError(f"--class: this run's model ({type(model).__name__}) is not conditional on the class.")
        bad = [c for c in classes if not 0 <= c < (info.num_classes or 0)]
        if bad:
            raise UserError(f"--class {bad[0]}: '{info.name}' has classes 0..{(info.num_classes or 1) - 1}.")
        y = torch.tensor(classes, device=model.device).repeat_interleave(n)
        names = [info.class_names[c] if c < len(info.class_names) else str(c) for c in classes]
        return model.sample(len(y), y, steps), [f"class {c}" for c in names], "class_" + "_".join(map(str, classes))
    return model.sample(n, None, steps), [], "samples"


def parser() -> argparse.ArgumentParser:
    """genlab-sample's options (the fuzz reads them: every option gets bad values)."""
    parser = argparse.ArgumentParser(prog="genlab-sample", description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, metavar="RUN_DIR", help="a run folder of genlab-train")
    parser.add_argument("-n", type=int, default=16, help="samples per prompt or class (default 16)")
    parser.add_argument("--prompt", action="append", default=[], help="a caption (repeatable): one row each")
    parser.add_argument("--variations", type=Path, action="append", default=[], metavar="IMAGE",
                        help="an image file (repeatable): a row of samples sharing its CLIP embedding (unCLIP)")
    parser.add_argument("--class", dest="classes", type=int, action="append", default=[],
                        help="a class index (repeatable), for conditional models")
    parser.add_argument("--steps", type=int, default=None, help="the sampler's step budget (default: the model's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="the PNG to write (default: RUN_DIR/samples/...)")
    parser.add_argument("--device", default=None, help="where the model runs (default: cuda when available)")
    parser.add_argument("--trust", action="store_true", help="as genlab-eval's --trust")
    return parser


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point (``genlab-sample``)."""
    args = parser().parse_args(argv)
    from genlab.config import is_run, setup_hydra
    from genlab.evaluate import check_out

    try:
        if args.n < 1:
            raise UserError(f"-n {args.n}: at least one sample.")
        if args.steps is not None and args.steps < 1:
            raise UserError(f"--steps {args.steps}: at least one step.")
        if sum(map(bool, (args.prompt, args.classes, args.variations))) > 1:
            raise UserError("give one of --prompt, --class and --variations.")
        empty = [p for p in args.prompt if not p.strip()]
        if empty:
            raise UserError(f"--prompt {empty[0]!r}: give a caption with words, e.g. 'a handwritten seven'.")
        rows = max(1, len(args.prompt) + len(args.classes) + len(args.variations))
        if args.n * rows > MAX_GRID:
            raise UserError(f"-n {args.n} x {rows} row(s) = {args.n * rows} samples: one grid holds at most "
                            f"{MAX_GRID}; ask for fewer, or for several grids with different --seed.")
        if not 0 <= args.seed < 2**32:
            raise UserError(f"--seed {args.seed}: from 0 to 2^32 - 1.")
        negative = [c for c in args.classes if c < 0]
        if negative:
            raise UserError(f"--class {negative[0]}: classes are numbered from 0.")
        for image in args.variations:  # before the run is loaded (seconds)
            if not image.is_file():
                raise UserError(f"--variations {image}: no such file.")
        if args.out is not None:
            check_out(args.out, "PNG")
        if not args.run.is_dir():
            raise UserError(f"{args.run} is not a folder.")
        if not is_run(str(args.run)):
            raise UserError(f"{args.run} is not a genlab run: it has no .hydra/config.yaml "
                            "(genlab-train writes one into every run directory).")
        import torch

        from genlab.evaluate import check_device, default_device, load_run
        from genlab.run import build, load_model, route_framework_logs
        from genlab.safety import set_user_trust

        setup_hydra()
        route_framework_logs()
        set_user_trust(args.trust)  # the runs' frozen components (model.autoencoder=, model.clip=) read it
        args.device = args.device or default_device()
        check_device(args.device)
        cfg, ckpt = load_run(args.run, args.trust, "genlab-sample")
        info = build(cfg.data).info
        model = load_model(cfg.model, ckpt, args.device, trust=args.trust, data_info=info)
        model.eval()
        torch.manual_seed(args.seed)
        with torch.no_grad():
            samples, rows, what = draw(model, args.n, args.prompt, args.classes, args.steps, args.variations)
        out = args.out or new_file(args.run / "samples", f"{what}_seed{args.seed}")
        try:
            write_grid(samples.float().cpu(), rows, args.n, info, out, ckpt.name)
        except UserError:
            if args.out is None:  # the empty file that held the name, and samples/ when it holds nothing else
                out.unlink(missing_ok=True)
                with contextlib.suppress(OSError):
                    out.parent.rmdir()
            raise
        print(f"{len(samples)} samples written to {out}")
    except UserError as e:
        msg = e.advice("--out FILE.png") if isinstance(e, WriteFailed) else str(e)
        print(f"genlab-sample: error: {msg}", file=sys.stderr)
        sys.exit(e.exit_code)


def new_file(folder: Path, stem: str, suffix: str = ".png") -> Path:
    """A file of ``folder`` that did not exist: ``stem.png``, else ``stem-2.png``, ``stem-3.png``, ... It is
    created empty here (exclusively), so two requests at the same time never take the same name."""
    import itertools
    import os

    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"{folder}: cannot make the folder for the samples ({e.strerror or e}).") from None
    for k in itertools.count(1):
        path = folder / f"{stem}{'' if k == 1 else f'-{k}'}{suffix}"
        try:
            os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            continue
        except OSError as e:
            raise UserError(f"{path}: cannot be written ({e.strerror or e}).") from None
        return path
    raise AssertionError("unreachable")


def write_grid(samples: torch.Tensor, rows: list[str], n: int, info: object, out: Path, source: str) -> None:
    """The samples as a labelled grid (images) or a scatter (points) in the PNG ``out``."""
    import torch

    from genlab.figures import labelled_grid

    if out.suffix.lower() != ".png":
        raise UserError(f"--out {out}: give a .png file.")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"--out {out}: cannot make its folder ({e.strerror or e}).") from None
    if samples.dim() == 4:  # images: each block of n in its own rows, labelled with its prompt or class
        columns = min(n, COLUMNS) if rows else min(len(samples), COLUMNS)
        labels: list[str] = []
        if rows:  # each block padded with blank cells to whole grid rows, so a row holds one prompt or class
            per_block = -(-n // columns)
            blank = samples.new_zeros(per_block * columns - n, *samples.shape[1:])
            samples = torch.cat([torch.cat([block, blank]) for block in samples.split(n)])
            labels = [r for r in rows for _ in range(per_block)]
        fig = labelled_grid(samples, columns, labels, f"samples from {source}", info=info)  # type: ignore[arg-type]
    else:
        from matplotlib.figure import Figure

        fig = Figure(figsize=(5, 5))
        ax = fig.add_subplot()
        ax.scatter(samples[:, 0], samples[:, 1], s=4)
        ax.set_title(f"samples from {source}")
    from genlab.files import write_atomically

    try:  # whole or not at all: a full disk leaves no half-written PNG
        write_atomically(out, lambda f: fig.savefig(f, format="png"))
    except OSError as e:
        raise UserError(f"--out {out}: cannot be written ({e.strerror or e}).") from None


if __name__ == "__main__":
    main()
