"""Decoding one image file with Pillow into uint8 HWC at a declared size and channel count."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from convstudy.untrusted import open_untrusted

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
_GREY_MODES = {"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F"}


class BadImage(ValueError):
    """A file that cannot be decoded as an image of the declared shape; the message omits the path."""


@contextmanager
def open_image(path: str | Path) -> Iterator[Image.Image]:
    """Pillow's lazy image of a regular file (UnreadableFile otherwise, without blocking on a FIFO). Past
    Image.MAX_IMAGE_PIXELS it is a decompression bomb, raised rather than printed as Pillow's warning."""
    with open_untrusted(path, "image file") as f, warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        with Image.open(f) as img:
            yield img


_PILLOW_ERRORS = (UnidentifiedImageError, Image.DecompressionBombError, Image.DecompressionBombWarning, OSError,
                  SyntaxError, ValueError)


def image_size(path: str | Path) -> tuple[int, int]:
    """(height, width) of an image from its header; BadImage if it is not one."""
    try:
        with open_image(path) as img:
            width, height = img.size
    except _PILLOW_ERRORS as exc:
        raise BadImage(_why(exc)) from None
    return height, width


def decode_image(path: str | Path, size: tuple[int, int], channels: int, resize: bool) -> tuple[np.ndarray, bool]:
    """uint8 [H, W, C] at `size`, and whether grey/colour had to be converted to `channels`."""
    height, width = size
    try:
        with open_image(path) as img:
            if not resize and img.size != (width, height):
                raise BadImage(f"image is {img.size[1]}x{img.size[0]}, the dataset's images are {height}x{width}; "
                               "declare size = [H, W] to resize them")
            grey = img.mode in _GREY_MODES
            if img.format == "JPEG" and resize:
                img.draft("L" if channels == 1 else "RGB", (width, height))  # decode JPEGs at a reduced scale
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # palette-transparency notes; the conversion below is explicit
                if img.mode == "P" and "transparency" in img.info:
                    img = img.convert("RGBA")
                # Explicit conversion: grey -> RGB replicates the channel, RGB -> grey is ITU-R 601-2 luma.
                img = img.convert("L" if channels == 1 else "RGB")
            if img.size != (width, height):
                img = img.resize((width, height), Image.Resampling.BILINEAR)
            array = np.asarray(img, dtype=np.uint8)
    except BadImage:
        raise
    except _PILLOW_ERRORS as exc:
        raise BadImage(_why(exc)) from None
    if array.ndim == 2:
        array = array[:, :, None]
    return array, grey != (channels == 1)


def _why(exc: BaseException) -> str:
    if isinstance(exc, UnidentifiedImageError):
        return "not an image Pillow can read (corrupt, or not PNG/JPEG/BMP)"
    if isinstance(exc, (Image.DecompressionBombError, Image.DecompressionBombWarning)):
        return f"image has more than {Image.MAX_IMAGE_PIXELS:,} pixels, too many to decode safely"
    text = str(exc).split(" '")[0] if isinstance(exc, OSError) else str(exc)
    return f"corrupt or truncated image ({text or type(exc).__name__})"
