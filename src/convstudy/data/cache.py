"""The decoded-tensor cache: .npy files under $CONVSTUDY_CACHE_DIR (default ~/.cache/convstudy/decoded), keyed by
the source's options and files' path, size and mtime; a changed source or a damaged entry is a miss, never an error.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from convstudy.errors import UserError
from convstudy.untrusted import open_untrusted, read_untrusted_text

ENV_VAR = "CONVSTUDY_CACHE_DIR"
VERSION = 1
_ARRAYS = ("x_train", "y_train", "x_test", "y_test")
_MAX_META_BYTES = 64 << 20  # the meta lists skipped files; a folder of a million bad images stays below this

log = logging.getLogger(__name__)


def cache_root() -> Path:
    """Where decoded tensors live: $CONVSTUDY_CACHE_DIR, else ~/.cache/convstudy/decoded."""
    given = os.environ.get(ENV_VAR)
    return Path(given).expanduser() if given else Path.home() / ".cache" / "convstudy" / "decoded"


def fingerprint(body: Any) -> str:
    """SHA-256 of a JSON-able description (options and file stats)."""
    return hashlib.sha256(json.dumps({"v": VERSION, **body}, sort_keys=True, default=list).encode()).hexdigest()


def _slot(identity: Any) -> Path:
    """One folder per source identity: a changed source replaces the entry inside it."""
    return cache_root() / fingerprint({"identity": identity})[:24]


def read(identity: Any, key: str) -> tuple[dict[str, np.ndarray], dict[str, Any]] | None:
    """The cached arrays and meta for `key`, or None on a miss or a damaged entry."""
    entry = _slot(identity) / key[:32]
    try:
        meta = json.loads(read_untrusted_text(entry / "meta.json", max_bytes=_MAX_META_BYTES))
        if meta.get("key") != key:
            return None
        arrays = {}
        for name in _ARRAYS:
            with open_untrusted(entry / f"{name}.npy") as f:
                arrays[name] = np.load(f, allow_pickle=False)
        for name, (shape, dtype) in meta["arrays"].items():
            if list(arrays[name].shape) != shape or str(arrays[name].dtype) != dtype:
                return None
    except (UserError, OSError, ValueError, KeyError, TypeError):
        return None
    return arrays, meta["meta"]


def write(identity: Any, key: str, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
    """Store an entry atomically and drop the source's older entries; a failure only logs."""
    slot = _slot(identity)
    try:
        slot.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=slot, prefix=".tmp-"))
        try:
            for name in _ARRAYS:
                np.save(tmp / f"{name}.npy", arrays[name], allow_pickle=False)
            shapes = {name: [list(arrays[name].shape), str(arrays[name].dtype)] for name in _ARRAYS}
            (tmp / "meta.json").write_text(json.dumps({"key": key, "arrays": shapes, "meta": meta}))
            if not (slot / key[:32]).exists():  # another process may have written it meanwhile
                os.replace(tmp, slot / key[:32])
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        for old in slot.iterdir():
            if old.name != key[:32] and not old.name.startswith(".tmp-"):
                shutil.rmtree(old, ignore_errors=True)
    except OSError as exc:
        log.warning("convstudy: warning: decoded data not cached in %s (%s); the next load decodes again",
                    slot, exc.strerror or exc)
