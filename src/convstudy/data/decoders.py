"""How each kind of described dataset decodes: an image folder, an NPZ file, a Kaggle-style CSV, into NCHW
uint8 arrays and labels, every mistake one UserError naming the file (and row, column or array) at fault.
"""

from __future__ import annotations

import math
import os
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from convstudy.data.images import IMAGE_SUFFIXES, BadImage, decode_image, image_size
from convstudy.data.source_record import Source
from convstudy.data.split import stratified_split
from convstudy.errors import UserError
from convstudy.untrusted import is_utf8, open_untrusted, read_untrusted_bytes, shown_path

MAX_CLASSES = 100_000
_LABELS = f"labels are class indices 0 to {MAX_CLASSES - 1:,}"
TWO_CLASSES = "a classifier needs at least 2 classes"
NPZ_ARRAYS = ("x_train", "y_train", "x_test", "y_test")
MAX_ARRAY_BYTES = 64 << 30
MAX_CSV_BYTES = 2 << 30  # Kaggle's MNIST train.csv is 73 MiB; CIFAR-10 as CSV is about 600 MiB


def show_list(names: tuple[str, ...] | list[str]) -> str:
    """At most 12 names, then how many there are in all."""
    shown = ", ".join(names[:12])
    return shown + (f", ... ({len(names)} in all)" if len(names) > 12 else "")


# ---------------------------------------------------------------- splits

def split_stratified(x: np.ndarray, y: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, ...]:
    """(x_train, y_train, x_test, y_test): a stratified `fraction` of (x, y) as the test split."""
    if len(y) == 0:
        return x, y, x[:0], y[:0]
    tr, te = (i.numpy() for i in stratified_split(torch.from_numpy(y), fraction, seed))
    return x[tr], y[tr], x[te], y[te]


def _splits(src: Source, x: np.ndarray, y: np.ndarray, test: tuple[np.ndarray, np.ndarray] | None,
            test_kind: str) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """NCHW splits and their `split` provenance: `test` as given, else a stratified test_fraction of (x, y)."""
    if test is None:
        parts = split_stratified(x, y, src.test_fraction, src.split_seed)
        split: dict[str, Any] = {"test_fraction": src.test_fraction, "split_seed": src.split_seed}
    else:
        parts, split = (x, y, *test), {"test": test_kind}
    out = dict(zip(("x_train", "y_train", "x_test", "y_test"), parts))
    return {k: _nchw(v) if k.startswith("x_") else v for k, v in out.items()}, {"split": split}


# ---------------------------------------------------------------- folder

@dataclass(frozen=True)
class _Layout:
    class_dirs: dict[str, str]  # class -> folder (train folder in the split layout)
    files: dict[str, list[tuple[str, str]]]  # split -> (class, image path), sorted; str: 60,000 Paths cost 1 s


def folder_layout(src: Source) -> _Layout:
    """The class folders and sorted image files of a folder source, checked before any image is decoded."""
    root = src.path
    if not os.path.isdir(root):
        raise UserError(f"{root}: {'no such folder' if not os.path.exists(root) else 'not a folder'} (dataset kind folder)")
    entries = _subdirs(root)
    split_layout = "train" in entries and set(entries) <= {"train", "test"}
    tops = {k: os.path.join(root, k) for k in ("train", "test") if k in entries} if split_layout else {"train": root}
    class_dirs = _subdirs(tops["train"])
    if not class_dirs:
        raise UserError(f"{tops['train']}: no class folders (expected {tops['train']}/<class>/*.png|jpg|jpeg|bmp)")
    if len(class_dirs) == 1 and not src.classes:
        raise UserError(f'{tops["train"]}: one class folder ("{next(iter(class_dirs))}"); {TWO_CLASSES}')
    classes = src.classes or tuple(sorted(class_dirs))
    files: dict[str, list[tuple[str, str]]] = {}
    for split, top in tops.items():
        dirs = class_dirs if split == "train" else _subdirs(top)
        for name in sorted(dirs):
            if name not in classes:
                raise UserError(f"{dirs[name]}: class folder \"{name}\" is not among the classes ({show_list(classes)})")
        for name in classes:
            if split == "train" and name not in dirs:
                raise UserError(f"{top}: has no folder for class \"{name}\"")
        files[split] = []
        for name in sorted(dirs, key=classes.index):
            images = sorted(_regular(e).name for e in _scandir(dirs[name])
                            if e.name.lower().endswith(IMAGE_SUFFIXES) and not e.name.startswith("."))
            if not images:
                raise UserError(f"{dirs[name]}: class folder has no images ({', '.join(IMAGE_SUFFIXES)})")
            files[split] += [(name, os.path.join(dirs[name], image)) for image in images]
    return _Layout(class_dirs, files)


