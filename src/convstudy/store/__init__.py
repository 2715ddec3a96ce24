"""Store stage: a study's output directory — study.db plus per-trial safetensors files.

Layout:
    OUT/study.db                                   spec, trials, per-epoch metrics, runs, events
    OUT/trials/<model>/seed-<s>/checkpoint.safetensors   last finished epoch (weights, optimiser, RNGs)
    OUT/trials/<model>/seed-<s>/weights.safetensors      final weights of a complete trial
    OUT/trials/<model>/seed-<s>/predictions.safetensors  test-set probabilities (float16) and labels
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from convstudy.errors import StoreError
from convstudy.spec import Study, build_study
from convstudy.store.db import STATES, EpochRow, StudyDB, TrialRecord, owner_alive, this_owner
from convstudy.store.files import atomic_write, load_tensors, save_tensors

__all__ = ["StudyStore", "StudyDB", "TrialRecord", "EpochRow", "STATES", "this_owner", "owner_alive",
           "atomic_write", "load_tensors", "save_tensors"]


class StudyStore:
    """One study's output directory. `open` refuses a directory that holds a different study."""

    def __init__(self, out: Path, db: StudyDB, study: Study) -> None:
        self.out, self.db, self.study = out, db, study

    @classmethod
    def create_or_open(cls, out: str | Path, study: Study) -> "StudyStore":
        """Open `out` for `study`, creating it; a different spec already there is refused, never merged."""
        out = Path(out)
        if out.exists() and not out.is_dir():
            raise StoreError(f"{out}: exists and is not a directory")
        out.mkdir(parents=True, exist_ok=True)
        db = StudyDB(out / "study.db")
        try:
            # Everything is checked before anything is written, so a refusal leaves the directory as it was.
            have = db.get_meta("fingerprint")
            if have is not None and have != study.fingerprint():
                old = json.loads(db.get_meta("study") or "{}").get("name", "?")
                raise StoreError(f'{out}: holds a different study ("{old}", spec {have}; this one is '
                                 f"{study.fingerprint()}); use another --out or the same study file and flags")
            store = cls(out, db, study)
            store.check_checkpoints()
            described = json.dumps(study.to_dict())
            if have is None or db.get_meta("study") != described:  # same study: keep the newest description/seeds
                with db.transaction():
                    if db.get_meta("fingerprint") not in (None, study.fingerprint()):  # created meanwhile
                        raise StoreError(f"{out}: another run created a different study here just now")
                    db.set_meta("fingerprint", study.fingerprint())
                    db.set_meta("study", described)
        except BaseException:
            db.close()
            raise
        return store

    @classmethod
    def open_existing(cls, out: str | Path) -> "StudyStore":
        """Open a finished or running study directory for reading (reports, predict, export)."""
        out = Path(out)
        path = out / "study.db"
        if not path.is_file():
            raise StoreError(f"{out}: not a study directory (no study.db)")
        db = StudyDB(path)
        raw = db.get_meta("study")
        if raw is None:
            raise StoreError(f"{path}: has no study spec")
        return cls(out, db, build_study(json.loads(raw), source=str(path)))

    def close(self) -> None:
        self.db.close()

    def check_checkpoints(self) -> None:
        """Read every checkpoint a resumed trial would load; a damaged one is a StoreError naming it."""
        for rec in self.db.trials():
            path = self.checkpoint_path(rec.model, rec.seed)
            if rec.state not in ("complete", "diverged") and path.exists():
                load_tensors(path)

    def trial_dir(self, model: str, seed: int) -> Path:
        return self.out / "trials" / model / f"seed-{seed}"

    def checkpoint_path(self, model: str, seed: int) -> Path:
        return self.trial_dir(model, seed) / "checkpoint.safetensors"

    def weights_path(self, model: str, seed: int) -> Path:
        return self.trial_dir(model, seed) / "weights.safetensors"

    def predictions_path(self, model: str, seed: int) -> Path:
        return self.trial_dir(model, seed) / "predictions.safetensors"

    def load_predictions(self, model: str, seed: int) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(probabilities [N, classes] float32, labels [N]) of a complete trial, or None."""
        path = self.predictions_path(model, seed)
        if not path.exists():
            return None
        tensors, _ = load_tensors(path)
        return tensors["probs"].float(), tensors["labels"]

    def load_weights(self, model: str, seed: int) -> dict[str, torch.Tensor]:
        return load_tensors(self.weights_path(model, seed))[0]
