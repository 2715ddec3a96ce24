"""Where trials keep their checkpoints: the study directory (the default, so a study resumes under either
executor), or `--storage` PATH or any pyarrow URI, under `<study name>-<fingerprint>/`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from convstudy.errors import UserError
from convstudy.store.files import decode_tensors, encode_tensors, load_tensors, quarantine, save_tensors


@dataclass(frozen=True)
class CheckpointStorage:
    """A picklable handle on the checkpoint root; workers open the filesystem themselves."""

    root: str

    @property
    def is_uri(self) -> bool:
        return "://" in self.root

    @staticmethod
    def key(model: str, seed: int) -> str:
        """The checkpoint's path under the root (the same as in a study directory)."""
        return f"trials/{model}/seed-{seed}/checkpoint.safetensors"

    def _fs(self, key: str = ""):
        """(filesystem, path of `key` under the root, whether a file is there) for a URI root."""
        try:
            from pyarrow import fs
        except ImportError:
            raise UserError(f"--storage {self.root}: URIs need pyarrow: pip install 'convstudy[ray]'") from None
        try:
            filesystem, base = fs.FileSystem.from_uri(self.root)
        except Exception as exc:  # pyarrow raises ArrowInvalid, OSError, ... for a bad or unreachable URI
            raise UserError(f"--storage {self.root}: {' '.join(str(exc).split())[:200]}") from None
        path = f"{base}/{key}".rstrip("/")
        return filesystem, path, bool(key) and filesystem.get_file_info(path).type != fs.FileType.NotFound

    def check(self) -> None:
        """Create the root, or fail with one line naming it, before any trial starts."""
        try:
            if self.is_uri:
                fs, base, _ = self._fs()
                fs.create_dir(base, recursive=True)
            else:
                Path(self.root).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UserError(f"--storage {self.root}: cannot be written ({exc})") from None

    def save(self, key: str, tensors: dict[str, torch.Tensor], meta: dict[str, str], owner: str) -> str:
        """Write a safetensors file atomically (a directory) or as one object (object stores); its digest."""
        if not self.is_uri:
            return save_tensors(Path(self.root) / key, tensors, meta, owner)
        fs, path, _ = self._fs(key)
        fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
        data, digest = encode_tensors(tensors, meta, owner)
        # Object stores make a finished upload visible at once or not at all; for file:// URIs
        # the upload goes to a side name first and is moved over the old checkpoint.
        staging = f"{path}.partial"
        with fs.open_output_stream(staging) as out:
            out.write(data)
        fs.move(staging, path)
        return digest

    def load(self, key: str, owner: str) -> tuple[dict[str, torch.Tensor], dict[str, str]] | None:
        """(tensors, metadata) of the checkpoint at `key`, checked to be `owner`'s, or None when there is none."""
        if not self.is_uri:
            path = Path(self.root) / key
            return load_tensors(path, owner) if path.exists() else None
        fs, path, there = self._fs(key)
        if not there:
            return None
        with fs.open_input_stream(path) as src:
            return decode_tensors(src.readall(), f"{self.root}/{key}", owner)

    def quarantine(self, key: str) -> str:
        """Move a damaged checkpoint aside, never to be used again; returns where it went."""
        if not self.is_uri:
            return str(quarantine(Path(self.root) / key))
        fs, path, _ = self._fs(key)
        fs.move(path, f"{path}.damaged")
        return f"{self.root}/{key}.damaged"

    def delete(self, key: str) -> None:
        """Remove the checkpoint at `key` if it is there."""
        if not self.is_uri:
            (Path(self.root) / key).unlink(missing_ok=True)
            return
        fs, path, there = self._fs(key)
        if there:
            fs.delete_file(path)


def storage_for(out: Path, study_name: str, fingerprint: str, storage: str | None) -> CheckpointStorage:
    """The study directory by default; else one folder per study under `storage`."""
    if storage is None:
        return CheckpointStorage(str(Path(out).resolve()))
    base = storage if "://" in storage else str(Path(storage).expanduser().resolve())
    return CheckpointStorage(f"{base.rstrip('/')}/{study_name}-{fingerprint}")
