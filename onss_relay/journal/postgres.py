"""The PostgreSQL journal: the same rules as SQLite's (sql_journal.py) on a database two machines reach, for an
active/standby pair. This module owns the connection (reopened after the server restarts), the transactions
(writers queue on an advisory lock, as SQLite's BEGIN IMMEDIATE makes them) and the fencing: every write of a
relay opened with a leadership ``epoch`` checks, in its own transaction, that no newer leader exists.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

import structlog

from onss_relay import crash_point
from onss_relay.config import JournalConfig
from onss_relay.errors import Fenced, JournalError
from onss_relay.journal.postgres_db import PgDb, connect, neutral_errors, safe_url, session_name
from onss_relay.journal.postgres_schema import WRITER_LOCK, migrate, own_sender, schema_version
from onss_relay.journal.sql_journal import SqlJournal
from onss_relay.journal.sql_workers import POSTGRES_DAY

log = structlog.get_logger(__name__)

BEGIN_AND_LOCK = f"BEGIN; SELECT pg_advisory_xact_lock({WRITER_LOCK})"  # writers queue, as BEGIN IMMEDIATE does


class PostgresJournal(SqlJournal):
    """Given the journal settings and the sender number, keep the state of every set and response in
    PostgreSQL; safe to share between threads. ``epoch``: the leadership this relay holds (None for commands,
    which take no leadership: `submit`, `requeue`)."""

    path: str
    _day_sql = POSTGRES_DAY
    _from_sender = 'substr(go_name, 9) COLLATE "C"'  # byte order whatever the database's collation
    _response_position = "position"

    def __init__(self, cfg: JournalConfig, sender: str, readonly: bool = False, epoch: int | None = None) -> None:
        self.cfg = cfg
        self.sender = sender
        self.path = safe_url(cfg.url)
        self.readonly = readonly
        self.epoch = epoch
        self._lock = threading.RLock()
        self._depth = 0
        self._conn: Any = None
        with neutral_errors(self.path):
            db = self._connection()
            if readonly:
                if schema_version(db) == 0:
                    raise JournalError(f"{self.path}: no journal in this database yet")
                own_sender(db, sender, self.path, record=False)
                return
            db.execute("BEGIN")
            try:
                migrate(db, self.path)
                own_sender(db, sender, self.path)
            except BaseException:
                with contextlib.suppress(Exception):
                    db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    def _connection(self) -> PgDb:
        """Return the open connection, opening a new one when there is none or the last one broke (a restart of
        the server); raise JournalUnreachable while it cannot be reached."""
        if self._conn is None or self._conn.closed or self._conn.broken:
            # named for its epoch: a standby taking over ends this session if the relay lapses inside a write
            self._conn = connect(self.cfg, name=session_name(self.sender, self.epoch))
            if self.readonly:
                self._conn.execute("SET default_transaction_read_only = on")
        return PgDb(self._conn)

    def close(self) -> None:
        """Close the connection; nothing may use the journal afterwards."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()

    @contextlib.contextmanager
    def atomic(self) -> Iterator[None]:
        """Run every write made inside (by this thread) in one transaction: all are recorded or none is."""
        with self._tx():
            yield

    @contextlib.contextmanager
    def _read(self) -> Iterator[PgDb]:
        """The connection for one read (other threads wait), psycopg's errors made neutral."""
        with self._lock, neutral_errors(self.path):
            yield self._connection()

    @contextlib.contextmanager
    def _tx(self) -> Iterator[PgDb]:
        """One transaction, after the writers' lock and the fence; inner ones join the outer one."""
        with self._lock, neutral_errors(self.path):
            if self._depth:
                self._depth += 1
                try:
                    yield PgDb(self._conn)
                finally:
                    self._depth -= 1
                return
            if self.readonly:
                raise JournalError(f"{self.path}: the journal is open read-only here")
            db = self._connection()
            self._depth = 1
            try:
                db.conn.execute(BEGIN_AND_LOCK)  # one round trip: no parameters, so both go as one simple query
                self._check_fence(db)  # its own statement: its snapshot is taken after the lock was granted
                yield db
            except BaseException:
                with contextlib.suppress(Exception):
                    db.execute("ROLLBACK")
                raise
            finally:
                self._depth = 0
            db.execute("COMMIT")
        crash_point.committed()

    def _check_fence(self, db: PgDb) -> None:
        """Given a write transaction holding the writers' lock, raise Fenced if this relay's leadership epoch is
        no longer the newest (a standby took over): the leadership row changes only under that same lock."""
        if self.epoch is None:
            return
        row = db.execute("SELECT epoch, holder FROM leadership WHERE sender = ?", (self.sender,)).fetchone()
        if row is None or int(row["epoch"]) != self.epoch:
            newer = f"epoch {row['epoch']} ({row['holder']})" if row else "none"
            raise Fenced(
                f"{self.path}: write refused: this relay led as epoch {self.epoch}, the journal's leader is {newer}"
            )

    def spool_id(self, proposed: str) -> tuple[str, bool]:
        """Given an id for the spool, record it as the journal's spool if none is recorded yet; return the id
        recorded and whether it was recorded now (spool_identity.py)."""
        with self._tx() as db:
            new = db.execute(
                "INSERT INTO journal_meta (key, value) VALUES ('spool', ?) ON CONFLICT DO NOTHING", (proposed,)
            ).rowcount
            row = db.execute("SELECT value FROM journal_meta WHERE key = 'spool'").fetchone()
        return str(row[0]), new == 1
