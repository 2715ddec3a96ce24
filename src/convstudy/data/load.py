"""Loading a registered dataset into uint8 NCHW tensors, downloading whatever is missing."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from convstudy.data.cifar import load_cifar
from convstudy.data.download import download_missing, replace_file
from convstudy.data.idx import IdxError, IdxFile, read_dataset_file
from convstudy.data.registry import FILE_KEYS, REGISTRY, DatasetInfo, get_info
from convstudy.data.sources import is_source, load_source
from convstudy.errors import UserError

ENV_VAR = "CONVSTUDY_DATA_DIR"

log = logging.getLogger(__name__)
# (dataset, file paths) already warned about: a run loads its dataset more than once.
_warned: set[tuple[str, tuple[Path, ...]]] = set()


# eq=False: comparing datasets field by field would compare tensors, which has no single answer.
@dataclass(frozen=True, eq=False)
class Dataset:
    """A whole dataset in memory: uint8 [N, C, H, W] images and int64 labels, train and test."""

    info: DatasetInfo
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    source_dir: Path
    # What the run's provenance records about the data: canonical spelling, fingerprint, split, skipped files.
    provenance: dict = field(default_factory=dict)


def resolve_data_dir(name: str, data_dir: str | Path | None = None) -> Path:
    """`name`'s folder: `data_dir`, else $CONVSTUDY_DATA_DIR, else ~/.cache/convstudy/<name>; a given directory
    with a sub-folder `name` stands for it, so one root holds several datasets (whose file names are the same)."""
    given = data_dir or os.environ.get(ENV_VAR)
    if not given:
        return cache_dir(name)
    root = Path(given).expanduser().absolute()
    return root / name if (root / name).is_dir() else root


def cache_dir(name: str) -> Path:
    """convstudy's own download cache for `name`: the one folder whose files it may replace."""
    return Path.home() / ".cache" / "convstudy" / name


def load_dataset(name: str | dict, data_dir: str | Path | None = None, download: bool = True) -> Dataset:
    """Load a registered dataset (verified, fetching missing files if allowed) or a described source."""
    if is_source(name):
        arrays, prov, src = load_source(name)
        info = get_info(src.canonical())
        return Dataset(info, *(torch.from_numpy(arrays[k]) for k in ("x_train", "y_train", "x_test", "y_test")),
                       source_dir=Path(src.path), provenance=prov)
    info = get_info(name)
    directory = resolve_data_dir(name, data_dir)
    if info.format != "idx":
        own = directory == cache_dir(name)
        arrays, archive = load_cifar(info, directory, download, own_cache=own)
        return Dataset(info, *(torch.from_numpy(arrays[k]) for k in ("x_train", "y_train", "x_test", "y_test")),
                       source_dir=directory, provenance={"dataset": name, "archive": archive,
                                                        "md5": info.md5["archive"]})
    if directory.exists() and not directory.is_dir():
        raise UserError(f"{name}: {directory} is not a directory; pass --data-dir DIR")
    missing = [key for key in FILE_KEYS if _locate(directory, info.files[key]) is None]
    if missing and not download:
        raise UserError(f"{name}: {', '.join(info.files[key] for key in missing)} not found in {directory} "
                        "(downloading is off); download them by hand or pass --data-dir DIR")
    if missing:
        download_missing(info, directory, missing)
    # Only convstudy's own cache holds files it may replace; anywhere else they are the user's.
    replace, unverified = download and directory == cache_dir(name), []
    read = partial(_read, info, directory, replace=replace, unverified=unverified)
    x_train, y_train = _split(info, read, "train")
    x_test, y_test = _split(info, read, "test")
    if unverified and (name, tuple(unverified)) not in _warned:
        _warned.add((name, tuple(unverified)))
        log.warning(
            "convstudy: warning: %s: %s in %s accepted UNVERIFIED: no known digest covers a copy "
            "other than the published .gz (only IDX structure and sizes were checked)",
            name, ", ".join(path.name for path in unverified), directory,
        )
    return Dataset(info, x_train, y_train, x_test, y_test, directory, provenance={"dataset": name})


def dataset_status(data_dir: str | Path | None = None) -> list[dict]:
    """Per registered dataset: its shape, where its files are looked for, which are there or not."""
    rows = []
    for name, info in REGISTRY.items():
        directory = resolve_data_dir(name, data_dir)
        found = {key: _locate(directory, file, idx=info.format == "idx") for key, file in info.files.items()}
        rows.append({
            "name": name,
            "input_shape": info.input_shape,
            "num_classes": info.num_classes,
            "dir": str(directory),
            "present": [path.name for path in found.values() if path is not None],
            "missing": [info.files[key] for key, path in found.items() if path is None],
        })
    return rows


def _locate(directory: Path, file_name: str, idx: bool = True) -> Path | None:
    """The file as served (.gz) or, for an IDX file, decompressed by hand, whichever is there, .gz first."""
    candidates = [directory / file_name]
    if idx and file_name.endswith(".gz"):
        candidates.append(directory / file_name[: -len(".gz")])
    return next((path for path in candidates if path.is_file()), None)


def _read(info: DatasetInfo, directory: Path, key: str, *, replace: bool,
          unverified: list[Path]) -> tuple[Path, np.ndarray]:
    """The path and parsed array of `key`'s file; a bad one is replaced where `replace`, an unverified one noted."""
    path = _locate(directory, info.files[key])
    if path is None:  # vanished between the download and now
        raise UserError(f"{info.name}: {info.files[key]} not found in {directory}")
    try:
        parsed = _parse(path, info, key)
    except UserError as exc:
        if not replace:
            raise
        replace_file(info, directory, key, str(exc))
        path = directory / info.files[key]
        parsed = _parse(path, info, key)
    if parsed.unverified:
        unverified.append(path)
    return path, parsed.array


def _parse(path: Path, info: DatasetInfo, key: str) -> IdxFile:
    try:
        return read_dataset_file(path, info, key)
    except OSError as exc:
        raise UserError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    except IdxError as exc:
        raise UserError(f"{path}: {exc}") from None


def _split(info: DatasetInfo, read: Callable[[str], tuple[Path, np.ndarray]],
           split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Images [N, C, H, W] uint8 and labels [N] int64 of one split, cross-checked."""
    images_path, images = read(f"{split}_images")
    labels_path, labels = read(f"{split}_labels")
    height, width, channels = info.input_shape
    if images.shape[1:] != (height, width):
        raise UserError(f"{images_path}: images are {images.shape[1]}x{images.shape[2]}, "
                        f"{info.name} expects {height}x{width}")
    if len(images) != len(labels):
        raise UserError(f"{images_path} holds {len(images)} images but {labels_path} holds {len(labels)} labels")
    if labels.size and int(labels.max()) >= info.num_classes:
        raise UserError(f"{labels_path}: label {int(labels.max())} is out of range for {info.num_classes} classes")
    # The parsed arrays are read-only views of the file bytes; copy once into torch's memory.
    x = torch.from_numpy(images.copy()).reshape(len(images), channels, height, width)
    return x, torch.from_numpy(labels.astype(np.int64))
