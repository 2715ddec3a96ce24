"""Datasets a user describes: an image folder, an NPZ file or a Kaggle-style CSV, as a table, JSON or compactly
(`folder:imgs,size=32x32,channels=3`). `canonical_source` pins path, size, channels and classes in one compact
string, so a stored study describes its data without reading it again.
"""

from __future__ import annotations

import json
import logging
import math
import os
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from convstudy.data import cache
from convstudy.data.images import IMAGE_SUFFIXES, BadImage, decode_image, image_size
from convstudy.data.split import stratified_split
from convstudy.errors import UserError
from convstudy.untrusted import open_untrusted, read_untrusted_bytes, shown_path

_ESCAPE = {"%": "%25", ",": "%2C", "|": "%7C", "=": "%3D"}
MAX_CLASSES = 100_000
_LABELS = f"labels are class indices 0 to {MAX_CLASSES - 1:,}"
_TWO_CLASSES = "a classifier needs at least 2 classes"
NPZ_ARRAYS = ("x_train", "y_train", "x_test", "y_test")
MAX_ARRAY_BYTES = 64 << 30
MAX_CSV_BYTES = 2 << 30  # Kaggle's MNIST train.csv is 73 MiB; CIFAR-10 as CSV is about 600 MiB

log = logging.getLogger(__name__)
_warned: set[tuple[str, str]] = set()


@dataclass(frozen=True)
class Source:
    """A described dataset; `canonical()` is its one spelling in studies and reports."""

    kind: str
    path: str
    size: tuple[int, int] | None = None
    channels: int | None = None
    classes: tuple[str, ...] | None = None
    resize: bool | None = None  # folder: None = resize iff a size was declared
    test: str | None = None  # csv: a separate test file
    test_fraction: float = 0.2
    split_seed: int = 0
    skip_bad: bool = False

    @property
    def pinned(self) -> bool:
        """Whether shape and classes are known without reading the data."""
        return (self.size is not None and self.channels is not None and self.classes is not None
                and os.path.isabs(self.path) and (self.kind != "folder" or self.resize is not None))

    def canonical(self) -> str:
        """`kind:PATH,key=value,...` with every option spelled out, values %-escaped."""
        parts = [f"{self.kind}:{_esc(self.path)}"]
        if self.test is not None:
            parts.append(f"test={_esc(self.test)}")
        if self.size is not None:
            parts.append(f"size={self.size[0]}x{self.size[1]}")
        if self.kind == "folder" and self.resize is not None:
            parts.append(f"resize={'yes' if self.resize else 'no'}")
        if self.channels is not None:
            parts.append(f"channels={self.channels}")
        if self.classes is not None:
            parts.append("classes=" + "|".join(_esc(c) for c in self.classes))
        if self.kind == "folder" or (self.kind == "csv" and self.test is None):
            parts.append(f"test_fraction={self.test_fraction:g}")
            parts.append(f"split_seed={self.split_seed}")
        if self.kind == "folder":
            parts.append(f"skip_bad={'yes' if self.skip_bad else 'no'}")
        return ",".join(parts)

    def decode_key(self) -> dict[str, Any]:
        """The options that change decoded tensors (labels are checked against classes after decoding)."""
        return {"kind": self.kind, "path": self.path, "test": self.test, "size": self.size, "channels": self.channels,
                "resize": self.resize, "test_fraction": self.test_fraction, "split_seed": self.split_seed,
                "skip_bad": self.skip_bad, "classes": self.classes if self.kind == "folder" else None}


def is_source(value: Any) -> bool:
    """Whether `value` describes a source rather than naming a registered dataset."""
    if isinstance(value, (dict, Source)):
        return True
    if not isinstance(value, str):
        return False
    text = value.strip()
    return text.startswith("{") or text.split(":", 1)[0] in KINDS and ":" in text