def _subdirs(folder: str) -> dict[str, str]:
    dirs = {e.name: e.path for e in _scandir(folder) if not e.name.startswith(".") and e.is_dir()}
    for name, path in dirs.items():
        if not is_utf8(name):  # a class name: studies, reports and the database are UTF-8
            raise UserError(f"{shown_path(path)}: folder name is not valid UTF-8; rename it (class names are "
                            "taken from folder names)")
    return dirs


def _regular(entry: os.DirEntry) -> os.DirEntry:
    # Refused while listing, before any decoding; open_untrusted checks again when the file is opened.
    if not entry.is_file():
        open_untrusted(entry.path, "image file").close()  # raises, naming what the entry is instead
    return entry


def _scandir(folder: str) -> list[os.DirEntry]:
    try:
        with os.scandir(folder) as it:
            return list(it)
    except OSError as exc:
        raise UserError(f"{folder}: cannot be listed ({exc.strerror or exc})") from None


def first_size(src: Source, layout: _Layout) -> tuple[int, int]:
    """(H, W) of the first readable training image: a folder's size when none is declared."""
    for _, path in layout.files["train"]:
        try:
            return image_size(path)
        except BadImage as exc:
            if not src.skip_bad:
                raise UserError(f"{path}: {exc}; remove it or set skip_bad = true in the dataset") from None
    raise UserError(f"{src.path}: no readable image to take the size from")


