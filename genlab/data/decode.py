"""Image files decoded with PIL into uint8 tensors: the one reading path of every image dataset
(image folders, CelebA, unpaired folders, and the arrays of data.in_memory=false). A file PIL cannot
read, or one over PIL's pixel limit (a decompression bomb), is a UserError that names it."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor

from genlab.errors import UserError

IMAGE_READ_ERRORS = (OSError, UnidentifiedImageError, ValueError, SyntaxError, EOFError,
                     Image.DecompressionBombError, Image.DecompressionBombWarning)


def open_image(path: str | Path) -> Image.Image:
    """``Image.open`` with PIL's decompression-bomb warning (an image over MAX_IMAGE_PIXELS, which PIL
    would still decode) raised as an error: such an image is refused whole, never decoded."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        return Image.open(path)


def image_problem(e: Exception) -> str:
    """What went wrong reading an image, in words."""
    if isinstance(e, (Image.DecompressionBombError, Image.DecompressionBombWarning)):
        return (f"it has more pixels than PIL's limit of {Image.MAX_IMAGE_PIXELS} (a decompression bomb?): "
                f"{' '.join(str(e).split())}")
    return " ".join(str(e).split()) or type(e).__name__


def read_images(files: list[str], channels: int, size: tuple[int, int], square_crop: bool = False) -> Tensor:
    """Decode image files with PIL into uint8 (N, C, H, W), resized (bilinear) to size = (H, W).

    ``square_crop`` first cuts the central square of side min(H, W) (CelebA's faces). An image larger
    than PIL's limit (a decompression bomb: a small file that decodes to gigabytes) is a UserError
    naming the file, as is any file PIL cannot read.
    """
    mode, (h, w) = ("L" if channels == 1 else "RGB"), size
    arrays = []
    for f in files:
        try:
            with open_image(f) as im:
                im = im.convert(mode)
                if square_crop:
                    side = min(im.size)
                    left, top = (im.width - side) // 2, (im.height - side) // 2
                    im = im.crop((left, top, left + side, top + side))
                if im.size != (w, h):
                    im = im.resize((w, h), Image.BILINEAR)
                arrays.append(np.asarray(im))
        except IMAGE_READ_ERRORS as e:
            raise UserError(f"Could not read the image {Path(f).resolve()}: {image_problem(e)}") from None
    x = torch.from_numpy(np.stack(arrays))  # (N, H, W) greyscale or (N, H, W, 3) colour
    return x.unsqueeze(1) if channels == 1 else x.permute(0, 3, 1, 2).contiguous()
