"""Hardening (issue 14): damaged or foreign checkpoints, failed trials, full disks, read-only study
directories, settings that change numbers mid-trial, SIGTERM, and workers outliving their parent.

Runs are real `python -m convstudy run` subprocesses on the tiny MNIST where the process matters
(signals, kills, mounts), and `main()` in this process where a fault is injected.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import sqlite3
import struct
import subprocess
import time
from pathlib import Path

import pytest
from conftest import convstudy_cmd, db_rows, epoch_metrics, kill_when, run_here, start_run, trial_results, write_tiny_study

from convstudy.cli import main
from convstudy.store import files as store_files
from convstudy.train.device import cpu_has_native_bf16

SEEDS = [0, 1]
EPOCHS = 2


@pytest.fixture(scope="session")
def study(tmp_path_factory) -> Path:
    return write_tiny_study(tmp_path_factory.mktemp("study") / "tiny.toml", epochs=EPOCHS, seeds=SEEDS)


@pytest.fixture(scope="session")
def baseline(study, tiny_mnist_session, tmp_path_factory) -> Path:
    """study.db of an uninterrupted subprocess run."""
    out = tmp_path_factory.mktemp("baseline") / "out"
    proc = start_run(study, out, tiny_mnist_session)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    return out / "study.db"


def assert_same_results(db: Path, baseline: Path) -> None:
    assert trial_results(db) == trial_results(baseline)
    assert epoch_metrics(db) == epoch_metrics(baseline)


def rows_of(db: Path, model: str, seed: int) -> int:
    if not db.exists():
        return 0
    try:
        return db_rows(db, "SELECT count(*) FROM epochs e JOIN trials t ON t.id = e.trial_id "
                           "WHERE t.model = ? AND t.seed = ?", (model, seed))[0][0]
    except sqlite3.Error:  # the run is creating the schema
        return 0


def ckpt_path(out: Path, model: str = "small-a", seed: int = 0) -> Path:
    return out / "trials" / model / f"seed-{seed}" / "checkpoint.safetensors"


def killed_after_first_epoch(study: Path, out: Path, tiny, *extra: str) -> None:
    """A run of `study` killed with -9 once small-a seed 0 has checkpointed epoch 1."""
    proc = start_run(study, out, tiny, *extra)
    kill_when(proc, lambda: rows_of(out / "study.db", "small-a", 0) >= 1 and ckpt_path(out).exists())


def rerun(study: Path, out: Path, tiny, *extra: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(convstudy_cmd("run", study, "--out", out, "--data-dir", tiny.dir, "--quiet", *extra),
                          env=env or tiny.env, capture_output=True, text=True, timeout=300)


def no_traceback(proc: subprocess.CompletedProcess) -> None:
    assert "Traceback" not in proc.stderr + proc.stdout, proc.stderr


def flip_a_weight_bit(path: Path) -> None:
    """Flip the lowest mantissa bit of the first float of the first conv weight: safetensors still loads it."""
    data = bytearray(path.read_bytes())
    (size,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + size])
    name = next(k for k, v in header.items() if k.endswith("weight") and v["dtype"] == "F32")
    start = 8 + size + header[name]["data_offsets"][0]
    data[start] ^= 0x01
    path.write_bytes(bytes(data))


def foreign_checkpoint(path: Path, out: Path, model: str, seed: int) -> None:
    """The checkpoint at `path` relabelled as trial (model, seed) of the same study, with made-up epoch rows:
    what a checkpoint copied from another trial looks like to the loader."""
    from convstudy.store import StudyStore, load_tensors

    store = StudyStore.open_existing(out)
    tensors, meta = load_tensors(path)
    meta = {k: v for k, v in meta.items() if k != store_files.DIGEST_KEY}
    meta["history"] = json.dumps([{"epoch": 1, "loss": 9.0, "accuracy": 0.1, "val_loss": 9.0,
                                   "val_accuracy": 0.1, "seconds": 1.0}])
    store_files.save_tensors(path, tensors, meta, owner=store.owner(model, seed))
    store.close()


DAMAGE = ["garbage", "truncated", "bit-flip", "other-seed", "other-model", "other-study-db"]


@pytest.fixture(scope="session")
def killed(study, tiny_mnist_session, tmp_path_factory) -> Path:
    """A study directory whose run was killed with -9 after small-a seed 0 checkpointed epoch 1 (the
    process is dead, so its files are at rest): each damage case gets a copy. Session-scoped, like `study`
    and `baseline`, so a worker that runs other files in between does not build them again."""
    out = tmp_path_factory.mktemp("killed") / "out"
    killed_after_first_epoch(study, out, tiny_mnist_session)
    return out


@pytest.mark.xdist_group("hardening_killed")  # one worker runs every case, so `killed` is built once
@pytest.mark.parametrize("damage", DAMAGE)
def test_a_damaged_or_foreign_checkpoint_is_set_aside_and_the_trial_trains_again(study, tiny_mnist, one_thread, killed,
                                                                                 baseline, tmp_path, damage, capsys):
    import shutil

    out = tmp_path / "out"
    shutil.copytree(killed, out)
    ckpt = ckpt_path(out)
    if damage == "garbage":
        ckpt.write_bytes(b"\x13\x37" * 500)
    elif damage == "truncated":
        ckpt.write_bytes(ckpt.read_bytes()[:300])
    elif damage == "bit-flip":
        flip_a_weight_bit(ckpt)
    elif damage == "other-seed":
        foreign_checkpoint(ckpt, out, "small-a", 1)
    elif damage == "other-model":
        foreign_checkpoint(ckpt, out, "small-b", 0)
    else:  # the directory's study.db made again: the old run's checkpoint is not this study.db's
        for db in out.glob("study.db*"):
            db.unlink()
    damaged = ckpt.read_bytes()
    capsys.readouterr()
    # The rerun in this process, on one thread as `killed` and `baseline` trained (an exception fails here)
    assert main(["run", str(study), "--out", str(out), "--data-dir", str(tiny_mnist.dir), "--quiet"]) == 0
    stderr = capsys.readouterr().err
    warnings = [line for line in stderr.splitlines() if line.startswith("convstudy: warning:")]
    assert len(warnings) == 1, stderr
    assert str(ckpt) in warnings[0] and "from scratch" in warnings[0]
    assert (ckpt.parent / "checkpoint.safetensors.damaged").read_bytes() == damaged  # kept, never used
    assert_same_results(out / "study.db", baseline)  # the other trial's metrics never reached this one


def test_weights_with_a_flipped_bit_are_refused_by_predict_and_export(study, baseline, tmp_path, capsys):
    import shutil

    out = tmp_path / "out"
    shutil.copytree(baseline.parent, out)
    flip_a_weight_bit(out / "trials" / "small-a" / "seed-0" / "weights.safetensors")
    image = tmp_path / "x.png"
    from PIL import Image

    Image.new("L", (28, 28)).save(image)
    for argv in (["predict", str(out), "--model", "small-a", "--seed", "0", str(image)],
                 ["export", str(out), "--model", "small-a", "--seed", "0", "--format", "safetensors",
                  "-o", str(tmp_path / "m.safetensors")]):
        capsys.readouterr()
        assert main(argv) == 2, argv  # in this process: an exception would fail here
        err = capsys.readouterr().err
        assert "digest" in err and "weights.safetensors" in err


# -- failed trials: retried on rerun, exit 1 ------------------------------------------------------------

def _fail_writes(monkeypatch, match: str, err: int) -> None:
    """Make atomic_write raise OSError(`err`) for paths containing `match`."""
    real = store_files.atomic_write

    def flaky(path, data):
        if match in str(path):
            raise OSError(err, os.strerror(err), str(path))
        return real(path, data)

    monkeypatch.setattr(store_files, "atomic_write", flaky)


@pytest.fixture
def inproc_baseline(tiny_mnist, tmp_path) -> tuple[Path, Path]:
    """(study file, study.db) of an uninterrupted run in this process (same thread count as the tests')."""
    study = write_tiny_study(tmp_path / "tiny.toml", epochs=EPOCHS, seeds=SEEDS)
    out = tmp_path / "base"
    assert main(["run", str(study), "--out", str(out), "--data-dir", str(tiny_mnist.dir), "--quiet"]) == 0
    return study, out / "study.db"


def test_a_failed_trial_makes_the_run_exit_1_and_a_rerun_retries_it(inproc_baseline, tiny_mnist, tmp_path, capsys):
    study, base = inproc_baseline
    out = tmp_path / "out"
    argv = ["run", str(study), "--out", str(out), "--data-dir", str(tiny_mnist.dir), "--quiet"]
    capsys.readouterr()
    with pytest.MonkeyPatch.context() as mp:
        _fail_writes(mp, "small-b/seed-0/checkpoint", errno.EIO)
        assert main(argv) == 1
    err = capsys.readouterr().err
    assert "1 trial failed: small-b seed 0" in err and "rerun the same command" in err
    states = {k: v[0] for k, v in trial_results(out / "study.db").items()}
    assert states == {("small-a", 0): "complete", ("small-a", 1): "complete", ("small-b", 0): "failed",
                      ("small-b", 1): "complete"}
    assert main(argv) == 0
    said = capsys.readouterr().out
    assert "retrying small-b seed 0" in said and "Input/output error" in said  # the stored error, first
    assert_same_results(out / "study.db", base)
    assert db_rows(out / "study.db", "SELECT attempts FROM trials WHERE model='small-b' AND seed=0") == [(2,)]
    assert "seed 0: 2 attempts" in (out / "report.md").read_text()  # the report shows the retry
    assert 'title="seed 0: 2 attempts"' in (out / "report.html").read_text()


def test_a_full_disk_stops_the_run_in_one_line_and_a_rerun_retries(inproc_baseline, tiny_mnist, tmp_path, capsys):
    study, base = inproc_baseline
    out = tmp_path / "out"
    argv = ["run", str(study), "--out", str(out), "--data-dir", str(tiny_mnist.dir), "--quiet"]
    capsys.readouterr()
    with pytest.MonkeyPatch.context() as mp:
        _fail_writes(mp, "small-a/seed-1/checkpoint", errno.ENOSPC)
        assert main(argv) == 1
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and err[0].startswith("convstudy: error:"), err
    assert "no space left" in err[0] and "small-a seed 1" in err[0] and "rerun the same command" in err[0]
    assert main(argv) == 0
    assert_same_results(out / "study.db", base)


def _mount_tmpfs(where: Path, size: str) -> bool:
    where.mkdir(parents=True, exist_ok=True)
    return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
                          capture_output=True).returncode == 0


