"""The study database: stdlib sqlite3 in WAL mode, one transaction per write, explicit trial states. Epoch rows are
upserts; trials are claimed inside `BEGIN IMMEDIATE`, and one whose owner died (its pid gone, or no heartbeat for
STALE_S) is claimable again."""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import time
from contextlib import contextmanager
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import quote

from convstudy.errors import StoreError
from convstudy.train.state import EpochResult

SCHEMA_VERSION = 2
STALE_S = 90.0
class State(str, Enum):
    """A trial's state, as study.db's CHECK constraint lists them. `pruned` (stopped by a search's pruner) is
    finished; only a search study, whose database is new, has it, so an older CHECK never needs it."""

    PENDING = "pending"
    RUNNING = "running"
    COMPLETE = "complete"
    FAILED = "failed"
    DIVERGED = "diverged"
    PRUNED = "pruned"

    __str__ = str.__str__
    __format__ = str.__format__


STATES = tuple(s.value for s in State)
FINISHED = (State.COMPLETE, State.DIVERGED, State.PRUNED)  # a rerun leaves these as they are
_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT, started_at REAL NOT NULL, provenance TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS trials (
    id INTEGER PRIMARY KEY, model TEXT NOT NULL, seed INTEGER NOT NULL, position INTEGER NOT NULL,
    state TEXT NOT NULL CHECK (state IN ({", ".join(f"'{v}'" for v in STATES)})),
    owner TEXT, heartbeat REAL, attempts INTEGER NOT NULL DEFAULT 0, epochs_done INTEGER NOT NULL DEFAULT 0,
    started_at REAL, finished_at REAL, train_seconds REAL NOT NULL DEFAULT 0,
    test_loss REAL, test_accuracy REAL, diverged_epoch INTEGER, error TEXT, device TEXT, run_id INTEGER,
    numerics TEXT, weights_digest TEXT, predictions_digest TEXT,
    UNIQUE (model, seed));
CREATE TABLE IF NOT EXISTS epochs (
    trial_id INTEGER NOT NULL REFERENCES trials(id), epoch INTEGER NOT NULL,
    loss REAL, accuracy REAL, val_loss REAL, val_accuracy REAL, seconds REAL, checkpoint_digest TEXT,
    PRIMARY KEY (trial_id, epoch));
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT, trial_id INTEGER, at REAL NOT NULL, kind TEXT NOT NULL, detail TEXT);
"""
# Columns added since schema 1: created when an older database is opened for writing, None when read.
_ADDED = {"trials": ("numerics TEXT", "weights_digest TEXT", "predictions_digest TEXT"),
          "epochs": ("checkpoint_digest TEXT",)}


@dataclass(frozen=True)
class TrialRecord:
    """A frozen snapshot of one trial's row."""

    id: int
    model: str
    seed: int
    position: int
    state: State
    owner: str | None
    heartbeat: float | None
    attempts: int
    epochs_done: int
    started_at: float | None
    finished_at: float | None
    train_seconds: float
    test_loss: float | None
    test_accuracy: float | None
    diverged_epoch: int | None
    error: str | None
    device: str | None
    run_id: int | None
    numerics: str | None = None  # JSON: what the trial trains with that changes its numbers
    weights_digest: str | None = None
    predictions_digest: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "state", State(self.state))

    @property
    def settings(self) -> dict[str, Any] | None:
        """The recorded device, precision, threads, memory format and conv algorithms, or None."""
        return json.loads(self.numerics) if self.numerics else None


