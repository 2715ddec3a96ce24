"""`convstudy export-mlflow OUT [--tracking-uri URI]`: every trial of a study directory as an MLflow run."""

from __future__ import annotations

import argparse
from contextlib import closing

from convstudy.cli.options import add_command


def register(sub) -> None:
    p = add_command(
        sub, "export-mlflow", "log every trial as an MLflow run (needs pip install 'convstudy[tracking]')",
        "Log every trial of a study directory as an MLflow run, in the experiment named after the study, nested "
        "under one run for the study that holds report.html and report.json. A run has the model's settings, "
        "layers and factors as params, per-epoch metrics (step = epoch), the test metrics, and tags model, seed, "
        "state and factor.<name>. Run it again, during or after a study: runs are found by their convstudy.trial "
        "tag and only what is new is logged. OUT is read, never written.", run, study_dir=True)
    p.add_argument("--tracking-uri", metavar="URI",
                   help="MLflow tracking URI: a server (http://...), a database (sqlite:///mlflow.db) or a file "
                        "store (file:///path, or a path); default: $MLFLOW_TRACKING_URI, else a file store in "
                        "./mlruns")


def run(args: argparse.Namespace) -> int:
    from convstudy.report.tracking import export_mlflow
    from convstudy.store import StudyStore

    with closing(StudyStore.open_existing(args.out)) as store:
        done = export_mlflow(store, args.tracking_uri)
    print(f'exported study "{store.study.name}" to {done.uri} (experiment {done.experiment_id}): '
          f"{done.created} runs created, {done.updated} updated, {done.unchanged} unchanged")
    return 0
