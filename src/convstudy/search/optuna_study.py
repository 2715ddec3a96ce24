"""The Optuna side of a search: its study on OUT/search.db, samplers and pruners by name, one suggest per factor.

Optuna is the only search engine here: convstudy writes no sampler or pruner of its own.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

import optuna

from convstudy.errors import UserError
from convstudy.spec.search import SearchSpec, grid_values
from convstudy.spec.space import FloatRange, IntRange, Space

STORAGE = "search.db"  # beside study.db in the study directory


def storage_url(out: Path) -> str:
    """SQLAlchemy's URL of a study directory's Optuna storage (report.search opens it read-only)."""
    return f"sqlite:///{(Path(out) / STORAGE).resolve()}"


def sampler(spec: SearchSpec, space: Space, seed: int) -> optuna.samplers.BaseSampler:
    """Optuna's sampler for `spec.sampler`, seeded with `seed`."""
    if spec.sampler == "tpe":
        return optuna.samplers.TPESampler(seed=seed)
    if spec.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if spec.sampler == "grid":
        return optuna.samplers.GridSampler({f.name: grid_values(f) for f in space.factors}, seed=seed)
    if spec.sampler == "qmc":  # scrambled Sobol; the first trial, which fixes its dimensions, is a random draw
        _quiet_qmc()
        with warnings.catch_warnings():  # "experimental since 3.0": stable in use, and no line for the user to act on
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.samplers.QMCSampler(scramble=True, seed=seed, warn_independent_sampling=False)
    if spec.sampler == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed)
    try:
        import cmaes  # noqa: F401  Optuna's CmaEsSampler needs it, and imports it only when it samples
    except ImportError:
        raise UserError("search: sampler cmaes needs the cmaes package: pip install cmaes") from None
    return optuna.samplers.CmaEsSampler(seed=seed)


def _no_conditions_warning(record: logging.LogRecord) -> bool:
    return "does not include any conditions" not in record.getMessage()


def _quiet_qmc() -> None:
    """Drop QMCSampler's "assumes that the search space does not include any conditions" line: it is logged
    whenever a trial is asked while the first is still running (Ray), and a convstudy space has no conditional
    parameters (every factor is suggested in every trial)."""
    log = logging.getLogger("optuna.samplers._qmc")
    if _no_conditions_warning not in log.filters:
        log.addFilter(_no_conditions_warning)


def pruner(spec: SearchSpec, epochs: int) -> optuna.pruners.BasePruner:
    """Optuna's pruner for `spec.pruner`; its resource is the epoch, from 1 to the study's `epochs`, and
    the reduction factor Optuna's default unless the section sets one."""
    if spec.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=0)
    factor = {} if spec.reduction_factor is None else {"reduction_factor": spec.reduction_factor}
    if spec.pruner == "successive-halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=1, **factor)
    if spec.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=epochs, **factor)
    return optuna.pruners.NopPruner()


def open_study(storage: optuna.storages.BaseStorage, name: str, spec: SearchSpec, space: Space,
               epochs: int) -> optuna.Study:
    """Create or load the search's Optuna study in `storage` (the study directory's, `storage_url`).

    The sampler's seed is `spec.seed` plus the trials already sampled, so a search resumed after a
    crash draws new configurations instead of replaying its first ones (a seeded RandomSampler would). QMC keeps
    `spec.seed`: Optuna stores how far along its sequence the study is, so a resumed search continues it.
    """
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        sampled = len(storage.get_all_trials(storage.get_study_id_from_name(name), deepcopy=False))
    except KeyError:
        sampled = 0
    directions = [o.goal for o in spec.objective]
    seed = spec.seed if spec.sampler == "qmc" else spec.seed + sampled
    return optuna.create_study(storage=storage, study_name=name, load_if_exists=True, directions=directions,
                               sampler=sampler(spec, space, seed), pruner=pruner(spec, epochs))


def suggest(trial: optuna.Trial, space: Space) -> dict[str, Any]:
    """One value per factor. Optuna returns a value already stored for the trial, so suggesting again for a
    trial sampled before a crash gives back its configuration (and samples only what it had not)."""
    out = {}
    for f in space.factors:
        if isinstance(f, IntRange):
            out[f.name] = trial.suggest_int(f.name, f.low, f.high, step=f.step, log=f.log)
        elif isinstance(f, FloatRange):
            out[f.name] = trial.suggest_float(f.name, f.low, f.high, step=f.step, log=f.log)
        else:
            out[f.name] = trial.suggest_categorical(f.name, list(f.levels))
    return out
