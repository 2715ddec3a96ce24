"""Store stage: a study's output directory — study.db plus per-trial safetensors files.

Layout:
    OUT/study.db                                   spec, trials, per-epoch metrics, runs, events
    OUT/trials/<model>/seed-<s>/checkpoint.safetensors   last finished epoch (weights, optimiser, RNGs)
    OUT/trials/<model>/seed-<s>/weights.safetensors      final weights of a complete trial
    OUT/trials/<model>/seed-<s>/predictions.safetensors  test-set probabilities (float16) and labels
    OUT/latency.json                               measured inference latency per model (`convstudy latency`)
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Any

import torch

from convstudy.errors import StoreError, UserError
from convstudy.spec import ModelSpec, Study, build_study
from convstudy.spec.models import is_sampled
from convstudy.store.db import FINISHED, STATES, State, StudyDB, TrialRecord, owner_alive, this_owner
from convstudy.store.checkpoints import CheckpointStorage, storage_for
from convstudy.store.provenance import provenance
from convstudy.store.files import (
    DIGEST_KEY, DamagedFile, atomic_write, decode_tensors, encode_tensors, identity, load_tensors, quarantine, save_tensors,
    umask_mode,
)
from convstudy.untrusted import load_untrusted

__all__ = ["FINISHED", "DIGEST_KEY", "provenance", "CheckpointStorage", "storage_for", "StudyStore", "StudyDB", "TrialRecord", "STATES", "State", "DamagedFile", "this_owner",
           "owner_alive", "study_dir", "atomic_write", "decode_tensors", "encode_tensors", "identity", "load_tensors",
           "save_tensors", "quarantine", "check_numerics", "umask_mode"]


def study_dir(out: str | Path) -> Path:
    """`out` made (with its parents) and checked writable, for a run to write a study into; StoreError otherwise."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise StoreError(f"--out {out}: exists and is not a directory")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".convstudy-write-test-{os.getpid()}"
        probe.touch()
        probe.unlink()
    except OSError as exc:
        raise StoreError(f"--out {out}: cannot be used as a study directory ({exc.strerror or exc})") from None
    return out


