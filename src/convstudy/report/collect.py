"""Everything a report shows, gathered once from a study directory into one JSON-able dict: the study's header
and per-model entries (every section reads them), then each section's own numbers from its module."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict
from typing import Any

import numpy as np

from convstudy.data import get_info
from convstudy.model import summarize_model
from convstudy.report.best import best_model_summary
from convstudy.report.design_spaces import design_spaces
from convstudy.report.factors import factor_effects
from convstudy.report.fidelity import fidelity_section, pruning_evidence
from convstudy.report.fair import fair_section
from convstudy.report.search import search_section
from convstudy.report.stats import ALPHA, best_group, describe, look_alpha
from convstudy.spec import NOTEBOOK_ACCURACY, summarize
from convstudy.store import DamagedFile, State, StoreError, StudyStore

VALIDATION_NOTE = ("The test set was also the validation data (the notebook's semantics): per-epoch validation "
                   "numbers and the final test accuracy come from the same 10,000 images, so model selection "
                   "on them is optimistic.")


def collect(store: StudyStore) -> dict[str, Any]:
    """The report's data: study header and, per model, params, statistics over seeds and epoch curves."""
    study = store.study
    info = get_info(study.dataset)
    trials = store.db.trials()
    runs = store.db.runs()
    by_model: dict[str, list] = {}
    for rec in trials:
        by_model.setdefault(rec.model, []).append(rec)
    models, correct, warnings = [], {}, []
    racing = json.loads(store.db.get_meta("racing") or "{}")
    n_train = runs[-1].get("n_train") if runs else None
    try:
        latency = store.read_latency()
    except StoreError as exc:  # shown, never fatal: the rest of the report stands without it
        warnings.append(str(exc))
        latency = {"models": {}}
    for spec in study.models:
        recs = by_model.get(spec.name)
        if not recs:
            continue
        settings = spec.settings(study.train)
        summary = summarize_model(spec, info.input_shape)
        done = [r for r in recs if r.state == State.COMPLETE]
        per_seed, final_val = [], []
        for r in recs:
            rows = store.db.epochs(r.id)
            if r.state == State.COMPLETE and rows:
                final_val.append(rows[-1].val_accuracy)
            per_seed.append({"seed": r.seed, "state": r.state, "test_accuracy": r.test_accuracy,
                             "test_loss": r.test_loss, "diverged_epoch": r.diverged_epoch, "error": r.error,
                             "attempts": r.attempts, "train_seconds": r.train_seconds, "device": r.device,
                             "settings": r.settings, "epochs": [asdict(e) for e in rows]})
        epoch_secs = [e["seconds"] for s in per_seed for e in s["epochs"]]
        entry = {
            "name": spec.name,
            "description": spec.description or summarize(spec, settings),
            "kernel": _kernel(spec),
            "factors": dict(spec.factors),
            "space": spec.space or None,
            "optimizer": settings.optimizer.name,
            "params": summary.total_params,
            "trainable_params": summary.trainable_params,
            "flops": summary.flops,
            "mflops": round(summary.mflops, 3),
            "test_accuracy": describe([r.test_accuracy for r in done]),
            "val_accuracy": describe(final_val),  # the last epoch's, of the finished seeds
            "test_loss": describe([r.test_loss for r in done]),
            "states": dict(Counter(r.state for r in recs)),
            "diverged": sum(r.state == State.DIVERGED for r in recs),
            "failed": sum(r.state == State.FAILED for r in recs),
            "pruned": sum(r.state == State.PRUNED for r in recs),
            "seconds_per_epoch": float(np.mean(epoch_secs)) if epoch_secs else None,
            "samples_per_s": (n_train / float(np.mean(epoch_secs))) if epoch_secs and n_train else None,
            "train_seconds": sum(r.train_seconds for r in recs),
            "latency": _without(latency["models"].get(spec.name), "hardware"),
            "notebook_accuracy": NOTEBOOK_ACCURACY.get(spec.name) if study.name == "seed" else None,
            "racing": racing.get(spec.name),  # {seeds, stopped} once a racing run has ended
            "epochs": _mean_curves([s["epochs"] for s in per_seed if s["state"] == State.COMPLETE]
                                   or [s["epochs"] for s in per_seed]),
            "trials": per_seed,
        }
        models.append(entry)
        if done:
            try:
                preds = store.load_predictions(spec.name, done[0].seed)
            except DamagedFile as exc:  # shown, and left out of McNemar's test, never used
                warnings.append(str(exc))
                preds = None
            if preds is not None:
                probs, labels = preds
                correct[spec.name] = (probs.argmax(1) == labels.long()).numpy()
    metric = selection_metric(study.train.validation)
    # McNemar's test reads test predictions, so it may only decide where the test set selects.
    # A raced study's rounds called models worse at look_alpha; its best group is drawn at the same level.
    alpha = look_alpha(study.race, len(study.seeds)) if study.race else ALPHA
    best_group(models, metric, correct if metric == "test_accuracy" else None, alpha)
    spaces = design_spaces(models, metric, study.report.normalize)
    fidelity = fidelity_section(models)
    warnings += fidelity["warnings"] if fidelity else []
    search = search_section(store) if study.search else None
    if search is not None:  # the search summary names the fidelity its pruning rests on
        search["fidelity_note"] = pruning_evidence(fidelity)
    return {
        "study": {
            "name": study.name,
            "description": study.description,
            "dataset": study.dataset,
            "fingerprint": study.fingerprint(),
            "seeds": list(study.seeds),
            "epochs": study.train.epochs,
            "batch_size": study.train.batch_size,
            "validation": study.train.validation,
            "validation_note": VALIDATION_NOTE if study.train.validation == "test" else None,
            "selection_metric": metric,
            "best_group_alpha": alpha,
            "train_limit": study.train.train_limit,
            "trials": len(trials),
            "states": dict(Counter(r.state for r in trials)),
            "total_train_seconds": sum(r.train_seconds for r in trials),
            "provenance": runs[-1] if runs else None,
            **numerics_summary(trials),
            "warnings": warnings,
            "latency": {"method": latency.get("method"), "hardware": _distinct(
                e["hardware"] for e in latency["models"].values() if "hardware" in e)} if latency["models"] else None,
            "spec": json.loads(store.db.get_meta("study") or "{}"),
        },
        "models": models,
        "best_model": best_model_summary(store, models),
        **factor_effects(models, metric),
        **({"design_spaces": spaces} if spaces else {}),
        **({"search": search} if study.search else {}),
        **({"fidelity": fidelity} if fidelity else {}),
        **({"fair": fair_section(store)} if study.fair else {}),
        **({"audit": json.loads(audit)} if (audit := store.db.get_meta("audit")) else {}),  # convstudy audit's
    }


