"""The IDX file format (MNIST's): gunzip, checksum and parse into numpy arrays without copies."""

from __future__ import annotations

import gzip
import hashlib
import math
import zlib

import numpy as np

from convstudy.data.registry import DatasetInfo

IMAGES_MAGIC = 0x00000803  # unsigned bytes, 3 dims (N, H, W)
LABELS_MAGIC = 0x00000801  # unsigned bytes, 1 dim (N,)
GZIP_MAGIC = b"\x1f\x8b"


class IdxError(ValueError):
    """A file that is not what it should be; the message says how, without naming the file."""


def read_dataset_file(raw: bytes, info: DatasetInfo, key: str) -> np.ndarray:
    """Parse one of a dataset's four files and check it against the registry's digests."""
    magic = IMAGES_MAGIC if key.endswith("_images") else LABELS_MAGIC
    return read_idx(raw, magic, info.sha256.get(key), info.gz_sha256.get(key))


def read_idx(
    raw: bytes, magic: int, sha256: str | None = None, gz_sha256: str | None = None
) -> np.ndarray:
    """Parse an IDX file, gzipped or not, checking its structure first and then the digests."""
    # Sniff rather than trust the name: a browser may save a decompressed file as ".gz".
    gzipped = raw[:2] == GZIP_MAGIC
    data = gunzip(raw) if gzipped else raw
    array = parse_idx(data, magic)
    if gzipped and gz_sha256:
        _check_digest(raw, gz_sha256, "SHA-256 of the .gz")
    if sha256:
        _check_digest(data, sha256, "SHA-256")
    return array


def gunzip(raw: bytes) -> bytes:
    """Decompress a gzip stream; a truncated or damaged one is an IdxError."""
    try:
        return gzip.decompress(raw)
    except EOFError:
        raise IdxError("corrupt IDX file (truncated gzip stream)") from None
    except (gzip.BadGzipFile, zlib.error) as exc:
        raise IdxError(f"corrupt IDX file (bad gzip stream: {exc})") from None


def parse_idx(data: bytes, magic: int) -> np.ndarray:
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
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)


def _check_digest(data: bytes, expected: str, what: str) -> None:
    got = hashlib.sha256(data).hexdigest()
    if got != expected:
        raise IdxError(f"{what} mismatch (expected {expected[:12]}…, got {got[:12]}…)")
