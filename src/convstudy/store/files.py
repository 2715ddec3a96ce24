"""Tensor files of a study directory: atomic safetensors writes and checked reads (never pickle)."""

from __future__ import annotations

import json
import os
import struct
import tempfile
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from convstudy.errors import StoreError


def atomic_write(path: Path, data: bytes) -> None:
    """Write to a temp file in the same directory, fsync it, rename over `path`, fsync the directory."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def save_tensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    """Atomically write a safetensors file."""
    atomic_write(path, st_save({k: v.contiguous() for k, v in tensors.items()}, metadata=metadata))


def load_tensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(tensors, metadata) of a safetensors file; a damaged file is a one-line StoreError naming it."""
    try:
        data = Path(path).read_bytes()
        tensors = st_load(data)
        # The header is a little-endian u64 length then JSON; its __metadata__ holds our string map.
        (size,) = struct.unpack("<Q", data[:8])
        metadata = json.loads(data[8:8 + size]).get("__metadata__") or {}
    except FileNotFoundError:
        raise StoreError(f"{path}: missing") from None
    except (SafetensorError, ValueError, OSError, RuntimeError, struct.error) as exc:
        reason = " ".join(str(exc).split())[:160]
        raise StoreError(f"{path}: corrupt tensor file ({reason}); nothing was changed") from None
    return tensors, metadata