def selection_metric(validation: str) -> str:
    """What ranks models, picks the best group and fits factor effects: the final validation accuracy in
    a holdout study; in a `validation = "test"` study the test accuracy (the notebook's way, with its note)."""
    return "val_accuracy" if validation == "holdout" else "test_accuracy"


def numerics_summary(trials: list) -> dict[str, Any]:
    """What the trials trained with (device, precision, threads, ...): each setting's values with the
    trials that used them, and which settings are mixed, so a study mixing them is shown as such."""
    uses: dict[str, dict[str, list[str]]] = {}
    for rec in trials:
        for key, value in (rec.settings or {}).items():
            shown = ", ".join(value) or "none" if isinstance(value, list) else str(value)
            uses.setdefault(key, {}).setdefault(shown, []).append(f"{rec.model} seed {rec.seed}")
    return {"numerics": uses, "mixed": sorted(k for k, v in uses.items() if len(v) > 1)}


def _mean_curves(curves: list[list[dict[str, float]]]) -> list[dict[str, float]]:
    """Per-epoch mean (and std over seeds) of every metric, over the seeds that reached that epoch."""
    out = []
    for i in range(max((len(c) for c in curves), default=0)):
        rows = [c[i] for c in curves if len(c) > i]
        entry: dict[str, Any] = {"epoch": rows[0]["epoch"], "n": len(rows)}
        for key in ("loss", "accuracy", "val_loss", "val_accuracy", "seconds"):
            vals = np.array([r[key] for r in rows], dtype=float)
            entry[key] = float(vals.mean())
            entry[f"{key}_std"] = float(vals.std(ddof=1)) if len(vals) > 1 else 0.0
        out.append(entry)
    return out


def _without(entry: dict[str, Any] | None, key: str) -> dict[str, Any] | None:
    return None if entry is None else {k: v for k, v in entry.items() if k != key}


def _distinct(items) -> list[Any]:
    out: list[Any] = []
    for item in items:
        if item not in out:
            out.append(item)
    return out


def _kernel(spec) -> str:
    kernels = sorted({layer.kernel for layer in spec.layers if layer.type == "conv"})
    return "/".join(f"{k}x{k}" for k in kernels) or "-"