class StudyStore:
    """One study's output directory. `open` refuses a directory that holds a different study."""

    def __init__(self, out: Path, db: StudyDB, study: Study) -> None:
        self.out, self.db, self.study = out, db, study
        self.instance = db.get_meta("instance")  # made with study.db; None in study.db files from before it

    @classmethod
    def create_or_open(cls, out: str | Path, study: Study) -> "StudyStore":
        """Open `out` for `study`, creating it; a different spec already there is refused, never merged."""
        out = study_dir(out)
        db = StudyDB(out / "study.db")
        try:
            # Everything is checked before anything is written, so a refusal leaves the directory as it was.
            have = db.get_meta("fingerprint")
            if have is not None and have != study.fingerprint():
                old = json.loads(db.get_meta("study") or "{}").get("name", "?")
                raise StoreError(f'{out}: holds a different study ("{old}", spec {have}; this one is '
                                 f"{study.fingerprint()}); use another --out or the same study file and flags")
            if study.search is not None:  # the models the search sampled so far stay the study's
                study = _with_sampled(study, json.loads(db.get_meta("study") or "{}").get("models", []))
            described = json.dumps(study.to_dict())
            if have is None or db.get_meta("study") != described:  # same study: keep the newest description/seeds
                with db.transaction():
                    if db.get_meta("fingerprint") not in (None, study.fingerprint()):  # created meanwhile
                        raise StoreError(f"{out}: another run created a different study here just now")
                    if db.get_meta("fingerprint") is None:  # a new study.db: its files carry its instance
                        db.set_meta("instance", uuid.uuid4().hex)
                    db.set_meta("fingerprint", study.fingerprint())
                    db.set_meta("study", described)
            return cls(out, db, study)
        except BaseException:
            db.close()
            raise

    @classmethod
    def open_existing(cls, out: str | Path) -> "StudyStore":
        """Open a finished or running study directory read-only (reports, predict, compare, export)."""
        out = Path(out)
        path = out / "study.db"
        if not path.is_file():
            raise StoreError(f"{out}: not a study directory (no study.db)")
        if path.stat().st_size == 0:
            raise StoreError(f"{path}: empty file, not a study database; nothing was changed")
        db = StudyDB(path, readonly=True)
        try:
            raw = db.get_meta("study")
            if raw is None:
                raise StoreError(f"{path}: has no study spec")
            data = json.loads(raw)
            models = data.get("models") if isinstance(data, dict) and data.get("search") is not None else None
            if isinstance(models, list):
                # A search's sampled models rejoin as the store added them: validating a Study refuses their names.
                data = {**data, "models": [m for m in models if not (isinstance(m, dict) and is_sampled(m))]}
                return cls(out, db, _with_sampled(build_study(data, source=str(path)), models))
            return cls(out, db, build_study(data, source=str(path)))
        except BaseException:
            db.close()
            raise

    def close(self) -> None:
        self.db.close()

    def add_model(self, model: ModelSpec) -> None:
        """A model joins the study as it runs (a search sampled it), kept in study.db's spec; the study's
        fingerprint leaves sampled models out, so the directory still holds the same study."""
        if any(m.name == model.name for m in self.study.models):
            return
        self.study = self.study.model_copy(update={"models": (*self.study.models, model)})
        with self.db.transaction():
            self.db.set_meta("study", json.dumps(self.study.to_dict()))

    def owner(self, model: str, seed: int) -> str:
        """The identity this study's files of trial (model, seed) carry."""
        return identity(self.study.fingerprint(), model, seed, self.instance)

    def trial_dir(self, model: str, seed: int) -> Path:
        return self.out / "trials" / model / f"seed-{seed}"

    def weights_path(self, model: str, seed: int) -> Path:
        return self.trial_dir(model, seed) / "weights.safetensors"

    def predictions_path(self, model: str, seed: int) -> Path:
        return self.trial_dir(model, seed) / "predictions.safetensors"

    def save_results(self, trial_id: int, model: str, seed: int, weights: dict[str, torch.Tensor],
                     probs: torch.Tensor, labels: torch.Tensor, weights_meta: dict[str, str] | None = None,
                     ) -> tuple[str, str]:
        """Write a finished trial's weights (with `weights_meta`, e.g. its normalisation) and test predictions;
        returns their digests for `db.finish`."""
        owner = self.owner(model, seed)
        w = save_tensors(self.weights_path(model, seed), weights, weights_meta, owner=owner)
        p = save_tensors(self.predictions_path(model, seed),
                         {"probs": probs.to(torch.float16), "labels": labels.to(torch.uint8)}, owner=owner)
        return w, p

    def load_predictions(self, model: str, seed: int) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(probabilities [N, classes] float32, labels [N]) of a complete trial, or None; damage is a DamagedFile."""
        path = self.predictions_path(model, seed)
        if not path.exists():
            return None
        rec = self.db.find(model, seed)
        tensors, _ = load_tensors(path, self.owner(model, seed), rec.predictions_digest if rec else None)
        return tensors["probs"].float(), tensors["labels"]

    def load_weights(self, model: str, seed: int) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
        """A complete trial's final weights and their metadata, checked against its identity and recorded digest."""
        rec = self.db.find(model, seed)
        return load_tensors(self.weights_path(model, seed), self.owner(model, seed),
                            rec.weights_digest if rec else None)

    @property
    def latency_path(self) -> Path:
        return self.out / "latency.json"

    def read_latency(self) -> dict[str, Any]:
        """OUT/latency.json ({"models": {}} when nothing was measured); an unreadable file is a StoreError."""
        if not self.latency_path.exists():
            return {"models": {}}
        try:
            data = load_untrusted(self.latency_path, "json", what="latency file")
        except UserError as exc:
            raise StoreError(str(exc)) from None
        if not isinstance(data, dict) or not isinstance(data.get("models"), dict):
            raise StoreError(f"{self.latency_path}: not a convstudy latency file (no models table)")
        for model, entry in data["models"].items():
            if (problem := _latency_problem(entry)) is not None:
                raise StoreError(f'{self.latency_path}: model "{model}": {problem}; rerun `convstudy latency`')
        return data

    def record_latency(self, model: str, entry: dict[str, Any], method: str) -> None:
        """Merge one model's latency into OUT/latency.json, atomically. A measurement replaces the model's
        earlier one; a `not_measured` note never replaces a measurement, so nothing measured is lost."""
        data = self.read_latency()
        old = data["models"].get(model)
        if "not_measured" not in entry or not old or "not_measured" in old:
            data["models"][model] = entry
        data.update(format="convstudy-latency", method=method)
        atomic_write(self.latency_path, (json.dumps(data, indent=2, allow_nan=False) + "\n").encode(), 0o644)


def _latency_problem(entry: Any) -> str | None:
    """What makes one model's entry of latency.json unusable, or None."""
    if not isinstance(entry, dict):
        return "not a table"
    if "not_measured" in entry:
        return None if isinstance(entry["not_measured"], str) else "not_measured is not text"
    runs = entry.get("other_runtimes")
    if not isinstance(runs, list):
        return "no other_runtimes list"
    for run in [entry, *runs]:
        for field in ("batch1_ms", "batch256_ms_per_image"):
            t = run.get(field) if isinstance(run, dict) else None
            ci = t.get("ci95") if isinstance(t, dict) else None
            if not (isinstance(ci, list) and len(ci) == 2 and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                                  for v in [t.get("median"), *ci])):
                return f"{field} has no median and ci95"
    return None


def _with_sampled(study: Study, stored: list[dict[str, Any]]) -> Study:
    """`study` with the sampled models (spec.search.is_sampled) a previous run stored, in their order."""
    have = {m.name for m in study.models}
    extra = tuple(ModelSpec.model_validate(m) for m in stored if is_sampled(m) and m["name"] not in have)
    return study.model_copy(update={"models": (*study.models, *extra)}) if extra else study


def check_numerics(todo: list[TrialRecord], numerics: dict[str, dict[str, Any]], flags: dict[str, str]) -> None:
    """Refuse, in one line naming the flag (`flags[setting]`), to continue a trial that has trained an
    epoch with other settings that change its numbers (`numerics[model]`, as `claim` records them)."""
    for rec in todo:
        have = rec.settings
        for key, value in numerics[rec.model].items():
            if have and rec.epochs_done and key in have and have[key] != value:
                raise StoreError(
                    f"{flags.get(key, key)}: {rec.model} seed {rec.seed} trained {rec.epochs_done} epochs with "
                    f"{key} {have[key]}, this run would continue it with {value}; resume with the settings it "
                    "started with, or use another --out")
