"""Reading study files (TOML or YAML) into a Study, with every failure as one UserError line."""

from __future__ import annotations

from pathlib import Path

from convstudy.errors import UserError
from convstudy.spec.builtin import BUILTIN
from convstudy.spec.memory import check_memory
from convstudy.spec.overrides import retarget, with_overrides
from convstudy.spec.recipe import check_schedule_keys
from convstudy.spec.study import Study, build_study
from convstudy.untrusted import load_untrusted

_FORMATS = {".toml": "toml", ".yaml": "yaml", ".yml": "yaml"}
MAX_STUDY_BYTES = 4 << 20  # the seed study is 2 KB; a study file a thousand times that is no study file


def load_study_file(path: str | Path, dataset: str | None = None) -> Study:
    """Parse and validate a `.toml`, `.yaml` or `.yml` study file, refusing models this machine cannot train;
    `dataset` (`--dataset`) replaces the file's before anything is validated (see `retarget`)."""
    path = Path(path)
    hint = f" (built-in studies: {', '.join(builtin_names())})"
    suffix = path.suffix.lower()
    if suffix not in _FORMATS:
        if not path.exists():
            raise UserError(f"{path}: no such study file{hint}")
        raise UserError(f"{path.name}: unknown study file type {suffix or '(none)'}; use .toml, .yaml or .yml")
    data = load_untrusted(path, _FORMATS[suffix], what="study file", max_bytes=MAX_STUDY_BYTES, missing_hint=hint)
    source = path.name
    if dataset is not None:
        data, source = retarget(data, dataset), f"{path.name} with --dataset"
    study = build_study(data, source=source)
    check_schedule_keys(study, source)
    check_memory(study, source)
    return study


def builtin_names() -> list[str]:
    return sorted(BUILTIN)


def resolve_study(ref: str, dataset: str | None = None) -> Study:
    """A built-in study by name, else a study file by path, moved onto `dataset` if given."""
    if ref in BUILTIN:
        study = BUILTIN[ref]()
        if dataset is not None:
            return with_overrides(study, dataset=dataset, source=f"{ref} with --dataset")
        check_memory(study, ref)
        return study
    if not Path(ref).suffix and not Path(ref).exists():
        raise UserError(f'unknown study "{ref}": not a built-in ({", ".join(builtin_names())}) and no such file')
    return load_study_file(ref, dataset)
