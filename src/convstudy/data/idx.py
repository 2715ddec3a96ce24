"""The IDX file format (MNIST's): gunzip as a stream under a size cap, checksum, parse to numpy."""

from __future__ import annotations

import gzip
import hashlib
import math
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from convstudy.data.registry import DatasetInfo

IMAGES_MAGIC = 0x00000803  # unsigned bytes, 3 dims (N, H, W)
LABELS_MAGIC = 0x00000801  # unsigned bytes, 1 dim (N,)
GZIP_MAGIC = b"\x1f\x8b"
CHUNK = 1 << 20
# The cap for an entry that names no expected size: far above any MNIST-like file, far below a bomb.
MAX_IDX_BYTES = 1 << 30


class IdxError(ValueError):
    """A file that is not what it should be; the message says how, without naming the file."""


@dataclass(frozen=True)
class IdxFile:
    """One parsed file: its array, and why no digest vouches for it (None: verified)."""

    array: np.ndarray
    unverified: str | None = None


def size_limit(info: DatasetInfo, key: str) -> int:
    """The most decompressed bytes `key`'s file may have: its expected size, where known."""
    return info.sizes.get(key) or MAX_IDX_BYTES


def read_dataset_file(path: Path, info: DatasetInfo, key: str, strict: bool = False) -> IdxFile:
    """Read, parse and verify one of a dataset's four files; `strict` refuses unverifiable ones."""
    # The digests of the decompressed bytes decide where the registry has them, so any
    # recompression of the real data verifies. Otherwise only a byte-identical copy of the published
    # .gz verifies; any other copy of the right structure and size comes back marked unverified.
    magic = IMAGES_MAGIC if key.endswith("_images") else LABELS_MAGIC
    limit = size_limit(info, key)
    with path.open("rb") as stream:
        data, gz_digest = read_capped(stream, limit, info.name)
    array = parse_idx(data, magic)
    expected = info.sha256.get(key)
    if expected:
        got = hashlib.sha256(data).hexdigest()
        if got != expected:
            raise IdxError(
                f"content is not the real {info.name} (SHA-256 mismatch of the decompressed bytes: "
                f"expected {expected[:12]}…, got {got[:12]}…)"
            )
        return IdxFile(array)
    published = info.gz_sha256.get(key)
    if published and gz_digest == published:
        return IdxFile(array)
    size = info.sizes.get(key)
    if size is not None and len(data) != size:
        raise IdxError(
            f"content is not the real {info.name} ({len(data)} bytes decompressed, "
            f"the real file has {size})"
        )
    if published is None:
        why = f"the registry has no digest for {info.name}"
    elif gz_digest is None:
        why = f"uncompressed, and only the published {info.name} .gz archives have known digests"
    else:
        why = (
            f"not the published {info.name} .gz archive (SHA-256 of the .gz mismatch: "
            f"expected {published[:12]}…, got {gz_digest[:12]}…)"
        )
    if strict:
        raise IdxError(why)
    return IdxFile(array, unverified=why)


def read_capped(stream: BinaryIO, limit: int, name: str) -> tuple[bytearray, str | None]:
    """The IDX bytes of a file, gunzipped if gzipped, and the SHA-256 of the .gz (None if not one); past `limit`
    decompressed bytes it is an IdxError at once, so a gzip bomb costs one chunk of work."""
    # Sniff rather than trust the name: a browser may save a decompressed file as ".gz".
    gz_digest = None
    if stream.read(2) == GZIP_MAGIC:
        stream.seek(0)
        gz_digest = hashlib.file_digest(stream, "sha256").hexdigest()  # type: ignore[arg-type]
    stream.seek(0)
    # GzipFile reads concatenated members and the zero padding between them, as gzip itself allows.
    reader = stream if gz_digest is None else gzip.GzipFile(fileobj=stream, mode="rb")
    data = bytearray()
    try:
        while chunk := reader.read(min(CHUNK, limit + 1 - len(data))):
            data += chunk
            if len(data) > limit:
                what = "more than" if gz_digest is None else "gzip stream decompresses to more than"
                raise IdxError(f"{what} {limit} bytes, the most a {name} file has")
    except (gzip.BadGzipFile, zlib.error) as exc:
        raise IdxError(f"corrupt IDX file (bad gzip stream: {exc})") from None
    except EOFError:
        raise IdxError("corrupt IDX file (truncated gzip stream)") from None
    return data, gz_digest


def parse_idx(data: bytes | bytearray, magic: int) -> np.ndarray:
    """A read-only uint8 view of an IDX payload whose header must carry `magic`."""
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(data) < header:
        raise IdxError(f"corrupt IDX file ({len(data)} bytes, shorter than its header)")
    found = int.from_bytes(data[:4], "big")
    if found != magic:
        raise IdxError(f"corrupt IDX file (magic 0x{found:08x}, expected 0x{magic:08x})")
    dims = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    size = header + math.prod(dims)
    if len(data) != size:
        raise IdxError(
            f"corrupt IDX file ({len(data)} bytes, header dims {dims} need {size})"
        )
    array = np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)
    array.flags.writeable = False
    return array
