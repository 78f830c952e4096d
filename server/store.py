"""The job store: SQLite in WAL mode in the data folder, the source of truth.

Every state change is committed before anyone is told about it, so a restart
(even after SIGKILL) finds each job where it was: running jobs go back to the
queue, finished ones stay finished and are never run again.
"""

from __future__ import annotations

import dataclasses
import pathlib
import sqlite3
import threading
import time
from collections.abc import Iterable

from .jobs import RUNNING_STATES, EditPlan, JobRecord, JobState, Preview

__all__ = ["JobStore", "NewJob"]

_SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id TEXT NOT NULL UNIQUE,
    state TEXT NOT NULL,
    request BLOB NOT NULL,
    fingerprint TEXT NOT NULL,
    plan TEXT NOT NULL,
    cache_key TEXT NOT NULL,
    model TEXT NOT NULL,
    created REAL NOT NULL,
    started REAL,
    finished REAL,
    error_message TEXT NOT NULL DEFAULT '',
    error_code TEXT NOT NULL DEFAULT '',
    result_path TEXT NOT NULL DEFAULT '',
    sidecar_path TEXT NOT NULL DEFAULT '',
    result_size INTEGER NOT NULL DEFAULT 0,
    cache_hit INTEGER NOT NULL DEFAULT 0,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 0,
    batch_size INTEGER NOT NULL DEFAULT 0,
    render_seconds REAL NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS jobs_by_state ON jobs (state, seq);