def this_owner() -> str:
    """`host:pid`, the identity a process claims trials under."""
    return f"{socket.gethostname()}:{os.getpid()}"


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists on this host (one we may not signal counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


def owner_alive(owner: str | None, heartbeat: float | None, now: float) -> bool:
    """Whether a claim still has a live owner; a dead pid on this host is dead at once."""
    if not owner:
        return False
    host, _, pid = owner.rpartition(":")
    if host == socket.gethostname() and pid.isdigit() and not pid_alive(int(pid)):
        return False
    return heartbeat is not None and now - heartbeat < STALE_S


def _connect(path: Path, readonly: bool) -> sqlite3.Connection:
    """A connection in autocommit mode; a read-only one never creates or changes a file: without a -wal file no
    writer is active and `immutable=1` reads the main file without creating the -shm/-wal files `mode=ro` would
    leave behind; with one, `mode=ro` reads a running writer's commits through them."""
    opts = dict(timeout=60, isolation_level=None, check_same_thread=False)
    if not readonly:
        return sqlite3.connect(path, **opts)
    uri = f"file:{quote(str(path.resolve()))}?mode=ro"
    if not path.with_name(path.name + "-wal").exists():
        uri += "&immutable=1"
    return sqlite3.connect(uri, uri=True, **opts)


# Databases this process has open, with a count. Opening and closing any other descriptor on a
# database file drops every POSIX lock the process holds on it (SQLite's documented pitfall): a later
# close then believes it is the last connection and deletes the WAL from under a live writer.
_OPEN: dict[Path, int] = {}


class StudyDB:
    """Narrow access to study.db: meta, runs, trials, epochs, events; `readonly=True` (report, predict, compare,
    export) never writes a byte, not even a schema or a WAL file."""

    def __init__(self, path: Path, readonly: bool = False) -> None:
        self.path = Path(path)
        self.readonly = readonly
        self._key = self.path.resolve()
        # Refuse a file that is not SQLite before sqlite3 touches it (it would add -wal/-shm files).
        if not _OPEN.get(self._key) and self.path.exists() and self.path.stat().st_size > 0:
            with open(self.path, "rb") as fh:
                if fh.read(16) != b"SQLite format 3\x00":
                    raise StoreError(f"{self.path}: not a convstudy database (corrupt or foreign file); nothing was changed")
        # sqlite adds -wal/-shm files beside a database it opens; a refused one must leave none behind.
        sidecars = [self.path.with_name(self.path.name + s) for s in ("-wal", "-shm")]
        fresh = [p for p in sidecars if not p.exists()]
        try:
            self.conn = _connect(self.path, readonly)
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: cannot open database ({' '.join(str(exc).split())[:160]})") from None
        try:
            self.conn.row_factory = sqlite3.Row
            if not readonly:
                self.conn.execute("PRAGMA journal_mode=WAL")
                self.conn.execute("PRAGMA synchronous=NORMAL")
            self.conn.execute("PRAGMA foreign_keys=ON")
            problem = self.conn.execute("PRAGMA quick_check").fetchone()[0]
            if problem != "ok":
                raise StoreError(f"{self.path}: damaged database ({' '.join(str(problem).split())[:160]}); "
                                 "nothing was changed")
            if readonly:
                self._check_readable()
            else:
                self._create_or_migrate()
        except (sqlite3.DatabaseError, StoreError) as exc:
            self.conn.close()
            if _OPEN.get(self._key):  # sidecars belong to the connection already open here
                fresh = []
            for extra in fresh:
                extra.unlink(missing_ok=True)
            if isinstance(exc, StoreError):
                raise
            raise StoreError(f"{self.path}: unreadable database ({exc}); nothing was changed") from None

        _OPEN[self._key] = _OPEN.get(self._key, 0) + 1

    def _create_or_migrate(self) -> None:
        with self.transaction():
            for stmt in _SCHEMA.strip().split(";"):
                if stmt.strip():
                    self.conn.execute(stmt)
            version = self.get_meta("schema_version")
            if version == "1":
                for table, columns in _ADDED.items():
                    have = {r[1] for r in self.conn.execute(f"PRAGMA table_info({table})")}
                    for column in columns:
                        if column.split()[0] not in have:
                            self.conn.execute(f"ALTER TABLE {table} ADD COLUMN {column}")
                self.set_meta("schema_version", str(SCHEMA_VERSION))
            elif version is None:
                self.set_meta("schema_version", str(SCHEMA_VERSION))
            elif version != str(SCHEMA_VERSION):
                raise StoreError(f"{self.path}: schema version {version}, this convstudy reads {SCHEMA_VERSION}")

    def _check_readable(self) -> None:
        tables = {r[0] for r in self.conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if not {"meta", "trials", "epochs", "runs", "events"} <= tables:
            raise StoreError(f"{self.path}: not a convstudy database (no study tables); nothing was changed")
        version = self.get_meta("schema_version")
        if version not in ("1", str(SCHEMA_VERSION)):
            raise StoreError(f"{self.path}: schema version {version}, this convstudy reads {SCHEMA_VERSION}")

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None  # type: ignore[assignment]
            _OPEN[self._key] -= 1

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """`with db.transaction():` — BEGIN IMMEDIATE ... COMMIT, rolled back on error; nested, the outer one's."""
        if self.conn.in_transaction:
            yield self.conn
            return
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield self.conn
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    # meta ---------------------------------------------------------------------------------------
    def get_meta(self, key: str) -> str | None:
        row = self.conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else row[0]

    def set_meta(self, key: str, value: str) -> None:
        self.conn.execute("INSERT INTO meta(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                          (key, value))

    # runs and events ----------------------------------------------------------------------------
    def add_run(self, provenance: dict[str, Any]) -> int:
        with self.transaction():
            cur = self.conn.execute("INSERT INTO runs(started_at, provenance) VALUES (?, ?)",
                                    (time.time(), json.dumps(provenance)))
        return int(cur.lastrowid)

    def runs(self) -> list[dict[str, Any]]:
        rows = self.conn.execute("SELECT id, started_at, provenance FROM runs ORDER BY id").fetchall()
        return [{"id": r[0], "started_at": r[1], **json.loads(r[2])} for r in rows]

    def events(self, trial_id: int | None = None) -> list[dict[str, Any]]:
        sql, args = "SELECT trial_id, at, kind, detail FROM events", ()
        if trial_id is not None:
            sql, args = sql + " WHERE trial_id = ?", (trial_id,)
        return [dict(r) for r in self.conn.execute(sql + " ORDER BY id", args)]

    def add_event(self, trial_id: int | None, kind: str, detail: str = "") -> None:
        """Record something that happened to a trial (where an attempt runs, say), in its own transaction."""
        with self.transaction():
            self._event(trial_id, kind, detail)

    def _event(self, trial_id: int | None, kind: str, detail: str = "") -> None:
        self.conn.execute("INSERT INTO events(trial_id, at, kind, detail) VALUES (?, ?, ?, ?)",
                          (trial_id, time.time(), kind, detail))

    # trials -------------------------------------------------------------------------------------
    def ensure_trials(self, pairs: list[tuple[str, int, int]]) -> None:
        """Create (model, seed, position) trials that do not exist yet, as pending."""
        with self.transaction():
            self.conn.executemany(
                "INSERT OR IGNORE INTO trials(model, seed, position, state) VALUES (?, ?, ?, 'pending')", pairs)

    def trials(self) -> list[TrialRecord]:
        rows = self.conn.execute("SELECT * FROM trials ORDER BY position, seed").fetchall()
        return [TrialRecord(**dict(r)) for r in rows]

    def trial(self, trial_id: int) -> TrialRecord:
        return TrialRecord(**dict(self.conn.execute("SELECT * FROM trials WHERE id = ?", (trial_id,)).fetchone()))

    def find(self, model: str, seed: int) -> TrialRecord | None:
        """The trial of (model, seed), or None (one indexed lookup: UNIQUE (model, seed))."""
        row = self.conn.execute("SELECT * FROM trials WHERE model = ? AND seed = ?", (model, seed)).fetchone()
        return None if row is None else TrialRecord(**dict(row))

    def claim(self, owner: str, wanted: set[tuple[str, int]], run_id: int | None = None,
              numerics: dict[str, dict[str, Any]] | None = None, first: tuple[str, ...] = ()) -> TrialRecord | None:
        """Atomically take the first wanted trial that is pending, orphaned, or failed before run `run_id` (a
        failure is retried once per run): the models in `first` in that order, then the study's order.
        `numerics` (model -> settings) is recorded until a trial's first epoch."""
        now = time.time()
        row = self.conn.execute("SELECT started_at FROM runs WHERE id=?", (run_id,)).fetchone() if run_id else None
        run_started = row[0] if row else None
        with self.transaction():
            rank = {m: i for i, m in enumerate(first)}
            for rec in sorted(self.trials(), key=lambda r: rank.get(r.model, len(rank))):  # stable: seeds in order
                if (rec.model, rec.seed) not in wanted:
                    continue
                orphaned = rec.state == "running" and not owner_alive(rec.owner, rec.heartbeat, now)
                retry = (rec.state == "failed" and run_started is not None
                         and (rec.finished_at or 0.0) < run_started)
                if rec.state == "pending" or orphaned or retry:
                    record = rec.numerics
                    if numerics is not None and (record is None or rec.epochs_done == 0):
                        record = json.dumps(numerics[rec.model], sort_keys=True)
                    self.conn.execute(
                        "UPDATE trials SET state='running', owner=?, heartbeat=?, attempts=attempts+1, "
                        "started_at=COALESCE(started_at, ?), run_id=?, error=NULL, finished_at=NULL, "
                        "numerics=? WHERE id=?", (owner, now, now, run_id, record, rec.id))
                    detail = f"previous owner {rec.owner} gone" if orphaned else (
                        f"retrying after: {rec.error}" if rec.state == "failed" else "")
                    self._event(rec.id, "restart" if rec.attempts else "start", detail)
                    return self.trial(rec.id)
        return None

    def retry(self, trial_id: int, owner: str, reason: str) -> None:
        """Count another attempt of a trial `owner` still holds (its worker was lost) and record why."""
        with self.transaction():
            self.conn.execute("UPDATE trials SET attempts=attempts+1, heartbeat=? WHERE id=? AND owner=?",
                              (time.time(), trial_id, owner))
            self._event(trial_id, "restart", reason)

    def heartbeat(self, trial_ids: list[int], owner: str) -> None:
        with self.transaction():
            self.conn.executemany("UPDATE trials SET heartbeat=? WHERE id=? AND owner=?",
                                  [(time.time(), t, owner) for t in trial_ids])

    def record_epoch(self, trial_id: int, epoch: int, metrics: dict[str, float],
                     checkpoint_digest: str | None = None) -> None:
        """Upsert one epoch's metrics (and its checkpoint's digest) and advance the trial, in one transaction."""
        with self.transaction():
            self.conn.execute(
                "INSERT INTO epochs(trial_id, epoch, loss, accuracy, val_loss, val_accuracy, seconds, checkpoint_digest) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(trial_id, epoch) DO UPDATE SET loss=excluded.loss, "
                "accuracy=excluded.accuracy, val_loss=excluded.val_loss, val_accuracy=excluded.val_accuracy, "
                "seconds=excluded.seconds, checkpoint_digest=COALESCE(excluded.checkpoint_digest, checkpoint_digest)",
                (trial_id, epoch, *(metrics[k] for k in ("loss", "accuracy", "val_loss", "val_accuracy", "seconds")),
                 checkpoint_digest))
            self.conn.execute(
                "UPDATE trials SET epochs_done=MAX(epochs_done, ?), heartbeat=?, "
                "train_seconds=(SELECT COALESCE(SUM(seconds), 0) FROM epochs WHERE trial_id=?) WHERE id=?",
                (epoch, time.time(), trial_id, trial_id))

    def rewind(self, trial_id: int, epoch: int, reason: str = "") -> None:
        """The trial goes on from `epoch` (0: from scratch): rows of later epochs, which it will train
        again, are dropped; a reason or a dropped row is recorded as a `rewind` event."""
        with self.transaction():
            dropped = self.conn.execute("DELETE FROM epochs WHERE trial_id=? AND epoch>?", (trial_id, epoch)).rowcount
            self.conn.execute(
                "UPDATE trials SET epochs_done=?, train_seconds=(SELECT COALESCE(SUM(seconds), 0) FROM epochs "
                "WHERE trial_id=?) WHERE id=?", (epoch, trial_id, trial_id))
            if reason or dropped:
                self._event(trial_id, "rewind", reason or f"resuming after epoch {epoch}; {dropped} later rows dropped")

    def checkpoint_digests(self, trial_id: int) -> dict[int, str]:
        """epoch -> digest of the checkpoint written after it, as recorded."""
        rows = self.conn.execute("SELECT epoch, checkpoint_digest FROM epochs WHERE trial_id=? AND "
                                 "checkpoint_digest IS NOT NULL", (trial_id,)).fetchall()
        return {int(e): d for e, d in rows}

    def epochs(self, trial_id: int) -> list[EpochResult]:
        """The trial's epochs as the trial recorded them (their checkpoints' digests: `checkpoint_digests`)."""
        rows = self.conn.execute("SELECT epoch, loss, accuracy, val_loss, val_accuracy, seconds FROM epochs "
                                 "WHERE trial_id=? ORDER BY epoch", (trial_id,)).fetchall()
        return [EpochResult(*r) for r in rows]

    def finish(self, trial_id: int, test_loss: float, test_accuracy: float, device: str,
               weights_digest: str | None = None, predictions_digest: str | None = None) -> None:
        """Mark a trial complete with its test results and the digests of its weights and predictions."""
        with self.transaction():
            self.conn.execute("UPDATE trials SET state='complete', owner=NULL, finished_at=?, test_loss=?, "
                              "test_accuracy=?, device=?, weights_digest=?, predictions_digest=? WHERE id=?",
                              (time.time(), test_loss, test_accuracy, device, weights_digest,
                               predictions_digest, trial_id))
            self._event(trial_id, "complete")

    def mark(self, trial_id: int, state: State, error: str | None = None, diverged_epoch: int | None = None) -> None:
        """Move a trial to `failed`, `diverged`, `pruned` (after its `epochs_done` epochs) or back to
        `pending` (released by an interrupted owner)."""
        state = State(state)
        if state not in (State.FAILED, State.DIVERGED, State.PRUNED, State.PENDING):
            raise ValueError(f"mark: a trial is moved to {state.value} by claim or finish, not mark")
        with self.transaction():
            self.conn.execute("UPDATE trials SET state=?, owner=NULL, error=?, diverged_epoch=?, "
                              "finished_at=CASE WHEN ? IN ('failed','diverged','pruned') THEN ? END WHERE id=?",
                              (state.value, error, diverged_epoch, state.value, time.time(), trial_id))
            if state == State.PRUNED:
                error = f"after epoch {self.trial(trial_id).epochs_done}"
            self._event(trial_id, state.value, error or "")