def test_a_disk_that_fills_mid_run_then_frees_resumes_to_the_same_numbers(study, tiny_mnist,
                                                                          one_thread, baseline, tmp_path):
    disk = tmp_path / "disk"
    if not _mount_tmpfs(disk, "700k"):
        pytest.skip("cannot mount a tmpfs here (the injected-ENOSPC test covers this)")
    try:
        out = disk / "out"
        proc = rerun(study, out, tiny_mnist)
        assert proc.returncode == 1, proc.stderr
        no_traceback(proc)
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and "no space left" in lines[0], proc.stderr
        subprocess.run(["mount", "-o", "remount,size=64m", str(disk)], check=True)
        run_here(study, out, tiny_mnist)  # the resume, in this process
        assert_same_results(out / "study.db", baseline)
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)


# -- read-only study directories ----------------------------------------------------------------------

def snapshot(directory: Path) -> dict[str, tuple[bytes, int]]:
    return {str(p.relative_to(directory)): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(directory.rglob("*")) if p.is_file()}


def read_commands(out: Path, tmp_path: Path) -> list[list[str]]:
    from PIL import Image

    image = tmp_path / "x.png"
    picture = Image.new("L", (28, 28))
    picture.paste(255, (8, 8, 20, 20))
    picture.save(image)
    return [["report", str(out), "--format", "json"],
            ["report", str(out), "--format", "html", "-o", str(tmp_path / "r.html")],
            ["predict", str(out), "--model", "small-a", str(image)],
            ["compare", str(out), str(out)],
            ["export", str(out), "--model", "small-a", "--format", "safetensors", "-o", str(tmp_path / "m.st")]]


