"""The one reader for files a user hands in (study files, Keras JSON, dataset files, images): bounded, non-blocking.
Whatever the file is or holds (a FIFO, a huge integer, deep nesting, an alias bomb), the result is bounded plain
data or one UserError line.
"""

from __future__ import annotations

import json
import math
import os
import stat
import tomllib
from pathlib import Path
from typing import Any, BinaryIO, Literal

import yaml

from convstudy.errors import UserError

Format = Literal["toml", "yaml", "json"]
MAX_BYTES = 4 << 20
MAX_DEPTH = 32
MAX_NODES = 200_000
MAX_INT = 2**53  # beyond this, JSON readers and floats stop being exact; no setting needs more
_MAX_INT_DIGITS = 20  # parsers are stopped before int() of more digits than any in-range integer has


class UnreadableFile(UserError):
    """A path that is missing, not a regular file, too large or unreadable; `reason` is the message without the path."""

    def __init__(self, path: str | Path, reason: str) -> None:
        super().__init__(f"{shown_path(path)}: {reason}")
        self.path = Path(path)
        self.reason = reason


def open_untrusted(path: str | Path, what: str = "file", missing_hint: str = "") -> BinaryIO:
    """A regular file opened for binary reading; FIFOs, devices, sockets and directories are refused without
    blocking (UnreadableFile). The caller bounds what it reads."""
    path = Path(path)
    try:
        # stat first so that a device is refused without opening it (opening some has side effects)
        _require_regular(os.stat(path).st_mode, path, what)
        # O_NONBLOCK: if the path became a FIFO since the stat, open() returns instead of waiting for a writer
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise UnreadableFile(path, f"no such {what}{missing_hint}") from None
    except OSError as exc:
        raise UnreadableFile(path, f"cannot read ({exc.strerror or exc})") from None
    try:
        _require_regular(os.fstat(fd).st_mode, path, what)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_untrusted_bytes(path: str | Path, what: str = "file", max_bytes: int = MAX_BYTES,
                         missing_hint: str = "") -> bytes:
    """The bytes of a regular file of at most `max_bytes` (`open_untrusted`, then a bounded read)."""
    with open_untrusted(path, what, missing_hint) as f:
        chunks, size = [], 0
        try:
            while size <= max_bytes:  # read to EOF rather than trust st_size (/proc files report 0)
                chunk = f.read(min(1 << 20, max_bytes + 1 - size))
                if not chunk:
                    break
                chunks.append(chunk)
                size += len(chunk)
        except OSError as exc:
            raise UnreadableFile(path, f"cannot read ({exc.strerror or exc})") from None
    if size > max_bytes:
        raise UnreadableFile(path, f"larger than {_fmt_size(max_bytes)}; not {_a(what)}")
    return b"".join(chunks)


def read_untrusted_text(path: str | Path, what: str = "file", max_bytes: int = MAX_BYTES,
                        missing_hint: str = "") -> str:
    """The UTF-8 text of a regular file of at most `max_bytes`; FIFOs, devices and directories are refused."""
    raw = read_untrusted_bytes(path, what, max_bytes, missing_hint)
    name = Path(path).name or str(path)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UserError(f"{name}: not a text file (invalid UTF-8 at byte {exc.start})") from None
    if "\x00" in text:
        raise UserError(f"{name}: not a text file (contains NUL bytes)")
    return text


def shown_path(path: str | Path) -> str:
    """`path` as printable text: bytes that are not UTF-8 (surrogate-escaped by os) shown as \\xNN."""
    text = str(path)
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a lone surrogate no byte stands for (a JSON "\\ud800" escape)
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


