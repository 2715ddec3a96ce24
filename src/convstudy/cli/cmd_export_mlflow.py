"""`convstudy export-mlflow OUT [--tracking-uri URI]`: every trial of a study directory as an MLflow run."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub) -> None:
    p = sub.add_parser(
        "export-mlflow", help="log every trial as an MLflow run (needs pip install 'convstudy[tracking]')",
        description="Log every trial of a study directory as an MLflow run, in the experiment named after the "
                    "study, nested under one run for the study that holds report.html and report.json. A run has "
                    "the model's settings, layers and factors as params, per-epoch metrics (step = epoch), the "
                    "test metrics, and tags model, seed, state and factor.<name>. Run it again, during or after a "
                    "study: runs are found by their convstudy.trial tag and only what is new is logged. OUT is "
                    "read, never written.")
    p.add_argument("out", metavar="OUT", type=Path, help="study directory")
    p.add_argument("--tracking-uri", metavar="URI",
                   help="MLflow tracking URI: a server (http://...), a database (sqlite:///mlflow.db) or a file "
                        "store (file:///path, or a path); default: $MLFLOW_TRACKING_URI, else a file store in "
                        "./mlruns")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from convstudy.report.tracking import export_mlflow
    from convstudy.store import StudyStore

    store = StudyStore.open_existing(args.out)
    try:
        done = export_mlflow(store, args.tracking_uri)
    finally:
        store.close()
    print(f'exported study "{store.study.name}" to {done.uri} (experiment {done.experiment_id}): '
          f"{done.created} runs created, {done.updated} updated, {done.unchanged} unchanged")
    return 0