def parse_source(value: Any) -> Source:
    """A Source from a table, a JSON string or a compact string; every mistake is one UserError line."""
    if isinstance(value, Source):
        return value
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("{"):
            if len(text) > 1 << 20:
                raise UserError("dataset: the JSON description is longer than 1 MiB")
            try:
                value = json.loads(text)
            except json.JSONDecodeError as exc:
                raise UserError(f"dataset: not valid JSON ({exc.msg} at character {exc.pos})") from None
        else:
            value = _parse_compact(text)
    if not isinstance(value, dict):
        raise UserError("dataset: a source is a table with kind and path")
    kind = value.get("kind")
    if kind not in KINDS:
        raise UserError(f'dataset: kind must be one of {", ".join(KINDS)} (got {_show(kind)})')
    unknown = [k for k in value if k != "kind" and k not in KINDS[kind].options]
    if unknown:
        raise UserError(f'dataset: {kind} has no option "{_show(unknown[0], quote=False)}"; valid: {", ".join(KINDS[kind].options)}')
    return _build(kind, value)


def canonical_source(value: Any) -> str:
    """The canonical compact string of a source, reading the data only for what is not declared."""
    return resolve(parse_source(value)).canonical()


def resolve(src: Source) -> Source:
    """`src` with an absolute path and size, channels and classes pinned (from the data if undeclared)."""
    if src.pinned:
        return src
    path = str(Path(src.path).expanduser().absolute())
    test = str(Path(src.test).expanduser().absolute()) if src.test else None
    src = replace(src, path=path, test=test)
    if src.kind == "folder":
        layout = _folder_layout(src)
        classes = src.classes or tuple(sorted(layout.class_dirs))
        resize = src.resize if src.resize is not None else src.size is not None
        size = src.size or _first_size(src, layout)
        return replace(src, classes=classes, size=size, resize=resize, channels=src.channels or 3)
    if src.kind == "npz":
        shape = _npz_image_shape(Path(src.path))
        size, channels = (shape[0], shape[1]), shape[2]
        if src.size is not None and src.size != size:
            raise UserError(f"{src.path}: images are {size[0]}x{size[1]}, the dataset declares "
                            f"{src.size[0]}x{src.size[1]} (arrays are not resized)")
        src = replace(src, size=size, channels=src.channels or channels)
    if src.size is None:
        raise UserError(f"{src.path}: a csv dataset needs its image shape: size = [H, W] (and channels, default 1)")
    src = replace(src, channels=src.channels or 1)
    if src.classes is None:
        arrays, _ = _decoded(src)
        top = max(int(arrays["y_train"].max(initial=0)), int(arrays["y_test"].max(initial=0)))
        if top == 0:
            raise UserError(f"{src.path}: every label is 0, one class; {_TWO_CLASSES}")
        src = replace(src, classes=tuple(str(i) for i in range(top + 1)))
    return src


# ---------------------------------------------------------------- loading

def load_source(value: Any) -> tuple[dict[str, np.ndarray], dict[str, Any], Source]:
    """Decoded NCHW uint8 arrays of a source, its provenance and its resolved form (cached decode)."""
    src = resolve(parse_source(value))
    arrays, meta = _decoded(src)
    names = src.classes or ()
    for split in ("train", "test"):
        labels = arrays[f"y_{split}"]
        if not len(labels):
            raise UserError(f"{src.path}: the {split} split is empty"
                            + (f" (test_fraction {src.test_fraction:g} of {meta['n']} images)" if split == "test" else ""))
        if src.kind != "folder" and int(labels.max()) >= len(names):
            where = src.test if split == "test" and src.test else src.path
            raise UserError(f"{where}: label {int(labels.max())} is outside the {len(names)} classes "
                            f"({_show_list(names)})")
    skipped = meta.get("skipped", [])
    if skipped and (src.canonical(), meta["key"]) not in _warned:
        _warned.add((src.canonical(), meta["key"]))
        shown = ", ".join(f"{p} ({why})" for p, why in skipped[:10])
        more = f" and {len(skipped) - 10} more" if len(skipped) > 10 else ""
        log.warning("convstudy: warning: %s: skipped %d bad image%s (skip_bad): %s%s", src.path, len(skipped),
                    "s" * (len(skipped) > 1), shown, more)
    provenance = {"dataset": src.canonical(), "fingerprint": meta["key"], "kind": src.kind, "n_train": len(arrays["y_train"]),
                  "n_test": len(arrays["y_test"]), "split": meta.get("split"), "skipped": skipped,
                  "converted": meta.get("converted", 0), "decoded_cache": meta.get("cache")}
    return arrays, provenance, src


