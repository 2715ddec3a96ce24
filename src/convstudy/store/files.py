"""Tensor files of a study directory: atomic safetensors writes and checked reads (never pickle).

Every file carries in its metadata a SHA-256 content digest and, for a trial's files, the trial's identity:
safetensors has no checksum, so otherwise a flipped bit, or a checkpoint copied from another seed or model,
would load silently. `load_tensors` checks both.
"""

from __future__ import annotations

import hashlib
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

# One metadata key holds {"sha256": digest, "trial": identity}: safetensors writes metadata keys in
# hash order, so a file with only this key is byte-identical between processes.
INTEGRITY_KEY = "convstudy.integrity"
DIGEST_KEY = "convstudy.sha256"  # the digest, as `decode_tensors` hands it back in the metadata


class DamagedFile(StoreError):
    """A tensor file that cannot be trusted: unreadable, its digest wrong, or another trial's."""


def atomic_write(path: Path, data: bytes, mode: int | None = None) -> None:
    """Write to a temp file in the same directory, fsync it, rename over `path`, fsync the directory;
    `mode` replaces mkstemp's 0600, for files others read (reports, `-o` outputs)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def umask_mode() -> int:
    """The mode a plain `open` would give a new file: for files others read, not mkstemp's 0600."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def identity(study: str, model: str, seed: int, instance: str | None = None) -> str:
    """The identity string a trial's files carry: which study (fingerprint), model and seed made them, and
    which study.db (`instance`, made with it), so files a run left behind never join a recreated study.db."""
    ident: dict[str, str | int] = {"study": study, "model": model, "seed": seed}
    if instance is not None:  # study.db files from before instances carry none
        ident["instance"] = instance
    return json.dumps(ident, sort_keys=True)


def _digest(header: dict, body: memoryview | bytes, trial: str | None) -> str:
    """The file's content digest: tensors, metadata and trial identity, less the study.db instance, so the same
    trial trained to the same bits has the same digest in any directory (the instance is checked on load)."""
    if trial is not None and '"instance"' in trial:
        trial = json.dumps({k: v for k, v in json.loads(trial).items() if k != "instance"}, sort_keys=True)
    head = {k: v for k, v in header.items() if k != "__metadata__"}
    meta = {k: v for k, v in (header.get("__metadata__") or {}).items() if k != INTEGRITY_KEY}
    h = hashlib.sha256(json.dumps({"tensors": head, "meta": meta, "trial": trial}, sort_keys=True).encode())
    h.update(body)
    return h.hexdigest()


def _split(data: bytes) -> tuple[dict, memoryview]:
    (size,) = struct.unpack("<Q", data[:8])
    if size > len(data) - 8:
        raise ValueError("header runs past the end of the file")
    return json.loads(data[8:8 + size]), memoryview(data)[8 + size:]


def encode_tensors(tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None,
                   owner: str | None = None) -> tuple[bytes, str]:
    """(safetensors bytes, content digest), the digest and `owner`'s identity in the metadata."""
    meta = dict(metadata or {})
    tensors = {k: v.contiguous() for k, v in tensors.items()}
    header, body = _split(st_save(tensors, metadata=meta or None))
    digest = _digest(header, body, owner)
    integrity = json.dumps({"sha256": digest, "trial": owner}, sort_keys=True)
    return st_save(tensors, metadata={**meta, INTEGRITY_KEY: integrity}), digest


def save_tensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None,
                 owner: str | None = None) -> str:
    """Atomically write a safetensors file carrying its digest (and `owner`); returns the digest."""
    data, digest = encode_tensors(tensors, metadata, owner)
    atomic_write(path, data)
    return digest


def decode_tensors(data: bytes, where: str, owner: str | None = None,
                   digest: str | None = None) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(tensors, metadata with the file's digest under DIGEST_KEY) of safetensors bytes, checked: own digest,
    `owner` and the `digest` on record; a file older than digests loads unchecked unless a digest is given."""
    try:
        tensors = st_load(data)
        header, body = _split(data)
        metadata = dict(header.get("__metadata__") or {})
        integrity = json.loads(metadata.pop(INTEGRITY_KEY, "{}"))
        stored, trial = integrity.get("sha256"), integrity.get("trial")
    except (SafetensorError, ValueError, RuntimeError, struct.error, AttributeError) as exc:
        reason = " ".join(str(exc).split())[:160]
        raise DamagedFile(f"{where}: corrupt tensor file ({reason})") from None
    if stored is not None and stored != _digest(header, body, trial):
        raise DamagedFile(f"{where}: damaged tensor file (content digest mismatch: bits changed since it was written)")
    if owner is not None and stored is not None and trial != owner:
        raise DamagedFile(f"{where}: belongs to another trial ({trial or 'no identity'}; expected {owner})")
    if digest is not None and stored != digest:
        raise DamagedFile(f"{where}: not the file this study recorded (digest {str(stored)[:12]}, "
                          f"recorded {digest[:12]})")
    if stored is not None:
        metadata[DIGEST_KEY] = stored
    return tensors, metadata


def load_tensors(path: Path, owner: str | None = None,
                 digest: str | None = None) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(tensors, metadata) of a safetensors file; a damaged or foreign file is a one-line DamagedFile."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise StoreError(f"{path}: missing") from None
    except OSError as exc:
        raise DamagedFile(f"{path}: unreadable ({exc.strerror})") from None
    return decode_tensors(data, str(path), owner, digest)


def quarantine(path: Path) -> Path:
    """Move a damaged file aside (never used again, kept for inspection); returns where it went."""
    aside = path.with_name(path.name + ".damaged")
    os.replace(path, aside)
    return aside
