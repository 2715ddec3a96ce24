"""Any image file to what a model was trained on: the training decoder's colour and size, or an MNIST-style digit.

MNIST's recipe (LeCun et al.): grayscale, light ink on dark (photos' light backgrounds are inverted first), the
digit's bounding box fitted into 20x20 keeping its aspect ratio, placed in 28x28 with its centre of mass centred.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
SIZE, BOX = 28, 20
INK = 0.2  # fraction of the ink range above which a pixel belongs to the digit's bounding box


class ImageError(ValueError):
    """An image that cannot be read or holds nothing to classify; the message is one line."""


def _pil():
    try:
        from PIL import Image, ImageOps
    except ImportError:
        from convstudy.errors import UserError

        raise UserError("predict needs Pillow: pip install 'convstudy[images]'") from None
    return Image, ImageOps


def read_gray(path: str | Path) -> np.ndarray:
    """The image as float32 gray levels in [0, 255], transparency and EXIF rotation resolved."""
    _, ImageOps = _pil()
    from convstudy.data.images import open_image
    from convstudy.untrusted import UnreadableFile

    try:
        with open_image(path) as img:
            img.load()
            img = ImageOps.exif_transpose(img)
            return to_gray(img)
    except ImageError:
        raise
    except UnreadableFile as exc:  # missing, a directory, a FIFO: the path is shown beside the reason
        raise ImageError(exc.reason) from None
    except Exception as exc:  # Pillow raises many types for damaged files; each is this one file's problem
        reason = " ".join(str(exc).split())[:120] or type(exc).__name__
        raise ImageError(f"cannot read image ({reason})") from None


def to_gray(img) -> np.ndarray:
    """A PIL image as float32 gray levels in [0, 255]."""
    if img.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        arr = np.asarray(img, dtype=np.float32)
        top = float(arr.max())
        return arr * (255.0 / top) if top > 0 else arr
    if img.mode == "P":
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA"):
        alpha = np.asarray(img.getchannel("A"), dtype=np.float32)
        # A mostly transparent image is a drawing whose strokes are its opaque pixels, whatever their colour.
        if np.median(alpha) < 128:
            return alpha
        img = img.convert("RGB")
    return np.asarray(img.convert("L"), dtype=np.float32)


def mnist_style(gray: np.ndarray) -> np.ndarray:
    """28x28 uint8, light digit on black, fitted into 20x20 and centred by mass, as MNIST was made."""
    Image, _ = _pil()
    gray = np.asarray(gray, dtype=np.float32)
    border = np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]])
    background = float(np.median(border))
    if background > 127.5:  # light background: dark ink, the opposite of MNIST
        gray, background = 255.0 - gray, 255.0 - background
    ink = np.clip(gray - background, 0.0, None)
    top = float(ink.max())
    if top < 16.0:  # nothing stands out of the background by more than a JPEG's noise
        raise ImageError("blank image (no digit stands out from the background)")
    ink /= top
    rows, cols = np.nonzero(ink > INK)
    ink = ink[rows.min():rows.max() + 1, cols.min():cols.max() + 1]
    h, w = ink.shape
    scale = BOX / max(h, w)
    new_w, new_h = max(1, round(w * scale)), max(1, round(h * scale))
    patch = np.asarray(Image.fromarray(ink).resize((new_w, new_h), Image.Resampling.LANCZOS))
    patch = np.clip(patch, 0.0, 1.0)
    out = np.zeros((SIZE, SIZE), dtype=np.float32)
    mass = patch.sum()
    ys, xs = np.indices(patch.shape)
    cy, cx = (ys * patch).sum() / mass, (xs * patch).sum() / mass
    # MNIST's centres of mass sit at pixel (14, 14); integer shifts, keeping the whole box inside.
    top_row = int(np.clip(round(SIZE / 2 - cy), 0, SIZE - new_h))
    left = int(np.clip(round(SIZE / 2 - cx), 0, SIZE - new_w))
    out[top_row:top_row + new_h, left:left + new_w] = patch
    return np.round(out * 255.0).astype(np.uint8)


def load_digit(path: str | Path) -> np.ndarray:
    """One image file as an MNIST-style 28x28 uint8 array; ImageError (one line) if it cannot be."""
    return mnist_style(read_gray(path))


def load_image(path: str | Path, input_shape: tuple[int, int, int], digits: bool) -> np.ndarray:
    """One image file as uint8 [C, H, W] for a model on `input_shape` (H, W, C): an MNIST-style digit if
    `digits`, else decoded as training decoded its images (RGB kept, grey -> RGB or RGB -> L explicit, resized)."""
    if digits:
        return load_digit(path)[None]
    from convstudy.data.images import BadImage, decode_image
    from convstudy.untrusted import UnreadableFile

    h, w, c = input_shape
    try:
        array, _ = decode_image(path, (h, w), c, resize=True)
    except UnreadableFile as exc:
        raise ImageError(exc.reason) from None
    except BadImage as exc:
        raise ImageError(f"cannot read image ({exc})") from None
    return np.ascontiguousarray(array.transpose(2, 0, 1))


def expand_paths(items: list[str | Path]) -> list[Path]:
    """Files as given, directories as their image files (by suffix, sorted); order kept, no duplicates."""
    out: list[Path] = []
    for item in map(Path, items):
        found = sorted(p for p in item.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES) \
            if item.is_dir() else [item]
        out += [p for p in found if p not in out]
    return out