def decode_folder(src: Source) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Every image of a resolved folder source, decoded (and resized or converted where it says) into splits."""
    assert src.size is not None and src.channels is not None and src.classes is not None
    layout = folder_layout(src)
    index = {name: i for i, name in enumerate(src.classes)}
    height, width = src.size
    out: dict[str, np.ndarray] = {}
    skipped: list[tuple[str, str]] = []
    converted = 0
    for split, entries in layout.files.items():
        x = np.empty((len(entries), height, width, src.channels), np.uint8)
        y = np.empty(len(entries), np.int64)
        n, kept = 0, set()
        for name, path in entries:
            try:
                x[n], changed = decode_image(path, src.size, src.channels, bool(src.resize))
            except BadImage as exc:
                if not src.skip_bad:
                    raise UserError(f"{path}: {exc}; remove it or set skip_bad = true in the dataset") from None
                skipped.append((shown_path(os.path.relpath(path, src.path)), str(exc)))
                continue
            converted += changed
            y[n] = index[name]
            kept.add(name)
            n += 1
        for name in {name for name, _ in entries} - kept:
            raise UserError(f"{os.path.join(os.path.dirname(os.path.dirname(path)), name)}: class folder has no "
                            "readable images (all skipped as bad)")
        out[f"x_{split}"], out[f"y_{split}"] = x[:n], y[:n]
    test = (out["x_test"], out["y_test"]) if "test" in layout.files else None
    arrays, meta = _splits(src, out["x_train"], out["y_train"], test, "folder")
    return arrays, {**meta, "skipped": skipped, "converted": converted, "n": sum(len(v) for v in out.values()) // 2}


def _nchw(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


# ---------------------------------------------------------------- npz

def npz_image_shape(path: Path) -> tuple[int, int, int]:
    """(H, W, C) of x_train from its .npy header, without reading the pixels."""
    with _open_npz(path) as zf:
        header = _npy_header(zf, path, "x_train")
    return _image_shape(path, "x_train", header[0])


@contextmanager
def _open_npz(path: Path) -> Iterator[zipfile.ZipFile]:
    with open_untrusted(path, "dataset file") as f:
        try:
            zf = zipfile.ZipFile(f)
        except (zipfile.BadZipFile, OSError) as exc:
            raise UserError(f"{path}: not an NPZ file ({exc})") from None
        with zf:
            yield zf


def _npy_header(zf: zipfile.ZipFile, path: Path, name: str) -> tuple[tuple[int, ...], np.dtype]:
    names = {n.removesuffix(".npy") for n in zf.namelist()}
    missing = [a for a in NPZ_ARRAYS if a not in names]
    if missing:
        raise UserError(f"{path}: missing array{'s' * (len(missing) > 1)} {', '.join(missing)} "
                        f"(an NPZ dataset holds {', '.join(NPZ_ARRAYS)}; found {', '.join(sorted(names)) or 'none'})")
    try:
        with zf.open(f"{name}.npy") as f:
            version = np.lib.format.read_magic(f)
            read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, _, dtype = read(f)
    except (ValueError, OSError, zipfile.BadZipFile) as exc:
        raise UserError(f"{path}: {name} is not a NumPy array ({exc})") from None
    if dtype.hasobject:
        raise UserError(f"{path}: {name} holds Python objects; only numeric arrays are read")
    if math.prod(shape) * dtype.itemsize > MAX_ARRAY_BYTES:
        raise UserError(f"{path}: {name} of shape {shape} is larger than {MAX_ARRAY_BYTES >> 30} GiB")
    return shape, dtype


def _image_shape(path: Path, name: str, shape: tuple[int, ...]) -> tuple[int, int, int]:
    if len(shape) == 3:
        return shape[1], shape[2], 1
    if len(shape) == 4 and shape[3] in (1, 3):
        return shape[1], shape[2], shape[3]
    raise UserError(f"{path}: {name} has shape {shape}; images are N x H x W or N x H x W x C with C 1 or 3")


def decode_npz(src: Source) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The four arrays of an NPZ source, checked from their headers before the pixels are read."""
    path = Path(src.path)
    with _open_npz(path) as zf:
        for name in NPZ_ARRAYS:
            _npy_header(zf, path, name)
        try:  # what np.load does, on the file already opened and checked
            raw = {name: np.lib.format.read_array(zf.open(f"{name}.npy"), allow_pickle=False) for name in NPZ_ARRAYS}
        except (ValueError, OSError, zipfile.BadZipFile) as exc:
            raise UserError(f"{path}: cannot be read as NPZ ({exc})") from None
    out, converted = {}, 0
    for split in ("train", "test"):
        x, y = raw[f"x_{split}"], raw[f"y_{split}"]
        shape = _image_shape(path, f"x_{split}", x.shape)
        if (shape[0], shape[1]) != src.size:
            raise UserError(f"{path}: x_{split} images are {shape[0]}x{shape[1]}, x_train's are "
                            f"{src.size[0]}x{src.size[1]}")
        if y.ndim == 2 and y.shape[1] == 1:
            y = y[:, 0]
        if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
            raise UserError(f"{path}: y_{split} must be a 1-D array of integer labels (got {y.dtype} {y.shape})")
        if len(x) != len(y):
            raise UserError(f"{path}: x_{split} holds {len(x)} images but y_{split} holds {len(y)} labels")
        if len(y) and not 0 <= int(y.min()) <= int(y.max()) < MAX_CLASSES:  # before astype wraps a uint64
            bad = int(y.min()) if int(y.min()) < 0 else int(y.max())
            raise UserError(f"{path}: y_{split} holds the label {bad}; {_LABELS}")
        pixels = _to_uint8(path, f"x_{split}", x).reshape(len(x), shape[0], shape[1], shape[2])
        pixels, changed = _to_channels(pixels, src.channels or shape[2])
        converted += changed
        out[f"x_{split}"], out[f"y_{split}"] = _nchw(pixels), y.astype(np.int64)
    return out, {"converted": converted, "n": len(out["y_train"]) + len(out["y_test"]), "split": {"test": "x_test"}}


