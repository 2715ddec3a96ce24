"""Store stage: the study directory refuses what it must (other specs, corrupt files) without changing anything."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest
import torch

from convstudy.cli import main
from convstudy.errors import StoreError
from convstudy.spec import load_study_file
from convstudy.store import DamagedFile, StudyDB, StudyStore, load_tensors, save_tensors
from convstudy.store.files import DIGEST_KEY


def snapshot(directory: Path) -> dict[str, tuple[bytes, int]]:
    """Every file under `directory` with its bytes and mtime (ns)."""
    return {str(p.relative_to(directory)): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(directory.rglob("*")) if p.is_file()}


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("convstudy: error: ")
    return lines[0]


@pytest.fixture
def prepared(tiny_mnist, tiny_study_file, tmp_path):
    """A study directory with trials created (one 'running' under a dead owner) and no training done."""
    study = load_study_file(tiny_study_file(epochs=2, seeds=1))
    out = tmp_path / "out"
    store = StudyStore.create_or_open(out, study)
    store.db.ensure_trials([(m.name, 0, i) for i, m in enumerate(study.models)])
    rec = store.db.claim("nohost:1", {("small-a", 0)})
    assert rec is not None and rec.state == "running"
    store.close()
    time.sleep(0.01)  # mtimes taken after this differ from any rewrite
    return out, tiny_study_file, tiny_mnist


def test_reopening_with_the_same_spec_keeps_the_directory(prepared):
    out, _, _ = prepared
    study = StudyStore.open_existing(out).study
    before = snapshot(out)
    StudyStore.create_or_open(out, study).close()
    assert snapshot(out) == before


def test_different_spec_is_refused_in_one_line_and_nothing_changes(prepared, capsys):
    out, study_file, tiny = prepared
    before = snapshot(out)
    other = study_file(epochs=3, seeds=1, name="other.toml")
    rc = main(["run", str(other), "--out", str(out), "--data-dir", str(tiny.dir), "--quiet"])
    assert rc == 2
    line = one_error_line(capsys)
    assert "different study" in line and str(out) in line
    assert snapshot(out) == before


def test_more_seeds_is_the_same_study(prepared):
    out, study_file, _ = prepared
    StudyStore.create_or_open(out, load_study_file(study_file(epochs=2, seeds=3, name="more.toml"))).close()


@pytest.mark.parametrize("damage", ["garbage", "truncated", "bad-page", "empty-header"])
def test_corrupt_study_db_is_one_line_naming_it_and_nothing_changes(prepared, capsys, damage):
    out, study_file, tiny = prepared
    db = out / "study.db"
    raw = db.read_bytes()
    if damage == "garbage":
        db.write_bytes(bytes(range(256)) * 64)
    elif damage == "truncated":
        db.write_bytes(raw[:100])
    elif damage == "bad-page":  # a valid header, everything after it garbage
        db.write_bytes(raw[:100] + b"\xa5" * (len(raw) - 100))
    else:
        db.write_bytes(b"SQLite format 3\x00" + b"\x00" * 84)
    time.sleep(0.01)
    before = snapshot(out)
    for argv in (["run", str(study_file(epochs=2, seeds=1)), "--out", str(out), "--data-dir", str(tiny.dir)],
                 ["report", str(out), "--format", "json"]):
        rc = main(argv)
        assert rc == 2, argv
        line = one_error_line(capsys)
        assert str(db) in line
        assert snapshot(out) == before


def test_tensor_files_round_trip_atomically_without_pickle(tmp_path):
    path = tmp_path / "x" / "t.safetensors"
    tensors = {"a": torch.randn(3, 4), "b": torch.arange(5)}
    digest = save_tensors(path, tensors, {"epoch": "3"}, owner="trial-x")
    got, meta = load_tensors(path, owner="trial-x", digest=digest)
    assert meta == {"epoch": "3", DIGEST_KEY: digest}
    assert all(torch.equal(got[k], tensors[k]) for k in tensors)
    assert [p.name for p in path.parent.iterdir()] == ["t.safetensors"]  # no temp file left behind
    path.write_bytes(b"\x80\x04\x95" + b"pickle" * 10)  # a pickle stream is just a corrupt file here
    with pytest.raises(StoreError, match="corrupt tensor file"):
        load_tensors(path)


def test_tensor_files_are_checked_against_digest_and_owner(tmp_path):
    path = tmp_path / "t.safetensors"
    digest = save_tensors(path, {"w": torch.ones(8)}, {"epoch": "1"}, owner="trial-x")
    with pytest.raises(DamagedFile, match="another trial"):
        load_tensors(path, owner="trial-y")
    with pytest.raises(DamagedFile, match="not the file this study recorded"):
        load_tensors(path, owner="trial-x", digest="0" * 64)
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x40  # one bit of the last float: safetensors alone would load it
    path.write_bytes(bytes(data))
    with pytest.raises(DamagedFile, match="digest mismatch"):
        load_tensors(path)
    assert digest != save_tensors(path, {"w": torch.ones(8)}, {"epoch": "1"}, owner="trial-y")  # identity counts


def test_epoch_rows_are_unique_per_trial_and_epoch(tmp_path, tiny_mnist, tiny_study_file):
    study = load_study_file(tiny_study_file())
    store = StudyStore.create_or_open(tmp_path / "out", study)
    store.db.ensure_trials([("small-a", 0, 0)])
    store.db.ensure_trials([("small-a", 0, 0)])
    (rec,) = store.db.trials()
    row = {"loss": 1.0, "accuracy": 0.5, "val_loss": 1.1, "val_accuracy": 0.4, "seconds": 2.0}
    store.db.record_epoch(rec.id, 1, row)
    store.db.record_epoch(rec.id, 1, {**row, "seconds": 3.0})
    store.db.record_epoch(rec.id, 2, row)
    assert [(e.epoch, e.seconds) for e in store.db.epochs(rec.id)] == [(1, 3.0), (2, 2.0)]
    assert store.db.trial(rec.id).epochs_done == 2
    assert store.db.trial(rec.id).train_seconds == 5.0
    with pytest.raises(sqlite3.IntegrityError):
        store.db.conn.execute("INSERT INTO epochs(trial_id, epoch) VALUES (?, 1)", (rec.id,))


def test_claims_take_the_models_named_first_before_the_studys_order(tmp_path, tiny_study_file):
    study = load_study_file(tiny_study_file())
    store = StudyStore.create_or_open(tmp_path / "out", study)
    store.db.ensure_trials([("small-a", 0, 0), ("small-a", 1, 0), ("small-b", 0, 1), ("small-b", 1, 1)])
    wanted = {("small-a", 0), ("small-a", 1), ("small-b", 0), ("small-b", 1)}
    taken = [store.db.claim("me:1", wanted, first=("small-b",)) for _ in range(4)]
    assert [(t.model, t.seed) for t in taken] == [("small-b", 0), ("small-b", 1), ("small-a", 0), ("small-a", 1)]
    assert store.db.claim("me:1", wanted, first=("small-b",)) is None


def test_claims_skip_live_owners_and_take_dead_ones(tmp_path, tiny_mnist, tiny_study_file):
    import os
    import socket

    study = load_study_file(tiny_study_file())
    store = StudyStore.create_or_open(tmp_path / "out", study)
    store.db.ensure_trials([("small-a", 0, 0), ("small-a", 1, 0)])
    wanted = {("small-a", 0), ("small-a", 1)}
    me = f"{socket.gethostname()}:{os.getpid()}"
    first = store.db.claim(me, wanted)
    second = store.db.claim(me, wanted)
    assert {first.seed, second.seed} == {0, 1}
    assert store.db.claim("other:1", wanted) is None  # both held by a live owner
    dead = _dead_pid()
    store.db.conn.execute("UPDATE trials SET owner=? WHERE id=?", (f"{socket.gethostname()}:{dead}", first.id))
    again = store.db.claim("other:1", wanted)
    assert again.id == first.id and again.attempts == 2
    kinds = [e["kind"] for e in store.db.events(first.id)]
    assert kinds == ["start", "restart"]
    # another host's claim is alive while its heartbeat is fresh, and dead once it is stale
    store.db.conn.execute("UPDATE trials SET owner='elsewhere:1', heartbeat=? WHERE id=?", (time.time(), second.id))
    assert store.db.claim("other:1", wanted) is None
    store.db.conn.execute("UPDATE trials SET heartbeat=0 WHERE id=?", (second.id,))
    assert store.db.claim("other:1", wanted).id == second.id


def _dead_pid() -> int:
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_db_schema_states_are_explicit(tmp_path):
    db = StudyDB(tmp_path / "study.db")
    db.conn.execute("INSERT INTO trials(model, seed, position, state) VALUES ('m', 0, 0, 'pending')")
    with pytest.raises(sqlite3.IntegrityError):
        db.conn.execute("INSERT INTO trials(model, seed, position, state) VALUES ('m', 1, 0, 'bogus')")
