"""Recipe keys a run would silently ignore, refused when a study is loaded to run (not when a stored one is read)."""

from __future__ import annotations

from convstudy.errors import UserError
from convstudy.spec.study import Study

STEP_KEYS = ("step_every", "step_gamma")


def check_schedule_keys(study: Study, source: str) -> None:
    """A step key written in [train] that no model trains with, or in a model's own train under another schedule,
    and a step_every no step comes of: one UserError line naming [train] or the model."""
    uses_base = []
    for m in study.models:
        s = m.settings(study.train)
        own = [k for k in STEP_KEYS if getattr(m.train, k) is not None]
        # A space's train serves every level of its factors: step_every may be meant for the "step" level only.
        if own and s.schedule != "step" and not m.factors:
            raise UserError(f'{source}: model "{m.name}", train: {own[0]} is for schedule = "step", but the model '
                            f'trains with "{s.schedule}"')
        if s.schedule == "step" and s.step_every is not None and s.step_every >= s.epochs:
            merged = any(getattr(m.train, k) is not None for k in ("epochs", "schedule", "step_every"))
            where = f'model "{m.name}", train with [train]' if merged else "[train]"
            raise UserError(f"{source}: {where}: step_every = {s.step_every} is not below the {s.epochs} epochs, so "
                            "the lr would never step")
        uses_base += [k for k in STEP_KEYS if s.schedule == "step" and k not in own]
    if study.search is None and study.models:  # a search may still sample the step schedule
        for key in STEP_KEYS:
            if key in study.train.model_fields_set and key not in uses_base:
                raise UserError(f'{source}: [train]: {key} is for schedule = "step", but no model takes it from '
                                f'[train] with that schedule (schedule = "{study.train.schedule}")')
