"""Reading study files (TOML or YAML) into a Study, with every failure as one UserError line."""

from __future__ import annotations

import tomllib
from pathlib import Path

import yaml

from convstudy.errors import UserError
from convstudy.spec.study import Study, build_study


def load_study_file(path: str | Path) -> Study:
    """Parse and validate a `.toml`, `.yaml` or `.yml` study file."""
    path = Path(path)
    name = path.name
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise UserError(f"{path}: no such study file (built-in studies: {', '.join(builtin_names())})") from None
    except IsADirectoryError:
        raise UserError(f"{path}: is a directory, not a study file") from None
    except OSError as exc:
        raise UserError(f"{path}: cannot read ({exc.strerror})") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UserError(f"{name}: not a text file (invalid UTF-8 at byte {exc.start})") from None
    if "\x00" in text:
        raise UserError(f"{name}: not a text file (contains NUL bytes)")
    suffix = path.suffix.lower()
    if suffix == ".toml":
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise UserError(f"{name}: TOML syntax error: {' '.join(str(exc).split())}") from None
    elif suffix in (".yaml", ".yml"):
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            problem = getattr(exc, "problem", None) or "invalid YAML"
            raise UserError(f"{name}: YAML syntax error{where}: {problem}") from None
        except (ValueError, OverflowError, RecursionError) as exc:  # e.g. out-of-range timestamps
            raise UserError(f"{name}: YAML value error: {' '.join(str(exc).split())[:200]}") from None
    else:
        raise UserError(f"{name}: unknown study file type {suffix or '(none)'}; use .toml, .yaml or .yml")
    return build_study(data, source=name)


def builtin_names() -> list[str]:
    from convstudy.spec.builtin import BUILTIN

    return sorted(BUILTIN)


def resolve_study(ref: str) -> Study:
    """A built-in study by name, else a study file by path."""
    from convstudy.spec.builtin import BUILTIN

    if ref in BUILTIN:
        return BUILTIN[ref]()
    if not Path(ref).suffix and not Path(ref).exists():
        raise UserError(f'unknown study "{ref}": not a built-in ({", ".join(builtin_names())}) and no such file')
    return load_study_file(ref)
