"""A study directory's trials in TensorBoard (event files) and MLflow (runs), read-only on the study, with the same
metric names in both (docs/tracking.md); the optional extra `convstudy[tracking]` is imported only when asked for.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from convstudy.errors import UserError
from convstudy.store import State, StudyStore, TrialRecord
from convstudy.train import EpochResult

INSTALL = "pip install 'convstudy[tracking]'"
EPOCH_METRICS = {"loss": "train/loss", "accuracy": "train/accuracy", "val_loss": "val/loss",
                 "val_accuracy": "val/accuracy", "seconds": "epoch/seconds"}
TEST_METRICS = {"test_loss": "test/loss", "test_accuracy": "test/accuracy"}
# What the TensorBoard HParams dashboard and MLflow's table compare runs on (the last value of each).
SUMMARY_METRICS = ("test/accuracy", "test/loss", "val/accuracy", "val/loss")
# MLflow's run status of each trial state (the `state` tag keeps the state itself). A pruned trial ended as its
# search meant it to: FINISHED, as Ray Tune's MLflow logger marks a trial its scheduler stopped early.
MLFLOW_STATUS = {State.PENDING: "SCHEDULED", State.RUNNING: "RUNNING", State.COMPLETE: "FINISHED",
                 State.FAILED: "FAILED", State.DIVERGED: "FAILED", State.PRUNED: "FINISHED"}
ENDED = ("FINISHED", "FAILED")  # MLflow's terminal statuses among those
_MAX_PARAM = 6000  # MLflow's limit on a parameter's value


def need(module: str, package: str, what: str) -> Any:
    """`module` imported, or the one-line UserError (exit 2) saying which extra installs it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise UserError(f"{what} needs {package}, which is not installed: {INSTALL}") from None


@dataclass(frozen=True)
class Trial:
    """One trial as the exports see it: its row, epoch rows, model's parameters (settings, factors) and key."""

    rec: TrialRecord
    epochs: list[EpochResult]
    params: dict[str, str | int | float | bool]
    key: str  # stable across exports: study fingerprint/model/seed-s

    def times(self) -> list[float | None]:
        """Each epoch's end as wall time (the trial's start plus the epochs' seconds); None if unknown."""
        start, out = self.rec.started_at, []
        for e in self.epochs:
            start = None if start is None or e.seconds is None else start + e.seconds
            out.append(start)
        return out

    def test_metrics(self) -> dict[str, float]:
        """`test/loss` and `test/accuracy` of a complete trial (empty before it completes)."""
        return {tag: getattr(self.rec, col) for col, tag in TEST_METRICS.items() if getattr(self.rec, col) is not None}


def model_params(store: StudyStore, spec) -> dict[str, str | int | float | bool]:
    """A model's settings (the study's with its overrides, optimiser arguments resolved), size and factors,
    as flat scalars: TensorBoard's hparams and MLflow's params."""
    from convstudy.data import get_info
    from convstudy.model import summarize_model
    from convstudy.spec import summarize

    settings = spec.settings(store.study.train)
    out: dict[str, Any] = {"model": spec.name, "dataset": store.study.dataset}
    for key, value in settings.model_dump().items():
        if key == "optimizer":
            out["optimizer"] = settings.optimizer.name
            out.update({f"optimizer.{k}": v for k, v in settings.optimizer.resolved().items()})
        elif isinstance(value, (tuple, list)):
            out[key] = ",".join(value) or "none"
        elif value is not None:
            out[key] = value
    summary = summarize_model(spec, get_info(store.study.dataset).input_shape)
    out.update({"params": summary.total_params, "mflops": round(summary.mflops, 3),
                "summary": summarize(spec, settings)})
    out.update({f"factor.{k}": v for k, v in spec.factors.items()})
    return out


def trials(store: StudyStore) -> list[Trial]:
    """Every trial of the study, in the spec's model order, then by seed."""
    by_model: dict[str, list[TrialRecord]] = {}
    for rec in store.db.trials():
        by_model.setdefault(rec.model, []).append(rec)
    fingerprint, out = store.study.fingerprint(), []
    for spec in store.study.models:
        if spec.name not in by_model:
            continue
        params = model_params(store, spec)
        for rec in sorted(by_model[spec.name], key=lambda r: r.seed):
            out.append(Trial(rec, store.db.epochs(rec.id), {**params, "seed": rec.seed},
                             f"{fingerprint}/{rec.model}/seed-{rec.seed}"))
    return out


# ---------------------------------------------------------------------------------------- TensorBoard

def _check_dir(out_dir: Path, study_dir: Path) -> None:
    """Refuse, before any work, a -o DIR that is inside the study, not a directory, or not empty."""
    target, study = Path(os.path.realpath(out_dir)), Path(os.path.realpath(study_dir))
    if target == study or study in target.parents:
        raise UserError(f"-o {out_dir}: is inside the study directory {study_dir}, which reports never write into")
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise UserError(f"-o {out_dir}: exists and is not an empty directory; give a new or empty one")
    if not target.parent.is_dir() or not os.access(target.parent, os.W_OK | os.X_OK):
        raise UserError(f"-o {out_dir}: directory {target.parent} does not exist or is not writable")