def _decoded(src: Source) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    files = _source_files(src)
    key = cache.fingerprint({"source": src.decode_key(), "files": files})
    hit = cache.read(src.decode_key(), key)
    if hit is not None:
        arrays, meta = hit
        return arrays, {**meta, "key": key, "cache": "hit"}
    arrays, meta = KINDS[src.kind].decode(src)
    cache.write(src.decode_key(), key, arrays, meta)
    return arrays, {**meta, "key": key, "cache": "miss"}


def _source_files(src: Source) -> list[tuple[str, int, int]]:
    """(path, size, mtime_ns) of every file the source reads: what the cache is keyed by."""
    paths = ([p for entries in _folder_layout(src).files.values() for _, p in entries] if src.kind == "folder"
             else [src.path] + ([src.test] if src.test else []))
    out = []
    for p in paths:
        try:
            st = os.stat(p)
        except FileNotFoundError:
            raise UserError(f"{p}: no such file") from None
        except OSError as exc:
            raise UserError(f"{p}: cannot be read ({exc.strerror or exc})") from None
        out.append((p, st.st_size, st.st_mtime_ns))
    return out


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


def _folder_layout(src: Source) -> _Layout:
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
        raise UserError(f'{tops["train"]}: one class folder ("{next(iter(class_dirs))}"); {_TWO_CLASSES}')
    classes = src.classes or tuple(sorted(class_dirs))
    files: dict[str, list[tuple[str, str]]] = {}
    for split, top in tops.items():
        dirs = class_dirs if split == "train" else _subdirs(top)
        for name in sorted(dirs):
            if name not in classes:
                raise UserError(f"{dirs[name]}: class folder \"{name}\" is not among the classes ({_show_list(classes)})")
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
        if not _is_utf8(name):  # a class name: studies, reports and the database are UTF-8
            raise UserError(f"{shown_path(path)}: folder name is not valid UTF-8; rename it (class names are "
                            "taken from folder names)")
    return dirs


