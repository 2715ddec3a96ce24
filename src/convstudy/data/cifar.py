"""CIFAR-10 and CIFAR-100 from their BINARY archives (never the pickled python version), MD5-verified, read as a
tar stream (only the expected members, each under its real size) and decoded once into the decoded-tensor cache.
"""

from __future__ import annotations

import hashlib
import tarfile
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np

from convstudy.data import cache
from convstudy.data.download import download_missing, replace_file
from convstudy.data.idx import IdxError
from convstudy.data.registry import DatasetInfo
from convstudy.errors import UserError

PIXELS = 32 * 32 * 3


@dataclass(frozen=True)
class Layout:
    """Where an archive keeps its batches and how long a record is."""

    train: tuple[str, ...]
    test: str
    label_bytes: int  # CIFAR-100 records carry (coarse, fine); the fine label is the class
    member_bytes: int  # the largest member of the real archive: the cap on any member


_LAYOUTS = {
    "cifar10": Layout(tuple(f"cifar-10-batches-bin/data_batch_{i}.bin" for i in range(1, 6)),
                      "cifar-10-batches-bin/test_batch.bin", 1, 10000 * (1 + PIXELS)),
    "cifar100": Layout(("cifar-100-binary/train.bin",), "cifar-100-binary/test.bin", 2, 50000 * (2 + PIXELS)),
}


def load_cifar(info: DatasetInfo, directory: Path, download: bool, own_cache: bool) -> tuple[dict[str, np.ndarray], str]:
    """NCHW uint8 arrays of a CIFAR archive in `directory` (fetched if missing and allowed) and its path."""
    archive = directory / info.files["archive"]
    if not archive.is_file():
        if not download:
            raise UserError(f"{info.name}: {archive.name} not found in {directory} (downloading is off); "
                            "download it by hand or pass --data-dir DIR")
        download_missing(info, directory, ["archive"], partial(_verify, info))
    identity = {"registered": info.name, "archive": str(archive)}

    def key() -> str:  # the archive's size and mtime: taken again after a replacement
        st = archive.stat()
        return cache.fingerprint({**identity, "stat": [st.st_size, st.st_mtime_ns], "md5": info.md5["archive"]})

    hit = cache.read(identity, key())
    if hit is not None:
        return hit[0], str(archive)
    bad = _md5_problem(info, archive)
    if bad and own_cache and download:  # only convstudy's own download may be replaced
        replace_file(info, directory, "archive", f"{archive}: {bad}", partial(_verify, info))
    elif bad:
        raise UserError(f"{archive}: {bad}; convstudy does not replace your copy: delete it or fix --data-dir")
    arrays = parse_archive(archive, _LAYOUTS[info.format], info.num_classes)
    cache.write(identity, key(), arrays, {})
    return arrays, str(archive)


def parse_archive(archive: Path, layout: Layout, num_classes: int) -> dict[str, np.ndarray]:
    """Decode the binary batches of a CIFAR tar.gz into NCHW uint8 images and int64 labels."""
    wanted = set(layout.train) | {layout.test}
    found: dict[str, bytes] = {}
    try:
        with tarfile.open(archive, mode="r:gz") as tar:
            for member in tar:
                if member.name not in wanted:
                    continue
                if not member.isfile() or member.size > layout.member_bytes:
                    raise UserError(f"{archive}: {member.name} is not a batch of at most {layout.member_bytes} bytes")
                stream = tar.extractfile(member)
                assert stream is not None
                found[member.name] = stream.read(layout.member_bytes + 1)
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise UserError(f"{archive}: not a readable tar.gz archive ({exc})") from None
    missing = sorted(wanted - set(found))
    if missing:
        raise UserError(f"{archive}: missing {', '.join(missing)}; is this the binary version of the dataset?")
    out = {}
    for split, names in (("train", layout.train), ("test", (layout.test,))):
        xs, ys = [], []
        record = layout.label_bytes + PIXELS
        for name in names:
            data = found[name]
            if not data or len(data) % record:
                raise UserError(f"{archive}: {name} holds {len(data)} bytes, not whole {record}-byte records")
            rows = np.frombuffer(data, np.uint8).reshape(-1, record)
            labels = rows[:, layout.label_bytes - 1].astype(np.int64)
            if int(labels.max()) >= num_classes:
                raise UserError(f"{archive}: {name} holds label {int(labels.max())}, outside {num_classes} classes")
            xs.append(rows[:, layout.label_bytes:].reshape(-1, 3, 32, 32))  # planes R, G, B: already NCHW
            ys.append(labels)
        out[f"x_{split}"] = np.ascontiguousarray(np.concatenate(xs))
        out[f"y_{split}"] = np.concatenate(ys)
    return out


def _verify(info: DatasetInfo, part: Path) -> None:
    if problem := _md5_problem(info, part):
        raise IdxError(f"MD5 mismatch (expected {info.md5['archive']}; {problem})")


def _md5_problem(info: DatasetInfo, archive: Path) -> str | None:
    try:
        with archive.open("rb") as f:
            got = hashlib.file_digest(f, lambda: hashlib.md5(usedforsecurity=False)).hexdigest()
    except OSError as exc:
        return f"cannot be read ({exc.strerror or exc})"
    if got != info.md5["archive"]:
        return f"not the published {info.files['archive']} (MD5 {got}, expected {info.md5['archive']})"
    return None
