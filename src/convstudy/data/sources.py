"""Datasets a user describes: an image folder, an NPZ file or a Kaggle-style CSV, as a table, JSON or compactly
(`folder:imgs,size=32x32,channels=3`). `canonical_source` pins path, size, channels and classes in one compact
string, so a stored study describes its data without reading it again. How each kind's files decode is
`convstudy.data.decoders`.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from convstudy.data import cache
from convstudy.data.decoders import (MAX_CLASSES, TWO_CLASSES, decode_csv, decode_folder, decode_npz, first_size,
                                     folder_layout, npz_image_shape, show_list)
from convstudy.data.source_record import Source, unesc
from convstudy.errors import UserError
from convstudy.untrusted import is_utf8, shown_path

log = logging.getLogger(__name__)
_warned: set[tuple[str, str]] = set()


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
        layout = folder_layout(src)
        classes = src.classes or tuple(sorted(layout.class_dirs))
        resize = src.resize if src.resize is not None else src.size is not None
        size = src.size or first_size(src, layout)
        return replace(src, classes=classes, size=size, resize=resize, channels=src.channels or 3)
    if src.kind == "npz":
        shape = npz_image_shape(Path(src.path))
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
            raise UserError(f"{src.path}: every label is 0, one class; {TWO_CLASSES}")
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
                            f"({show_list(names)})")
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
    paths = ([p for entries in folder_layout(src).files.values() for _, p in entries] if src.kind == "folder"
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


# ---------------------------------------------------------------- the kinds

@dataclass(frozen=True)
class SourceKind:
    """One kind of described dataset: the options its table takes and how its files decode to NCHW arrays."""

    options: tuple[str, ...]
    decode: Callable[[Source], tuple[dict[str, np.ndarray], dict[str, Any]]]


# Every source kind, one table (tests/test_registries.py loads and refuses a tiny file of each).
KINDS: dict[str, SourceKind] = {
    "folder": SourceKind(("path", "size", "resize", "channels", "classes", "test_fraction", "split_seed", "skip_bad"),
                         decode_folder),
    "npz": SourceKind(("path", "size", "channels", "classes"), decode_npz),
    "csv": SourceKind(("path", "test", "size", "channels", "classes", "test_fraction", "split_seed"), decode_csv),
}


# ---------------------------------------------------------------- spelling

def _build(kind: str, raw: dict[str, Any]) -> Source:
    path = raw.get("path")
    if not isinstance(path, str) or not path.strip():
        raise UserError(f"dataset: {kind} needs path = \"...\" (a {'folder' if kind == 'folder' else 'file'})")
    for key in ("path", "test", "classes"):
        texts = raw.get(key) if isinstance(raw.get(key), list) else [raw.get(key)]
        bad = next((t for t in texts if isinstance(t, str) and not is_utf8(t)), None)
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
    out: dict[str, Any] = {"kind": kind, "path": unesc(path)}
    for option in options:
        key, eq, value = option.partition("=")
        key = key.strip()
        if not eq:
            raise UserError(f'dataset: "{_show(option, quote=False)}" is not key=value (in {_show(text[:200])})')
        if key in out:
            raise UserError(f'dataset: option "{_show(key, quote=False)}" given twice')
        value = value.strip()
        if key == "classes":
            out[key] = [unesc(v) for v in value.split("|")]
        elif key in ("channels", "split_seed"):
            out[key] = int(value) if value.isdigit() else value
        elif key == "test_fraction":
            try:
                out[key] = float(value)
            except ValueError:
                out[key] = value
        elif key in ("path", "test"):
            out[key] = unesc(value)
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
        raise UserError(f'dataset: classes lists one class ("{_show(value[0], quote=False)}"); {TWO_CLASSES}')
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


def _show(value: Any, quote: bool = True) -> str:
    text = value if isinstance(value, str) else repr(value) if isinstance(value, (int, float, bool, type(None))) \
        else type(value).__name__
    text = " ".join(text.split())
    text = text if len(text) <= 60 else text[:57] + "..."
    return f'"{text}"' if quote and isinstance(value, str) else text
