"""The SQLite journal (WAL, synchronous=FULL): the embedded backend, one machine, the database in the spool.

This module owns the connection, the transactions and SQLite's errors (left as the backend-neutral JournalBusy
and JournalError); the journal's rules are in ``sql_journal.py``, shared with the PostgreSQL backend.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from onss_relay import crash_point
from onss_relay.errors import JournalError
from onss_relay.journal.sql_journal import SqlJournal
from onss_relay.journal.sql_workers import backfill_workers
from onss_relay.journal.sqlite_schema import (
    BUSY_TIMEOUT_MS,
    LIGHT_SETS,
    SCHEMA,
    SCHEMA_VERSION,
    add_missing_columns,
    neutral_errors,
    open_readonly,
)


class SqliteJournal(SqlJournal):
    """Given a database path, keep the state of every set and response; safe to share between threads."""

    path: Path
    _light_sets_sql = LIGHT_SETS
    _old_journal_errors = (sqlite3.OperationalError,)

    def __init__(self, path: Path, readonly: bool = False) -> None:
        self.path = path
        self._lock = threading.RLock()
        self._depth = 0  # transactions open on this connection: inner ones join the outer one (atomic())
        if readonly:  # `status` for whoever can read the spool: no write, no schema change, no WAL switch
            self._db = open_readonly(path)
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        with neutral_errors(path):  # a full disk or a damaged file: one sentence, whoever opens it
            try:
                self._open_rw(path)
            except BaseException:
                if hasattr(self, "_db"):
                    self._db.close()  # a half-open connection would keep its write lock until collected
                raise

    def _open_rw(self, path: Path) -> None:
        self._db = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
        self._db.row_factory = sqlite3.Row
        self._switch_to_wal()
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        with self._tx() as db:
            fresh = db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'sets'").fetchone() is None
            add_missing_columns(db)  # before SCHEMA: its indexes name the columns journals of 0.2 lack
            for statement in SCHEMA.split(";"):
                if statement.strip():
                    db.execute(statement)
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise JournalError(
                    f"{path}: journal schema {version} is newer than this onss-relay ({SCHEMA_VERSION});"
                    " upgrade onss-relay or restore a backup"
                )
            if version < 3 and not fresh:  # the worker index is new: fill it from the notifications recorded
                backfill_workers(db)
            if version < SCHEMA_VERSION:  # 0.1 journals: same tables; set data is read as version 1 when loaded
                db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    def _switch_to_wal(self) -> None:
        """Make the journal WAL, trying again while another process holds its lock, for up to the busy timeout.

        Two processes switching a fresh file at once deadlock inside SQLite: each holds a read lock and wants the
        write lock, and the one that cannot have it is told SQLITE_BUSY at once, without the busy handler (a burst
        of `submit`s on a new spool: "database is locked", about 1 run in 90)."""
        self._while_busy("PRAGMA journal_mode=WAL", 0.005)

    def _while_busy(self, sql: str, pause: float) -> None:
        """Given a statement and the pause between tries (seconds), run it, trying again while another process
        holds the journal's lock (SQLITE_BUSY), for up to the busy timeout; raise any other error at once."""
        deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
        while True:
            try:
                self._db.execute(sql)
                return
            except sqlite3.OperationalError as e:
                if e.sqlite_errorcode & 0xFF != sqlite3.SQLITE_BUSY or time.monotonic() > deadline:
                    raise
            time.sleep(pause)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextlib.contextmanager
    def atomic(self) -> Iterator[None]:
        """Run every write made inside (by this thread) in one transaction: all are recorded or none is.
        Other threads' writes wait until it ends; reads inside see the writes made before them."""
        with self._tx():
            yield

    @contextlib.contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """One IMMEDIATE transaction: the write lock is taken at its start, so concurrent processes queue.
        Inside atomic(), the outer transaction: nothing is committed before it ends."""
        with self._lock, neutral_errors(self.path):
            if self._depth:
                self._depth += 1
                try:
                    yield self._db
                finally:
                    self._depth -= 1
                return
            self._begin_immediate()
            self._depth = 1
            try:
                yield self._db
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    self._db.execute("ROLLBACK")
                raise
            finally:
                self._depth = 0
            self._db.execute("COMMIT")
        crash_point.committed()

    def _begin_immediate(self) -> None:
        """Take the write lock, trying again every half millisecond for up to the busy timeout.

        SQLite's own busy handler sleeps 1, 2, 5, 10 … 100 ms between tries: two processes committing
        small batches all the time (send --once signs in a child) would spend most of their time asleep.
        """
        self._db.execute("PRAGMA busy_timeout=0")
        try:
            self._while_busy("BEGIN IMMEDIATE", 0.0005)
        finally:
            self._db.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")

    @contextlib.contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        """The connection for one read (other threads wait), SQLite's errors made neutral."""
        with self._lock, neutral_errors(self.path):
            yield self._db
