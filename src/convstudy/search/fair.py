"""Fair comparisons (issue 29): tune each scientific level's nuisance hyperparameters, retrain each winner on all seeds.

`run_fair` trains the study's own models first (the fixed recipe, if the study has one) in OUT, then, for
each combination of scientific levels (spec.fair.scientific_levels), runs one search with `--confirm 1` in
its own study directory OUT/fair/NN-LEVELS: Optuna samples the nuisance hyperparameters within the level's
budget, every sample is a model `trial-NNNN` (carrying the scientific levels and its nuisance values in its
factors) trained on the study's first seed, and the best on validation is retrained on every seed. Each
level directory is a normal search study, so a kill -9 anywhere resumes as a search does (nothing asked or
trained twice) and `--workers N` or Ray trains a level's trials side by side. report.fair compares the levels.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from rich.console import Console

from convstudy.data import get_info
from convstudy.errors import UserError
from convstudy.executors import RunOptions, run_study
from convstudy.search import run_search
from convstudy.spec import Study
from convstudy.spec.fair import check_fair, level_dirname, level_label, scientific_levels
from convstudy.store import StudyStore, study_dir


def level_study(study: Study, levels: dict[str, Any]) -> Study:
    """The search study of one combination of scientific levels: the study's data, seeds and [train], no models of
    its own, and the combination's [search]. It keeps the study's name (it is alone in its directory)."""
    return study.model_copy(update={"models": (), "fair": None, "search": study.fair.level_search(levels),
                                    "description": f"{study.name}: nuisance search at {level_label(levels)}"})


def run_fair(study: Study, opts: RunOptions, console: Console | None = None,
             budget: int | None = None) -> tuple[StudyStore, bool]:
    """Run (or resume) `study`'s fixed recipe and then its per-level searches and retraining into `opts.out`;
    returns the main study's store and whether every level ended (`budget`: --trials, per level)."""
    console = console or Console(highlight=False)
    if study.fair is None:
        raise UserError(f"{study.name}: has no [fair] section")
    check_fair(study, get_info(study.dataset), study.name)  # a Study built in Python skips build_study's checks
    if study.models:
        store, finished = run_study(study, replace(opts, final_refresh=False), console)  # refreshed at the end
        if not finished:
            return store, False
    else:
        store = StudyStore.create_or_open(opts.out, study)
    combos = scientific_levels(study.fair)
    root = study_dir(opts.out) / "fair"
    finished = True
    for i, levels in enumerate(combos):
        console.print(f"fair: level {i + 1} of {len(combos)} ({level_label(levels)}): tuning "
                      f"{', '.join(study.fair.nuisance)}, then the best on seeds {', '.join(map(str, study.seeds))}")
        sub, finished = run_search(level_study(study, levels), replace(opts, out=root / level_dirname(i, levels),
                                                                       final_refresh=True), console, budget, confirm=1)
        sub.close()
        if not finished:
            break
    if opts.final_refresh or not finished:
        opts.refreshed(store)  # the fair comparison (the fixed recipe's run left it to this refresh)
    return store, finished