def write_tensorboard(store: StudyStore, out_dir: Path) -> int:
    """Event files under `out_dir`, one run per trial (`<model>/seed-<s>`) with scalars and hparams; returns the
    number of trials. Written into a sibling temporary directory renamed into place: a failure leaves no half."""
    writer_mod = need("torch.utils.tensorboard", "tensorboard", "--format tensorboard")
    hp = need("tensorboard.plugins.hparams.summary_v2", "tensorboard", "--format tensorboard")
    _check_dir(out_dir, store.out)  # before any work, so a typo in -o costs nothing
    found = trials(store)
    target = Path(os.path.realpath(out_dir))
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        levels: dict[str, set] = {}
        for t in found:
            for k, v in t.params.items():
                levels.setdefault(k, set()).add(v)
            with writer_mod.SummaryWriter(log_dir=str(tmp / t.rec.model / f"seed-{t.rec.seed}")) as w:
                w.file_writer.add_summary(hp.hparams_pb(t.params, trial_id=t.key, start_time_secs=t.rec.started_at),
                                          walltime=t.rec.started_at)
                for e, when in zip(t.epochs, t.times()):
                    for col, tag in EPOCH_METRICS.items():
                        if getattr(e, col) is not None:
                            w.add_scalar(tag, getattr(e, col), e.epoch, walltime=when)
                last = t.times()[-1] if t.epochs else None
                for tag, value in t.test_metrics().items():
                    w.add_scalar(tag, value, t.rec.epochs_done, walltime=last)
        with writer_mod.SummaryWriter(log_dir=str(tmp)) as w:
            # Discrete domains only where every level has one type (a factor may mix ints and strings).
            domains = {k: hp.Discrete(sorted(v)) if len({type(x) for x in v}) == 1 else None for k, v in levels.items()}
            w.file_writer.add_summary(hp.hparams_config_pb(
                [hp.HParam(k, d) for k, d in domains.items()], [hp.Metric(m) for m in SUMMARY_METRICS]))
        os.replace(tmp, target)  # onto a missing or empty directory
    except BaseException:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return len(found)


# --------------------------------------------------------------------------------------------- MLflow

@dataclass(frozen=True)
class MlflowExport:
    """What an export did: the experiment, and how many trial runs it created, updated or left as they were."""

    uri: str
    experiment_id: str
    created: int
    updated: int
    unchanged: int


def export_mlflow(store: StudyStore, tracking_uri: str | None = None) -> MlflowExport:
    """Every trial as an MLflow run nested under one run for the study (holding the report), in the experiment named
    after the study; a rerun logs only what is new to the runs it made (found by their `convstudy.trial` tag)."""
    need("mlflow", "mlflow (mlflow-skinny)", "export-mlflow")
    from mlflow.exceptions import MlflowException

    # Else a file store in ./mlruns, what `mlflow ui --backend-store-uri ./mlruns` reads.
    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or Path("mlruns").resolve().as_uri()
    try:
        with _file_store_allowed(uri):
            return _export(store, uri)
    except MlflowException as exc:
        raise UserError(f"--tracking-uri {uri}: {(str(exc.message).strip().splitlines() or ['?'])[0][:300]}") from None


def _export(store: StudyStore, uri: str) -> MlflowExport:
    from mlflow.entities import Param
    from mlflow.tracking import MlflowClient

    client, study = MlflowClient(uri), store.study
    fingerprint = study.fingerprint()
    exp = client.get_experiment_by_name(study.name)
    if exp is not None and exp.lifecycle_stage == "deleted":
        raise UserError(f'--tracking-uri {uri}: experiment "{study.name}" is deleted; restore it '
                        "(mlflow experiments restore) or remove it for good (mlflow gc)")
    exp_id = exp.experiment_id if exp is not None else client.create_experiment(study.name)
    known = _runs_by_key(client, exp_id, fingerprint)
    found = trials(store)

    parent_key = f"{fingerprint}/study"
    parent = known.get(parent_key)
    if parent is None:
        parent = client.create_run(exp_id, run_name=study.name, tags={
            "convstudy.trial": parent_key, "convstudy.fingerprint": fingerprint, "convstudy.kind": "study"})
        client.log_batch(parent.info.run_id, params=[Param(k, _param(v)) for k, v in
                                                     {"dataset": study.dataset, "fingerprint": fingerprint}.items()])
    parent_id = parent.info.run_id
    try:
        _log_report(client, parent_id, store)
        done = Counter(_sync_trial(client, exp_id, parent_id, t, known.get(t.key), store) for t in found)
    except BaseException:
        with contextlib.suppress(Exception):  # the export's own error is the one to report
            client.set_terminated(parent_id, "FAILED")  # not left RUNNING forever; a rerun sets it again
        raise
    if all(MLFLOW_STATUS[t.rec.state] in ENDED for t in found):
        client.set_terminated(parent_id, "FINISHED")
    else:
        client.update_run(parent_id, status="RUNNING")
    return MlflowExport(uri, exp_id, done["created"], done["updated"], done["unchanged"])


