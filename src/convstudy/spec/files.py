"""Reading study files (TOML or YAML) into a Study, with every failure as one UserError line."""

from __future__ import annotations

from pathlib import Path

from convstudy.errors import UserError
from convstudy.spec.memory import check_memory
from convstudy.spec.recipe import check_schedule_keys
from convstudy.spec.study import Study, build_study
from convstudy.untrusted import load_untrusted

_FORMATS = {".toml": "toml", ".yaml": "yaml", ".yml": "yaml"}
MAX_STUDY_BYTES = 4 << 20  # the seed study is 2 KB; a study file a thousand times that is no study file


def load_study_file(path: str | Path) -> Study:
    """Parse and validate a `.toml`, `.yaml` or `.yml` study file, refusing models this machine cannot train."""
    path = Path(path)
    hint = f" (built-in studies: {', '.join(builtin_names())})"
    suffix = path.suffix.lower()
    if suffix not in _FORMATS:
        if not path.exists():
            raise UserError(f"{path}: no such study file{hint}")
        raise UserError(f"{path.name}: unknown study file type {suffix or '(none)'}; use .toml, .yaml or .yml")
    data = load_untrusted(path, _FORMATS[suffix], what="study file", max_bytes=MAX_STUDY_BYTES, missing_hint=hint)
    study = build_study(data, source=path.name)
    check_schedule_keys(study, path.name)
    check_memory(study, path.name)
    return study


def builtin_names() -> list[str]:
    from convstudy.spec.builtin import BUILTIN

    return sorted(BUILTIN)


def resolve_study(ref: str) -> Study:
    """A built-in study by name, else a study file by path."""
    from convstudy.spec.builtin import BUILTIN

    if ref in BUILTIN:
        study = BUILTIN[ref]()
        check_memory(study, ref)
        return study
    if not Path(ref).suffix and not Path(ref).exists():
        raise UserError(f'unknown study "{ref}": not a built-in ({", ".join(builtin_names())}) and no such file')
    return load_study_file(ref)