def _is_utf8(text: str) -> bool:
    """Whether `text` is valid Unicode: os and sys.argv hand undecodable bytes over as lone surrogates."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


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


def _first_size(src: Source, layout: _Layout) -> tuple[int, int]:
    for _, path in layout.files["train"]:
        try:
            return image_size(path)
        except BadImage as exc:
            if not src.skip_bad:
                raise UserError(f"{path}: {exc}; remove it or set skip_bad = true in the dataset") from None
    raise UserError(f"{src.path}: no readable image to take the size from")


def _decode_folder(src: Source) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    assert src.size is not None and src.channels is not None and src.classes is not None
    layout = _folder_layout(src)
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

def _npz_image_shape(path: Path) -> tuple[int, int, int]:
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


def _decode_npz(src: Source) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
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

def _decode_csv(src: Source) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
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


# ---------------------------------------------------------------- the kinds

@dataclass(frozen=True)
class SourceKind:
    """One kind of described dataset: the options its table takes and how its files decode to NCHW arrays."""

    options: tuple[str, ...]
    decode: Callable[[Source], tuple[dict[str, np.ndarray], dict[str, Any]]]


# Every source kind, one table (tests/test_registries.py loads and refuses a tiny file of each).
KINDS: dict[str, SourceKind] = {
    "folder": SourceKind(("path", "size", "resize", "channels", "classes", "test_fraction", "split_seed", "skip_bad"),
                         _decode_folder),
    "npz": SourceKind(("path", "size", "channels", "classes"), _decode_npz),
    "csv": SourceKind(("path", "test", "size", "channels", "classes", "test_fraction", "split_seed"), _decode_csv),
}


# ---------------------------------------------------------------- spelling

def _build(kind: str, raw: dict[str, Any]) -> Source:
    path = raw.get("path")
    if not isinstance(path, str) or not path.strip():
        raise UserError(f"dataset: {kind} needs path = \"...\" (a {'folder' if kind == 'folder' else 'file'})")
    for key in ("path", "test", "classes"):
        texts = raw.get(key) if isinstance(raw.get(key), list) else [raw.get(key)]
        bad = next((t for t in texts if isinstance(t, str) and not _is_utf8(t)), None)
        if bad is not None:
            raise UserError(f'dataset: {key} "{shown_path(bad)}" is not valid UTF-8 (studies and reports are UTF-8)')
    fields: dict[str, Any] = {"kind": kind, "path": path}
    if "size" in raw:
        fields["size"] = _size(raw["size"])
    if "channels" in raw:
        if raw["channels"] not in (1, 3) or isinstance(raw["channels"], bool):
            raise UserError(f"dataset: channels must be 1 or 3 (got {_show(raw['channels'])})")
        fields["channels"] = int(raw["channels"])
    if "classes" in raw:
        fields["classes"] = _classes(raw["classes"])
    for key in ("resize", "skip_bad"):
        if key in raw:
            fields[key] = _bool(key, raw[key])
    if "test" in raw:
        if not isinstance(raw["test"], str) or not raw["test"].strip():
            raise UserError("dataset: test must be a file path")
        fields["test"] = raw["test"]
    if "test_fraction" in raw:
        f = raw["test_fraction"]
        if isinstance(f, bool) or not isinstance(f, (int, float)) or not 0.0 < f < 1.0:
            raise UserError(f"dataset: test_fraction must be between 0 and 1, exclusive (got {_show(f)})")
        fields["test_fraction"] = float(f)
    if "split_seed" in raw:
        s = raw["split_seed"]
        if isinstance(s, bool) or not isinstance(s, int) or not 0 <= s < 2**63:
            raise UserError(f"dataset: split_seed must be an integer >= 0 (got {_show(s)})")
        fields["split_seed"] = s
    return Source(**fields)


def _parse_compact(text: str) -> dict[str, Any]:
    kind, _, rest = text.partition(":")
    path, *options = rest.split(",")
    out: dict[str, Any] = {"kind": kind, "path": _unesc(path)}
    for option in options:
        key, eq, value = option.partition("=")
        key = key.strip()
        if not eq:
            raise UserError(f'dataset: "{_show(option, quote=False)}" is not key=value (in {_show(text[:200])})')
        if key in out:
            raise UserError(f'dataset: option "{_show(key, quote=False)}" given twice')
        value = value.strip()
        if key == "classes":
            out[key] = [_unesc(v) for v in value.split("|")]
        elif key in ("channels", "split_seed"):
            out[key] = int(value) if value.isdigit() else value
        elif key == "test_fraction":
            try:
                out[key] = float(value)
            except ValueError:
                out[key] = value
        elif key in ("path", "test"):
            out[key] = _unesc(value)
        else:
            out[key] = value
    return out


def _size(value: Any) -> tuple[int, int]:
    if isinstance(value, str):
        parts = value.lower().split("x")
        value = [int(p) if p.strip().isdigit() else p for p in parts]
    if (isinstance(value, (list, tuple)) and len(value) == 2
            and all(isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= 4096 for v in value)):
        return int(value[0]), int(value[1])
    raise UserError(f"dataset: size is [height, width] (or HxW), each 1..4096 (got {_show(value)})")


def _classes(value: Any) -> tuple[str, ...]:
    if (not isinstance(value, (list, tuple)) or not value or len(value) > MAX_CLASSES
            or not all(isinstance(v, str) and v.strip() for v in value)):
        raise UserError("dataset: classes is a non-empty list of class names")
    if len(value) == 1:
        raise UserError(f'dataset: classes lists one class ("{_show(value[0], quote=False)}"); {_TWO_CLASSES}')
    if len(set(value)) != len(value):
        dup = next(v for v in value if value.count(v) > 1)
        raise UserError(f'dataset: class "{_show(dup, quote=False)}" is listed twice')
    return tuple(value)


def _bool(key: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("yes", "true", "no", "false"):
        return value.lower() in ("yes", "true")
    raise UserError(f"dataset: {key} must be true or false (got {_show(value)})")


def _esc(text: str) -> str:
    return "".join(_ESCAPE.get(ch, ch) for ch in text)


def _unesc(text: str) -> str:
    for ch, code in sorted(_ESCAPE.items(), key=lambda kv: kv[0] == "%"):
        text = text.replace(code, ch).replace(code.lower(), ch)
    return text


def _show(value: Any, quote: bool = True) -> str:
    text = value if isinstance(value, str) else repr(value) if isinstance(value, (int, float, bool, type(None))) \
        else type(value).__name__
    text = " ".join(text.split())
    text = text if len(text) <= 60 else text[:57] + "..."
    return f'"{text}"' if quote and isinstance(value, str) else text


def _show_list(names: tuple[str, ...] | list[str]) -> str:
    shown = ", ".join(names[:12])
    return shown + (f", ... ({len(names)} in all)" if len(names) > 12 else "")