def test_read_commands_never_write_to_the_study_directory(baseline, tiny_mnist, tmp_path, capsys):
    import shutil

    out = tmp_path / "out"
    shutil.copytree(baseline.parent, out)
    before = snapshot(out)
    for argv in read_commands(out, tmp_path):  # in this process: the commands' code, without 5 interpreter starts
        assert main(argv) == 0, (argv, capsys.readouterr().err)
    assert snapshot(out) == before


def test_read_commands_work_on_a_read_only_mount(baseline, tiny_mnist, tmp_path, capsys):
    import shutil

    ro = tmp_path / "ro"
    if not _mount_tmpfs(ro, "64m"):
        pytest.skip("cannot mount a tmpfs here")
    try:
        shutil.copytree(baseline.parent, ro / "out")
        subprocess.run(["mount", "-o", "remount,ro", str(ro)], check=True)
        for argv in read_commands(ro / "out", tmp_path):
            assert main(argv) == 0, (argv, capsys.readouterr().err)  # an exception would fail the test here
    finally:
        subprocess.run(["umount", "-l", str(ro)], capture_output=True)


def test_an_empty_study_db_is_refused_and_left_empty(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "study.db").write_bytes(b"")
    assert main(["report", str(out), "--format", "json"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "study.db" in err[0]
    assert sorted(p.name for p in out.iterdir()) == ["study.db"] and (out / "study.db").stat().st_size == 0


@pytest.mark.parametrize("where", ["below-a-file", "proc"])
def test_an_unusable_out_is_one_line(where, study, tiny_mnist_session, tmp_path):
    if where == "below-a-file":
        (tmp_path / "file").write_text("x")
        out = tmp_path / "file" / "out"
    else:
        out = Path("/proc/convstudy-out")
    proc = rerun(study, out, tiny_mnist_session)
    assert proc.returncode == 2, proc.stderr
    no_traceback(proc)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "--out" in lines[0] and str(out) in lines[0]


def test_out_on_a_read_only_mount_is_one_line(study, tiny_mnist_session, tmp_path):
    ro = tmp_path / "ro"
    if not _mount_tmpfs(ro, "1m"):
        pytest.skip("cannot mount a tmpfs here")
    try:
        subprocess.run(["mount", "-o", "remount,ro", str(ro)], check=True)
        proc = rerun(study, ro / "out", tiny_mnist_session)
        assert proc.returncode == 2, proc.stderr
        no_traceback(proc)
        assert "--out" in proc.stderr and "Read-only" in proc.stderr
    finally:
        subprocess.run(["umount", "-l", str(ro)], capture_output=True)


# -- settings that change numbers: recorded per trial, never mixed within one -------------------------

def test_resuming_with_another_precision_or_thread_count_is_refused(study, tiny_mnist_session, tmp_path):
    out = tmp_path / "out"
    killed_after_first_epoch(study, out, tiny_mnist_session, "--precision", "fp32")
    before = snapshot(out / "trials"), epoch_metrics(out / "study.db"), trial_results(out / "study.db")
    proc = rerun(study, out, tiny_mnist_session, "--precision", "bf16")
    assert proc.returncode == 2, proc.stderr
    no_traceback(proc)
    assert proc.stderr.count("\n") == 1 and "--precision" in proc.stderr and "fp32" in proc.stderr
    env = {**tiny_mnist_session.env, "OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2"}
    proc = rerun(study, out, tiny_mnist_session, "--precision", "fp32", env=env)
    assert proc.returncode == 2, proc.stderr
    assert "--workers" in proc.stderr and "threads" in proc.stderr
    assert (snapshot(out / "trials"), epoch_metrics(out / "study.db"), trial_results(out / "study.db")) == before
    recorded = db_rows(out / "study.db", "SELECT numerics FROM trials WHERE model='small-a' AND seed=0")[0][0]
    dropout = "bernoulli" if cpu_has_native_bf16() else "uniform"  # the plan's choice on this kind of CPU
    assert json.loads(recorded) == {"device": "cpu", "precision": "fp32", "threads": 1, "channels_last": True,
                                    "conv_dft": [], "dropout": dropout}


def test_a_study_mixing_precisions_across_trials_is_shown_as_mixed(study, tiny_mnist, one_thread, tmp_path):
    out = tmp_path / "out"
    run = ["run", str(study), "--out", str(out), "--data-dir", str(tiny_mnist.dir), "--quiet"]  # in this process
    assert main([*run, "--seeds", "1", "--precision", "fp32"]) == 0
    assert main([*run, "--precision", "bf16"]) == 0  # new trials may differ; none mid-way
    report = json.loads((out / "report.json").read_text())
    assert report["study"]["mixed"] == ["precision"]
    assert set(report["study"]["numerics"]["precision"]) == {"fp32", "bf16"}
    assert "Mixed precision: bf16 (2: small-a seed 1, small-b seed 1); fp32 (2: small-a seed 0, small-b seed 0)" \
        in (out / "report.md").read_text()
    assert "mixed: bf16, fp32" in (out / "report.html").read_text()


# -- SIGTERM like Ctrl-C; workers die with their parent ------------------------------------------------

def test_sigterm_finishes_the_epoch_checkpoints_and_the_rerun_equals_an_uninterrupted_run(
        study, tiny_mnist, one_thread, baseline, tmp_path):
    out = tmp_path / "out"
    proc = start_run(study, out, tiny_mnist)
    deadline = time.monotonic() + 120
    while rows_of(out / "study.db", "small-a", 0) < 1 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr and "Resume with the same command" in stdout
    assert db_rows(out / "study.db", "SELECT count(*) FROM trials WHERE state='running'") == [(0,)]
    run_here(study, out, tiny_mnist)  # the resume, in this process
    assert_same_results(out / "study.db", baseline)


def _children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def _descendants(pid: int) -> list[int]:
    """Children, grandchildren, ...: workers are forked by multiprocessing's fork server, a child of the run."""
    found, todo = [], [pid]
    while todo:
        kids = _children(todo.pop())
        found += kids
        todo += kids
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_worker_processes_stop_when_their_parent_is_killed(tiny_mnist_session, tmp_path):
    study = write_tiny_study(tmp_path / "tiny.toml", epochs=1000, seeds=[0, 1, 2])  # minutes of work left
    out = tmp_path / "out"
    proc = start_run(study, out, tiny_mnist_session, "--workers", "2")
    deadline = time.monotonic() + 120
    workers: list[int] = []
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            running = db_rows(out / "study.db", "SELECT count(*) FROM trials WHERE state='running'")[0][0]
        except sqlite3.Error:  # not created yet
            running = 0
        workers = [c for c in _descendants(proc.pid) if "convstudy" in Path(f"/proc/{c}/cmdline").read_text()
                   or "multiprocessing" in Path(f"/proc/{c}/cmdline").read_bytes().decode(errors="replace")]
        if running >= 2 and workers:
            break
        time.sleep(0.05)
    assert workers, "no worker process seen"
    proc.send_signal(signal.SIGKILL)
    proc.wait()  # not communicate(): an orphaned worker would hold the output pipes open
    proc.stdout.close()
    proc.stderr.close()
    deadline = time.monotonic() + 30  # an epoch of the tiny study takes well under a second
    while any(_alive(w) for w in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    alive = [w for w in workers if _alive(w)]
    for w in alive:
        os.kill(w, signal.SIGKILL)
    assert not alive, "a worker kept training after its parent was killed"