def _to_uint8(path: Path, name: str, x: np.ndarray) -> np.ndarray:
    if x.dtype == np.uint8:
        return x
    if np.issubdtype(x.dtype, np.floating):
        if x.size and not (np.isfinite(x).all() and x.min() >= 0.0 and x.max() <= 1.0):
            raise UserError(f"{path}: {name} holds floats outside [0, 1]; images are uint8 or floats in [0, 1]")
        return np.rint(x * 255.0).astype(np.uint8)
    raise UserError(f"{path}: {name} is {x.dtype}; images are uint8 or floats in [0, 1]")


def _to_channels(x: np.ndarray, channels: int) -> tuple[np.ndarray, int]:
    """NHWC uint8 with `channels`: grey -> RGB replicates, RGB -> grey is ITU-R 601-2 luma (as Pillow)."""
    if x.shape[3] == channels:
        return x, 0
    if channels == 3:
        return np.repeat(x, 3, axis=3), len(x)
    luma = (x[..., 0] * 299 + x[..., 1] * 587 + x[..., 2] * 114 + 500) // 1000
    return luma.astype(np.uint8)[..., None], len(x)


# ---------------------------------------------------------------- csv

def decode_csv(src: Source) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """A CSV source's rows (and its test file's, if any) into splits."""
    assert src.size is not None and src.channels is not None
    shape = (*src.size, src.channels)
    x, y = _read_csv(Path(src.path), shape)
    test = _read_csv(Path(src.test), shape) if src.test else None
    arrays, meta = _splits(src, x, y, test, "file")
    return arrays, {**meta, "n": len(y) + (len(test[1]) if test else 0)}


def _read_csv(path: Path, shape: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Kaggle-MNIST rows `label,p0,p1,...` (HWC order), an optional header line, into NHWC and labels."""
    raw = read_untrusted_bytes(path, "dataset file", MAX_CSV_BYTES)
    lines = raw.replace(b"\r\n", b"\n").split(b"\n")
    first = 0
    if lines and not lines[0].split(b",", 1)[0].strip().lstrip(b"-").isdigit():
        first = 1  # a header such as label,pixel0,...
    want = 1 + math.prod(shape)
    rows: list[tuple[int, bytes]] = []  # (line number, line)
    for number, line in enumerate(lines[first:], first + 1):
        if not line.strip():
            continue
        if line.count(b",") != want - 1:
            raise UserError(f"{path}: row {number} has {line.count(b',') + 1} values, expected {want} "
                            f"(a label and {want - 1} pixels for {shape[0]}x{shape[1]}x{shape[2]})")
        rows.append((number, line))
    if not rows:
        raise UserError(f"{path}: the CSV has no data rows (expected lines of a label and {want - 1} pixels)")
    try:
        cells = b",".join(line for _, line in rows).split(b",")
        values = np.array(cells, dtype=np.bytes_).astype(np.int64).reshape(len(rows), want)
    except (ValueError, OverflowError):  # OverflowError: a cell past int64
        values = None
    if values is None or values.min() < 0 or values[:, 1:].max() > 255 or values[:, 0].max() >= MAX_CLASSES:
        raise _bad_cell(path, rows)
    return values[:, 1:].astype(np.uint8).reshape(len(rows), *shape), values[:, 0].copy()


def _bad_cell(path: Path, rows: list[tuple[int, bytes]]) -> UserError:
    """The first cell that is not an integer in its column's range, named by row (line number) and column."""
    for number, line in rows:
        for column, cell in enumerate(line.split(b","), 1):
            what, top = ("label", MAX_CLASSES - 1) if column == 1 else ("pixel", 255)
            text = cell.strip().decode("ascii", "replace")
            shown = text if len(text) <= 20 else f"{text[:12]}... ({len(text)} characters)"
            try:
                value = int(cell) if len(text) <= 20 else None  # int() of thousands of digits is slow or refused
            except ValueError:
                value = None
            if value is None and not text.lstrip("+-").isdigit():
                return UserError(f"{path}: row {number}, column {column}: {shown or 'an empty cell'} is not an integer")
            if value is None or not 0 <= value <= top:
                rule = _LABELS if column == 1 else "pixels are 0 to 255"
                return UserError(f"{path}: row {number}, column {column}: {what} {shown} is out of range; {rule}")
    return UserError(f"{path}: a value is not an integer in range")  # unreachable: int() is what numpy applies