CREATE INDEX IF NOT EXISTS jobs_by_cache_key ON jobs (cache_key, state);
CREATE TABLE IF NOT EXISTS previews (
    job_id TEXT NOT NULL,
    frame_index INTEGER NOT NULL,
    jpeg BLOB NOT NULL,
    width INTEGER NOT NULL,
    height INTEGER NOT NULL,
    PRIMARY KEY (job_id, frame_index)
);
CREATE TABLE IF NOT EXISTS media_hashes (
    path TEXT PRIMARY KEY,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    inode INTEGER NOT NULL,
    sha256 TEXT NOT NULL
);
"""
_COLUMNS = (
    "seq, job_id, state, request, fingerprint, plan, cache_key, model, created, started, finished, "
    "error_message, error_code, result_path, sidecar_path, result_size, cache_hit, cancel_requested, "
    "attempts, batch_size, render_seconds"
)


@dataclasses.dataclass(frozen=True)
class NewJob:
    job_id: str
    request: bytes
    fingerprint: str
    plan: EditPlan
    model: str


def _record(row: tuple) -> JobRecord:
    return JobRecord(
        seq=row[0],
        job_id=row[1],
        state=JobState(row[2]),
        request=bytes(row[3]),
        fingerprint=row[4],
        plan=EditPlan.from_json(row[5]),
        cache_key=row[6],
        model=row[7],
        created=row[8],
        started=row[9],
        finished=row[10],
        error_message=row[11],
        error_code=row[12],
        result_path=row[13],
        sidecar_path=row[14],
        result_size=row[15],
        cache_hit=bool(row[16]),
        cancel_requested=bool(row[17]),
        attempts=row[18],
        batch_size=row[19],
        render_seconds=row[20],
    )


class JobStore:
    """Thread-safe: one connection guarded by a lock (SQLite serialises writes anyway)."""

    def __init__(self, path: pathlib.Path):
        self.path = pathlib.Path(path)
        self._lock = threading.RLock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        # FULL: a committed job survives a power cut, not only a process crash.
        self._db.execute("PRAGMA synchronous=FULL")
        with self._lock:
            self._db.executescript(_SCHEMA)  # idempotent; executescript commits on its own
        with self._transaction():
            row = self._db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
            if row is None:
                self._db.execute("INSERT INTO meta VALUES ('schema_version', ?)", (str(_SCHEMA_VERSION),))
            elif int(row[0]) > _SCHEMA_VERSION:
                raise RuntimeError(f"{self.path} was written by a newer fairy-server (schema {row[0]})")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _transaction(self):
        store = self

        class _Tx:
            def __enter__(self):
                store._lock.acquire()
                store._db.execute("BEGIN IMMEDIATE")

            def __exit__(self, exc_type, exc, tb):
                try:
                    store._db.execute("ROLLBACK" if exc_type else "COMMIT")
                finally:
                    store._lock.release()

        return _Tx()

    # -- reading ---------------------------------------------------------------

    def get(self, job_id: str) -> JobRecord | None:
        with self._lock:
            row = self._db.execute(f"SELECT {_COLUMNS} FROM jobs WHERE job_id=?", (job_id,)).fetchone()
        return _record(row) if row else None

    def get_by_seq(self, seq: int) -> JobRecord | None:
        with self._lock:
            row = self._db.execute(f"SELECT {_COLUMNS} FROM jobs WHERE seq=?", (seq,)).fetchone()
        return _record(row) if row else None

    def list(self, states: Iterable[JobState] = (), limit: int = 100) -> list[JobRecord]:
        """Newest first."""
        states = [s.value for s in states]
        query = f"SELECT {_COLUMNS} FROM jobs"
        if states:
            query += f" WHERE state IN ({','.join('?' * len(states))})"
        query += " ORDER BY seq DESC LIMIT ?"
        with self._lock:
            rows = self._db.execute(query, (*states, limit)).fetchall()
        return [_record(r) for r in rows]

    def next_queued(self, skip: int = 0) -> JobRecord | None:
        """The oldest queued job: jobs run in submission order."""
        with self._lock:
            row = self._db.execute(
                f"SELECT {_COLUMNS} FROM jobs WHERE state=? ORDER BY seq LIMIT 1 OFFSET ?",
                (JobState.QUEUED.value, skip),
            ).fetchone()
        return _record(row) if row else None

    def queue_position(self, seq: int) -> int:
        with self._lock:
            (n,) = self._db.execute(
                "SELECT COUNT(*) FROM jobs WHERE state=? AND seq<?", (JobState.QUEUED.value, seq)
            ).fetchone()
        return n

    def count_queued(self) -> int:
        with self._lock:
            (n,) = self._db.execute("SELECT COUNT(*) FROM jobs WHERE state=?", (JobState.QUEUED.value,)).fetchone()
        return n

    def find_cached(self, cache_key: str) -> JobRecord | None:
        """The newest finished job with this cache key whose files still exist."""
        with self._lock:
            rows = self._db.execute(
                f"SELECT {_COLUMNS} FROM jobs WHERE cache_key=? AND state=? ORDER BY seq DESC",
                (cache_key, JobState.DONE.value),
            ).fetchall()
        for row in rows:
            record = _record(row)
            if pathlib.Path(record.result_path).is_file() and pathlib.Path(record.sidecar_path).is_file():
                return record
        return None

    def previews(self, job_id: str) -> list[Preview]:
        with self._lock:
            rows = self._db.execute(
                "SELECT frame_index, jpeg, width, height FROM previews WHERE job_id=? ORDER BY frame_index", (job_id,)
            ).fetchall()
        return [Preview(r[0], bytes(r[1]), r[2], r[3]) for r in rows]

    # -- writing ---------------------------------------------------------------

    def insert(self, job: NewJob, *, state: JobState = JobState.QUEUED, **fields) -> tuple[JobRecord, bool]:
        """Insert a job, or return the existing one with that id: (record, created)."""
        with self._transaction():
            row = self._db.execute(f"SELECT {_COLUMNS} FROM jobs WHERE job_id=?", (job.job_id,)).fetchone()
            if row is not None:
                return _record(row), False
            columns = {
                "job_id": job.job_id,
                "state": state.value,
                "request": job.request,
                "fingerprint": job.fingerprint,
                "plan": job.plan.to_json(),
                "cache_key": job.plan.cache_key(),
                "model": job.model,
                "created": time.time(),
                **fields,
            }
            names = ", ".join(columns)
            self._db.execute(f"INSERT INTO jobs ({names}) VALUES ({','.join('?' * len(columns))})", tuple(columns.values()))
            row = self._db.execute(f"SELECT {_COLUMNS} FROM jobs WHERE job_id=?", (job.job_id,)).fetchone()
        return _record(row), True

    def update(self, job_id: str, *, expect: Iterable[JobState] | None = None, **fields) -> JobRecord | None:
        """Change columns; with ``expect``, only while the job is in one of those states.

        Returns the new record, or None when ``expect`` did not match.
        """
        if "state" in fields and isinstance(fields["state"], JobState):
            fields["state"] = fields["state"].value
        sets = ", ".join(f"{k}=?" for k in fields)
        query = f"UPDATE jobs SET {sets} WHERE job_id=?"
        params: list = [*fields.values(), job_id]
        if expect is not None:
            expect = [s.value for s in expect]
            query += f" AND state IN ({','.join('?' * len(expect))})"
            params += expect
        with self._transaction():
            changed = self._db.execute(query, params).rowcount
            row = self._db.execute(f"SELECT {_COLUMNS} FROM jobs WHERE job_id=?", (job_id,)).fetchone()
        if not changed:
            return None
        return _record(row)

    def mark_started(self, job_id: str, batch_size: int) -> JobRecord | None:
        """QUEUED -> LOADING_MODEL, counting the attempt."""
        with self._transaction():
            changed = self._db.execute(
                "UPDATE jobs SET state=?, started=?, attempts=attempts+1, batch_size=? WHERE job_id=? AND state=?",
                (JobState.LOADING_MODEL.value, time.time(), batch_size, job_id, JobState.QUEUED.value),
            ).rowcount
            row = self._db.execute(f"SELECT {_COLUMNS} FROM jobs WHERE job_id=?", (job_id,)).fetchone()
        return _record(row) if changed else None

    def add_previews(self, job_id: str, previews: Iterable[Preview]) -> None:
        with self._transaction():
            self._db.executemany(
                "INSERT OR REPLACE INTO previews VALUES (?, ?, ?, ?, ?)",
                [(job_id, p.frame_index, p.jpeg, p.width, p.height) for p in previews],
            )

    def clear_previews(self, job_id: str) -> None:
        with self._transaction():
            self._db.execute("DELETE FROM previews WHERE job_id=?", (job_id,))

    def requeue_interrupted(self) -> list[JobRecord]:
        """After a restart: running jobs go back to the queue (or to CANCELLED if asked)."""
        running = [s.value for s in RUNNING_STATES]
        marks = ",".join("?" * len(running))
        with self._transaction():
            rows = self._db.execute(f"SELECT {_COLUMNS} FROM jobs WHERE state IN ({marks}) ORDER BY seq", running).fetchall()
            self._db.execute(
                f"UPDATE jobs SET state=?, finished=? WHERE state IN ({marks}) AND cancel_requested=1",
                (JobState.CANCELLED.value, time.time(), *running),
            )
            self._db.execute(
                f"UPDATE jobs SET state=?, started=NULL WHERE state IN ({marks})", (JobState.QUEUED.value, *running)
            )
            self._db.execute(
                f"DELETE FROM previews WHERE job_id IN (SELECT job_id FROM jobs WHERE state=?)", (JobState.QUEUED.value,)
            )
        return [_record(r) for r in rows]

    # -- media hashes (so an unchanged file is hashed once) --------------------

    def cached_media_hash(self, path: str, size: int, mtime_ns: int, inode: int) -> str | None:
        with self._lock:
            row = self._db.execute(
                "SELECT sha256 FROM media_hashes WHERE path=? AND size=? AND mtime_ns=? AND inode=?",
                (path, size, mtime_ns, inode),
            ).fetchone()
        return row[0] if row else None

    def remember_media_hash(self, path: str, size: int, mtime_ns: int, inode: int, sha256: str) -> None:
        with self._transaction():
            self._db.execute("INSERT OR REPLACE INTO media_hashes VALUES (?, ?, ?, ?, ?)", (path, size, mtime_ns, inode, sha256))

