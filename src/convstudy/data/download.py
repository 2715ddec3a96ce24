"""Fetching missing dataset files from the registry's mirrors; only verified files land."""

from __future__ import annotations

import http.client
import logging
import os
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable

from convstudy.data.idx import IdxError, read_dataset_file, size_limit
from convstudy.data.registry import DatasetInfo
from convstudy.errors import UserError

log = logging.getLogger(__name__)

TIMEOUT_S = 30.0
_NETWORK_ERRORS = (OSError, http.client.HTTPException, ValueError)


def download_missing(info: DatasetInfo, directory: Path, keys: list[str],
                     verify: Callable[[Path], object] | None = None) -> None:
    """Fetch each file in `keys` into `directory` from the first mirror serving a verified copy (`verify` raises
    IdxError for a copy that must not land; by default a digest must vouch for it)."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _unwritable(info, directory, exc) from None
    for done, key in enumerate(keys):
        failure = _fetch(info, key, directory, verify)
        if failure:
            # Stop at the first file no mirror can give: offline, every further try is a timeout.
            names = ", ".join(info.files[k] for k in keys[done:])
            raise UserError(
                f"{info.name}: {names} not found in {directory} and {failure}; "
                "download them by hand or pass --data-dir DIR"
            )


def replace_file(info: DatasetInfo, directory: Path, key: str, why: str,
                 verify: Callable[[Path], object] | None = None) -> None:
    """Replace a bad file in convstudy's own cache with a verified copy; `why` says what was bad."""
    failure = _fetch(info, key, directory, verify)
    if failure:
        raise UserError(f"{why}; replacing convstudy's downloaded copy failed: {failure}")


def _fetch(info: DatasetInfo, key: str, directory: Path, verify: Callable[[Path], object] | None) -> str | None:
    """Download one file, trying mirrors in order; None on success, else why every mirror failed."""
    name = info.files[key]
    # strict: a mirror must serve a copy a digest vouches for, never "the right shape".
    verify = verify or (lambda part: read_dataset_file(part, info, key, strict=True))
    reachable, last = False, "no mirrors listed"
    for base in info.mirrors:
        url = base + name
        log.info("downloading %s", url)
        part = _temp_path(info, directory, name)
        try:
            copy_url(url, part, _max_download(info, key))
            verify(part)
            os.replace(part, directory / name)  # atomic: a reader never sees half a file
            return None
        except urllib.error.HTTPError as exc:
            reachable, last = True, f"{url}: HTTP {exc.code} {exc.reason}"
        except IdxError as exc:
            reachable, last = True, f"{url}: {exc}"
        except _NETWORK_ERRORS as exc:
            last = f"{url}: {_reason(exc)}"
        finally:
            part.unlink(missing_ok=True)
    verdict = "no mirror served a valid copy" if reachable else "no mirror reachable"
    return f"{verdict} (last: {last})"


def _max_download(info: DatasetInfo, key: str) -> int:
    """The most bytes a served copy may have: gzip stores incompressible data with <1% overhead."""
    limit = size_limit(info, key)
    return limit + limit // 100 + 4096


def copy_url(url: str, dest: Path, max_bytes: int) -> None:
    """Stream `url` into `dest`; an IdxError as soon as it serves more than `max_bytes` (never all of it)."""
    request = urllib.request.Request(url, headers={"User-Agent": "convstudy"})
    with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response, dest.open("wb") as out:
        written = 0
        while chunk := response.read(1 << 20):
            written += len(chunk)
            if written > max_bytes:
                raise IdxError(f"served more than {max_bytes} bytes, more than any copy has")
            out.write(chunk)


def _temp_path(info: DatasetInfo, directory: Path, name: str) -> Path:
    """A fresh temp file beside the final one, so the closing rename stays on one filesystem."""
    try:
        fd, path = tempfile.mkstemp(dir=directory, prefix=f".{name}.", suffix=".part")
    except OSError as exc:
        raise _unwritable(info, directory, exc) from None
    os.close(fd)
    return Path(path)


def _unwritable(info: DatasetInfo, directory: Path, exc: OSError) -> UserError:
    why = exc.strerror or str(exc)
    return UserError(
        f"{info.name}: files are missing and {directory} cannot be written ({why}); "
        "download them by hand or pass --data-dir DIR pointing to a writable folder"
    )


def _reason(exc: BaseException) -> str:
    if isinstance(exc, urllib.error.URLError):
        if not isinstance(exc.reason, BaseException):
            return str(exc.reason)
        exc = exc.reason
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__