def _sync_trial(client, exp_id: str, parent_id: str, t: Trial, run, store: StudyStore) -> str:
    """Create trial `t`'s run (`run` is None) or log what is new since the last export: created/updated/unchanged."""
    from mlflow.entities import Metric, Param, RunTag

    rec, fingerprint = t.rec, store.study.fingerprint()
    new = run is None
    if new:
        tags = {"convstudy.trial": t.key, "convstudy.fingerprint": fingerprint, "convstudy.kind": "trial",
                "mlflow.parentRunId": parent_id, "model": rec.model, "seed": str(rec.seed),
                **{k: str(v) for k, v in t.params.items() if k.startswith("factor.")}}
        run = client.create_run(exp_id, start_time=_ms(rec.started_at), tags=tags, run_name=f"{rec.model} seed {rec.seed}")
        layers = " ".join(layer.to_string() for layer in store.study.model(rec.model).layers)
        client.log_batch(run.info.run_id, params=[Param(k, _param(v)) for k, v in {**t.params, "layers": layers}.items()])
        logged, logged_state = 0, None
    else:
        logged, logged_state = int(run.data.tags.get("convstudy.epochs", "0")), run.data.tags.get("state")
    metrics = [Metric(tag, float(getattr(e, col)), _ms(when), e.epoch)
               for e, when in zip(t.epochs, t.times()) if e.epoch > logged
               for col, tag in EPOCH_METRICS.items() if getattr(e, col) is not None]
    if rec.state == State.COMPLETE and logged_state != State.COMPLETE.value:
        last = t.times()[-1] if t.epochs else rec.finished_at
        metrics += [Metric(k, float(v), _ms(last), rec.epochs_done) for k, v in t.test_metrics().items()]
    if not new and not metrics and logged_state == rec.state.value:
        return "unchanged"
    client.log_batch(run.info.run_id, metrics=metrics, tags=[
        RunTag("state", rec.state.value), RunTag("convstudy.epochs", str(max([logged] + [e.epoch for e in t.epochs])))])
    status = MLFLOW_STATUS[rec.state]
    if status in ENDED:
        client.set_terminated(run.info.run_id, status, end_time=_ms(rec.finished_at))
    else:
        client.update_run(run.info.run_id, status=status)
    return "created" if new else "updated"


def _runs_by_key(client, exp_id: str, fingerprint: str) -> dict[str, Any]:
    """This study's runs already in the experiment, by their `convstudy.trial` tag (all pages)."""
    out, token = {}, None
    while True:
        page = client.search_runs([exp_id], f"tags.`convstudy.fingerprint` = '{fingerprint}'", max_results=1000,
                                  page_token=token)
        out.update({r.data.tags["convstudy.trial"]: r for r in page if "convstudy.trial" in r.data.tags})
        token = page.token
        if not token:
            return out


def _log_report(client, run_id: str, store: StudyStore) -> None:
    """OUT/report.html and report.json as the study run's artifacts; generated in a temporary directory when
    the study directory has none (a run stopped before its first trial finished)."""
    have = [store.out / name for name in ("report.html", "report.json") if (store.out / name).is_file()]
    if len(have) == 2:
        for path in have:
            client.log_artifact(run_id, str(path))
        return
    from convstudy.report import collect, render

    report = collect(store)
    with tempfile.TemporaryDirectory() as tmp:
        for fmt in ("html", "json"):
            path = Path(tmp) / f"report.{fmt}"
            path.write_text(render(report, fmt))
            client.log_artifact(run_id, str(path))


@contextlib.contextmanager
def _file_store_allowed(uri: str) -> Iterator[None]:
    """MLflow 3 refuses file stores unless MLFLOW_ALLOW_FILE_STORE is set; a file URI here was asked for
    (or is our default), so allow it for this export only."""
    if not (uri.startswith("file:") or "://" not in uri) or "MLFLOW_ALLOW_FILE_STORE" in os.environ:
        yield
        return
    os.environ["MLFLOW_ALLOW_FILE_STORE"] = "true"
    try:
        yield
    finally:
        os.environ.pop("MLFLOW_ALLOW_FILE_STORE", None)


def _param(value: Any) -> str:
    return str(value)[:_MAX_PARAM]


def _ms(seconds: float | None) -> int:
    """Milliseconds since the epoch, MLflow's time unit; now where the study recorded no time."""
    return int((time.time() if seconds is None else seconds) * 1000)