def is_utf8(text: str) -> bool:
    """Whether `text` is valid Unicode: os and sys.argv hand undecodable bytes over as lone surrogates."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _require_regular(mode: int, path: Path, what: str) -> None:
    if stat.S_ISREG(mode):
        return
    if stat.S_ISDIR(mode):
        raise UnreadableFile(path, f"is a directory, not {_a(what)}")
    kind = ("a FIFO" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode)
            else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "not a file")
    raise UnreadableFile(path, f"not a regular file ({kind}); {_a(what)} must be a regular file")


def _a(what: str) -> str:
    return f"{'an' if what[:1].lower() in 'aeiou' else 'a'} {what}"


def _fmt_size(n: int) -> str:
    return f"{n >> 20} MiB" if n >= 1 << 20 else f"{n} bytes"


def parse_untrusted(text: str, fmt: Format, source: str) -> Any:
    """Parse TOML, YAML or JSON text and `check_structure` the result; every failure is one UserError line."""
    try:
        data = {"toml": _parse_toml, "yaml": _parse_yaml, "json": _parse_json}[fmt](text, source)
    except (RecursionError, _TooDeep):
        raise UserError(f"{source}: nested too deeply (more than {MAX_DEPTH} levels)") from None
    check_structure(data, source)
    return data


def load_untrusted(path: str | Path, fmt: Format, what: str = "file", max_bytes: int = MAX_BYTES,
                   missing_hint: str = "") -> Any:
    """`read_untrusted_text` then `parse_untrusted`, errors naming the file."""
    text = read_untrusted_text(path, what=what, max_bytes=max_bytes, missing_hint=missing_hint)
    return parse_untrusted(text, fmt, Path(path).name)


def _value_error(source: str, fmt: str, exc: Exception) -> UserError:
    # Python refuses int() of more than 4,300 digits with a ValueError raised from inside the parsers.
    if isinstance(exc, ValueError) and "integer string conversion" in str(exc):
        return UserError(f"{source}: an integer has more than 4300 digits (at most {MAX_INT} allowed)")
    return UserError(f"{source}: {fmt} value error: {_one_line(exc)}")


def _one_line(exc: BaseException, limit: int = 200) -> str:
    return " ".join(str(exc).split())[:limit]


def _parse_toml(text: str, source: str) -> Any:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"{source}: TOML syntax error: {_one_line(exc)}") from None
    except (ValueError, OverflowError) as exc:  # int() limits, out-of-range dates
        raise _value_error(source, "TOML", exc) from None


class _TooDeep(Exception):
    pass


class _Loader(yaml.SafeLoader):
    """SafeLoader that stops at MAX_DEPTH and refuses duplicate keys (PyYAML would silently keep the last)."""

    _depth = 0

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node:
        # Stop while composing: letting PyYAML recurse into a RecursionError takes half a second per file.
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH + 1:
                raise _TooDeep
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[tuple[str, str]] = set()
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag != "tag:yaml.org,2002:merge":
                key = (key_node.tag, key_node.value)
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f'duplicate key "{_clip(key_node.value)}"', key_node.start_mark)
                seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _parse_yaml(text: str, source: str) -> Any:
    try:
        return yaml.load(text, Loader=_Loader)  # noqa: S506 -- _Loader is a SafeLoader
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        kind = "YAML error" if isinstance(exc, yaml.constructor.ConstructorError) else "YAML syntax error"
        raise UserError(f"{source}: {kind}{where}: {_one_line(exc.problem or 'invalid YAML')}") from None
    except yaml.YAMLError as exc:
        raise UserError(f"{source}: YAML error: {_one_line(exc)}") from None
    except (ValueError, OverflowError) as exc:  # int() limits, out-of-range timestamps
        raise _value_error(source, "YAML", exc) from None


def _parse_json(text: str, source: str) -> Any:
    def parse_int(digits: str) -> int:
        if len(digits.lstrip("-")) > _MAX_INT_DIGITS:
            raise UserError(f"{source}: integer with {len(digits.lstrip('-'))} digits is too large "
                            f"(at most {MAX_INT})")
        return int(digits)

    def parse_constant(name: str) -> Any:
        raise UserError(f"{source}: {name} is not JSON (only finite numbers)")

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in items:
            if key in out:
                raise UserError(f'{source}: duplicate key "{_clip(key)}"')
            out[key] = value
        return out

    try:
        return json.loads(text, parse_int=parse_int, parse_constant=parse_constant, object_pairs_hook=pairs)
    except json.JSONDecodeError as exc:
        raise UserError(f"{source}: not JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})") from None
    except ValueError as exc:
        raise _value_error(source, "JSON", exc) from None


_KINDS = {bytes: "binary (!!binary)", set: "set (!!set)", tuple: "key-value pairs (!!omap, !!pairs)"}


def check_structure(obj: Any, source: str, max_depth: int = MAX_DEPTH, max_nodes: int = MAX_NODES,
                    max_int: int = MAX_INT) -> None:
    """Refuse what no settings file holds: deep nesting, many values (alias bombs), huge integers, non-plain types."""
    count = 0

    def where(path: tuple[Any, ...]) -> str:
        out = ""
        for part in path:
            out += f"[{part}]" if isinstance(part, int) else f".{_clip(str(part), 24)}" if out else _clip(str(part), 24)
        return _clip(out, 60) or "top level"

    def walk(value: Any, path: tuple[Any, ...]) -> None:
        nonlocal count
        count += 1
        if count > max_nodes:  # counted per visit, so YAML aliases count every time they are expanded
            raise UserError(f"{source}: more than {max_nodes:,} values (YAML aliases expanding to too much data?)")
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) > max_int:
            digits = int(value.bit_length() * math.log10(2)) + 1
            shown = str(value) if digits <= 30 else f"with about {digits} digits"
            raise UserError(f"{source}: {where(path)}: integer {shown} is too large (at most {max_int})")
        if value is None or isinstance(value, (bool, str, int, float)):
            return
        if isinstance(value, (dict, list)):
            if len(path) >= max_depth:
                raise UserError(f"{source}: nested more than {max_depth} levels deep (at {where(path)})")
            for key, item in enumerate(value) if isinstance(value, list) else value.items():
                if isinstance(value, dict) and not isinstance(key, str):
                    raise UserError(f"{source}: {where(path)}: key {_clip(repr(key))} is not a string (quote it)")
                walk(item, (*path, key))
            return
        kind = next((k for t, k in _KINDS.items() if isinstance(value, t)), None)
        if kind is None:
            import datetime

            kind = "date/time" if isinstance(value, (datetime.date, datetime.time)) else type(value).__name__
        raise UserError(f"{source}: {where(path)}: {kind} values are not supported "
                        "(only strings, numbers, booleans, lists and tables)")

    walk(obj, ())


def _clip(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."
