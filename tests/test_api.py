"""The notebook API: convstudy.run / convstudy.load and Results (frame, summary, the inline report)."""

from __future__ import annotations

import subprocess
import sys
import time
from html.parser import HTMLParser
from pathlib import Path

import pytest

import convstudy
from convstudy.cli import main
from convstudy.errors import StoreError, UserError
from convstudy.spec import Study
from convstudy.store import StudyStore

from conftest import db_rows

TINY_LAYERS = ["conv(4,3)", "pool(2)", "flatten", "dense(10)"]


def snapshot(out: Path) -> dict[str, tuple[int, int]]:
    """Every file under `out` with its size and mtime, to show that reading wrote nothing."""
    return {str(p.relative_to(out)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(out.rglob("*"))
            if p.is_file() and not p.name.endswith("-shm")}  # -shm: SQLite's shared memory, a writer's


def srcdoc(html: str) -> str:
    """The page inside `_repr_html_`'s iframe, unescaped as a browser reads the attribute."""
    found: list[str] = []

    class Parser(HTMLParser):
        def handle_starttag(self, tag, attrs):
            found.extend(v for k, v in attrs if tag == "iframe" and k == "srcdoc")

    Parser().feed(html)
    assert len(found) == 1, html[:200]
    return found[0]


def test_run_frame_summary_load_and_resume(tiny_mnist, tiny_study_file, tmp_path, capsys):
    study, out = tiny_study_file(epochs=3, seeds=2), tmp_path / "out"
    results = convstudy.run(study, out=out, epochs=1, data_dir=tiny_mnist.dir, quiet=True)
    assert capsys.readouterr().out == ""  # quiet: no progress lines

    frame = results.frame()
    assert list(zip(frame.model, frame.seed)) == [("small-a", 0), ("small-a", 1), ("small-b", 0), ("small-b", 1)]
    assert list(frame.columns) == ["model", "seed", "state", "test_accuracy", "test_loss", "val_accuracy", "val_loss",
                                   "epochs_done", "train_seconds", "params", "mflops", "error"]
    assert set(frame.state) == {"complete"} and set(frame.epochs_done) == {1}  # epochs=1 overrode the file's 3
    stored = db_rows(out / "study.db", "SELECT t.test_accuracy, e.val_loss FROM trials t JOIN epochs e "
                                       "ON e.trial_id = t.id ORDER BY t.position, t.seed")
    assert [tuple(r) for r in frame[["test_accuracy", "val_loss"]].itertuples(index=False)] == stored

    epochs = results.frame(epochs=True)
    assert len(epochs) == 4 and set(epochs.epoch) == {1}
    assert list(epochs.val_loss) == list(frame.val_loss)

    summary = results.summary()
    assert list(summary.index) == ["small-a", "small-b"]
    a = frame[frame.model == "small-a"].test_accuracy
    assert summary.loc["small-a", "test accuracy %"].startswith(f"{100 * a.mean():.2f} ± {100 * a.std():.2f}")
    assert summary.attrs["notes"][0].startswith("★ = best group: not called worse than the best model")

    before = snapshot(out)
    loaded = convstudy.load(out)
    assert loaded.frame().equals(frame)
    assert loaded.summary().equals(summary) and "4 complete" in repr(loaded)
    page = srcdoc(loaded._repr_html_())
    assert page.startswith("<!doctype html>") and "small-b" in page
    assert snapshot(out) == before  # load, frame, summary and the report read only

    again = convstudy.run(study, out=out, epochs=1, data_dir=tiny_mnist.dir)
    assert "nothing to run" in " ".join(capsys.readouterr().out.split())  # rich folds at 80 columns
    assert again.frame().equals(loaded.frame())


def test_factors_are_columns_and_user_text_is_escaped(tiny_mnist, tmp_path):
    hostile = "<script>window.pwned = 1</script>"
    study = Study(name="hostile", description=hostile, models=[
        {"name": "m", "description": '<img src=x onerror="alert(1)">', "layers": TINY_LAYERS,
         "factors": {"act": "<b>relu</b>", "state": 1}}])
    results = convstudy.run(study, out=tmp_path / "out", data_dir=tiny_mnist.dir, epochs=1, train_limit=100,
                            quiet=True)
    frame = results.frame()
    assert list(frame.columns[:5]) == ["model", "seed", "act", "factor_state", "state"]
    assert frame.loc[0, "act"] == "<b>relu</b>" and frame.loc[0, "state"] == "complete"

    html = results._repr_html_()
    assert html.startswith("<iframe") and 'sandbox="allow-scripts"' in html
    assert "<script" not in html and "<img" not in html  # the whole page is in the escaped attribute
    page = srcdoc(html)
    assert "&lt;script&gt;window.pwned = 1&lt;/script&gt;" in page and hostile not in page
    assert "&lt;img src=x onerror=" in page and "<img src=x" not in page


def test_load_a_running_study_reads_without_writing(tmp_path):
    study = Study(name="running", seeds=[0, 1], models=[{"name": "m", "layers": TINY_LAYERS}])
    writer = StudyStore.create_or_open(tmp_path / "out", study)  # a run in progress holds study.db open (WAL)
    try:
        writer.db.ensure_trials([("m", 0, 0), ("m", 1, 0)])
        trial = writer.db.claim("someone-else", {("m", 0)})
        writer.db.record_epoch(trial.id, 1, {"loss": 2.0, "accuracy": 0.2, "val_loss": 1.5, "val_accuracy": 0.4,
                                             "seconds": 3.0})
        assert (tmp_path / "out" / "study.db-wal").exists()
        before = snapshot(tmp_path / "out")

        results = convstudy.load(tmp_path / "out")
        frame = results.frame()
        assert list(frame.state) == ["running", "pending"]
        assert list(frame.epochs_done) == [1, 0] and frame.val_accuracy[0] == 0.4
        assert frame.test_accuracy.isna().all()
        assert results.summary().loc["m", "notes"] == "1 pending, 1 running"
        assert "running" in srcdoc(results._repr_html_())
        assert snapshot(tmp_path / "out") == before

        writer.db.record_epoch(trial.id, 2, {"loss": 1.0, "accuracy": 0.5, "val_loss": 0.9, "val_accuracy": 0.7,
                                             "seconds": 3.0})
        assert list(results.frame().epochs_done) == [2, 0]  # the same object follows the run
    finally:
        writer.close()


@pytest.mark.parametrize("options, flags", [
    (dict(epochs=0), ["--epochs", "0"]),
    (dict(device="tpu"), ["--device", "tpu"]),
    (dict(models=["small-a", "nope"]), ["--models", "small-a,nope"]),
    (dict(cpus_per_trial=0), ["--cpus-per-trial", "0"]),
])
def test_bad_option_is_the_cli_message_and_touches_nothing(options, flags, tiny_study_file, tmp_path, capsys):
    study, out = tiny_study_file(), tmp_path / "out"
    with pytest.raises(UserError) as err:
        convstudy.run(study, out=out, **options)
    assert main(["run", str(study), "--out", str(out), *flags]) == 2
    assert capsys.readouterr().err == f"convstudy: error: {err.value}\n"
    assert "\n" not in str(err.value) and not out.exists()


def test_unknown_option_and_bad_directory_are_one_line(tiny_study_file, tmp_path):
    with pytest.raises(UserError, match=r"^convstudy.run: unknown option epoch; valid: address, .*epochs, ") as err:
        convstudy.run(tiny_study_file(), out=tmp_path / "out", epoch=1)
    assert "streams" not in str(err.value)
    with pytest.raises(StoreError, match="not a study directory"):
        convstudy.load(tmp_path)


@pytest.mark.parametrize("call, bad", [(convstudy.load, None), (convstudy.load, 3), (convstudy.load, b"runs"),
                                       (convstudy.run, None), (convstudy.run, 3.5), (convstudy.run, ["seed"])])
def test_a_wrong_type_for_the_study_or_directory_is_one_user_error(call, bad, tmp_path):
    """Issue 25 item 12: convstudy.load(None) raised a TypeError from pathlib instead of saying what was wrong."""
    with pytest.raises(UserError, match=rf"^convstudy.{call.__name__}: .* not {type(bad).__name__}$"):
        call(bad, **({"out": tmp_path / "out"} if call is convstudy.run else {}))
    assert not (tmp_path / "out").exists()


def test_import_convstudy_stays_light():
    code = "import sys, convstudy; print(sorted({'torch', 'pandas', 'convstudy.api'} & set(sys.modules)))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True).stdout.strip() == "[]"


def test_the_library_sits_under_the_cli(tiny_study_file, tmp_path):
    # convstudy.run builds the RunRequest the CLI builds from its flags; it never goes through the CLI.
    code = ("import sys, convstudy\n"
            "from convstudy.errors import UserError\n"
            "try:\n"
            f"    convstudy.run({str(tiny_study_file())!r}, out={str(tmp_path / 'o')!r}, cpus_per_trial=0)\n"
            "except UserError as exc:\n"
            "    print(exc)\n"
            "print(sorted(m for m in sys.modules if m.startswith('convstudy.cli')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out == "--cpus-per-trial must be > 0 and --gpus-per-trial >= 0\n[]\n"


def test_progress_in_jupyter_redraws_one_output_and_quiet_shows_nothing(monkeypatch):
    import io

    import IPython.display
    from rich.console import Console
    from rich.text import Text

    from convstudy.executors.progress import ProgressView
    from convstudy.executors.trial import TrialJob
    from convstudy.train import EpochResult, Plan

    tables: list = []  # what the one live output showed, in order
    lines: list[str] = []  # rich's printed lines, each its own output

    class Handle:  # what IPython's display(..., display_id=True) returns
        def update(self, obj, raw=False):
            tables.append(obj)

    def display(obj, display_id=False):
        if display_id:
            tables.append(obj)
            return Handle()
        lines.append(Text.from_ansi(obj.text).plain.strip())

    monkeypatch.setattr(IPython.display, "display", display)
    study = Study(name="s", train={"epochs": 2}, models=[{"name": "m", "layers": TINY_LAYERS}])
    job = TrialJob(trial_id=1, model=study.models[0], settings=study.models[0].settings(study.train), seed=3,
                   input_shape=(28, 28, 1), plan=Plan())
    jupyter = Console(file=io.StringIO(), force_jupyter=True, width=120, highlight=False)
    quiet = ProgressView(jupyter, n_train=600, quiet=True)
    quiet.started(job, 0)
    quiet.close()
    assert not tables and not lines

    view = ProgressView(jupyter, n_train=600)
    view.started(job, 0)
    view.batch(64)  # within 0.25 s of the last redraw: not drawn
    time.sleep(0.3)
    view.batch(128)
    view.epoch(job, EpochResult(1, 0.5, 0.8, 0.4, 0.9, 2.0))
    view.finished(job, 0.4, 0.9)
    view.close()
    assert [line.split(" - ")[0] for line in lines] == ["m seed 3: 2 epochs, batch 128, adam", "m seed 3 · Epoch 1/2",
                                                        "m seed 3: test loss 0.4000, test accuracy 0.9000"]
    assert tables[-1] == {"text/plain": ""}  # cleared when the run ends, as Live is on a terminal
    rows = []
    for table in tables[:-1]:
        text = Console(file=io.StringIO(), width=120, record=True)
        text.print(table)
        rows.append([[c.strip() for c in r.split("│")[1:-1]] for r in text.export_text().splitlines() if "│ m" in r])
    assert rows[0] == [] and rows[-1] == []  # before the trial started and after it ended
    assert [r[0][5] for r in rows[1:-1]] == ["0/600", "128/600", "0/600"]  # started, a batch, epoch 1
    assert rows[-2][0] == ["m", "3", "1", "waiting", "1/2", "0/600", "0.5000", "0.8000", "0.4000", "0.9000"]
