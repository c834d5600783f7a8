"""The SQLite journal's tables, error mapping and read-only opening (sqlite.py holds the backend, sql_journal.py
the journal's rules both backends share)."""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path

from onss_relay.errors import JournalBusy, JournalError, JournalFull
from onss_relay.journal.model import SetData, State
from onss_relay.journal.sql_rows import NEXT_CHANGE
from onss_relay.outcome import outcome_of

BUSY_TIMEOUT_MS = 30_000  # how long a statement waits for another process's lock on the journal
SCHEMA_VERSION = 4  # PRAGMA user_version; 0/1: onss-relay 0.1 (untyped set data, read as version 1); 3: set_workers;
# 4: indexes for a year of history (issue 29), created at open on older journals (same tables)

SCHEMA = """
CREATE TABLE IF NOT EXISTS sets (
    go_name TEXT PRIMARY KEY,
    env TEXT NOT NULL,
    state TEXT NOT NULL,
    parts TEXT NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    reason TEXT,
    ticket TEXT,
    data TEXT NOT NULL DEFAULT '{}',
    archived INTEGER NOT NULL DEFAULT 0,
    change_seq INTEGER NOT NULL DEFAULT 0,
    outcome TEXT
);
CREATE INDEX IF NOT EXISTS sets_state ON sets(state);
CREATE INDEX IF NOT EXISTS sets_change ON sets(change_seq);
CREATE INDEX IF NOT EXISTS sets_ticket ON sets(ticket);
-- the chart walks this index in order: sets per UTC day (whole days since the epoch), outcome and state
CREATE INDEX IF NOT EXISTS sets_day ON sets(CAST(created_at / 86400 AS INTEGER), outcome, state);
CREATE INDEX IF NOT EXISTS sets_updated ON sets(updated_at);  -- the sets written last (status, the page)
CREATE INDEX IF NOT EXISTS sets_waiting ON sets(state, updated_at);
CREATE INDEX IF NOT EXISTS sets_outcome ON sets(outcome, updated_at);
CREATE TABLE IF NOT EXISTS history (
    id INTEGER PRIMARY KEY,
    go_name TEXT NOT NULL,
    state TEXT NOT NULL,
    at REAL NOT NULL,
    detail TEXT
);
CREATE INDEX IF NOT EXISTS history_set ON history(go_name);
CREATE TABLE IF NOT EXISTS responses (
    folder TEXT NOT NULL,
    name TEXT NOT NULL,
    size INTEGER NOT NULL,
    local_path TEXT NOT NULL,
    deleted_remote INTEGER NOT NULL DEFAULT 0,
    kind TEXT,
    linked_set TEXT,
    at REAL NOT NULL,
    detail TEXT,
    PRIMARY KEY (folder, name)
);
CREATE TABLE IF NOT EXISTS set_keys (
    kind TEXT NOT NULL,
    value TEXT NOT NULL,
    go_name TEXT NOT NULL,
    PRIMARY KEY (kind, value, go_name)
);
CREATE INDEX IF NOT EXISTS set_keys_set ON set_keys(go_name);
CREATE TABLE IF NOT EXISTS set_workers (
    inss TEXT NOT NULL,
    go_name TEXT NOT NULL,
    file TEXT NOT NULL,
    outcome TEXT NOT NULL,
    PRIMARY KEY (inss, go_name, file)
);
CREATE INDEX IF NOT EXISTS set_workers_set ON set_workers(go_name);
CREATE INDEX IF NOT EXISTS responses_kind ON responses(kind);
CREATE INDEX IF NOT EXISTS responses_linked ON responses(linked_set);
CREATE INDEX IF NOT EXISTS responses_unmatched_at ON responses(at, folder, name)
    WHERE COALESCE(linked_set, '') = '' AND kind NOT IN ('signature', 'marker');
CREATE INDEX IF NOT EXISTS sets_updated_name ON sets(updated_at, go_name);
CREATE INDEX IF NOT EXISTS sets_unarchived ON sets(state) WHERE archived = 0;
CREATE INDEX IF NOT EXISTS sets_sequence ON sets(substr(go_name, 9));
CREATE TABLE IF NOT EXISTS sequences (
    sender TEXT NOT NULL,
    date TEXT NOT NULL,
    env TEXT NOT NULL,
    seq INTEGER NOT NULL,
    PRIMARY KEY (sender, date, env, seq)
);
"""


# the sets written last, each with only its last notification, stripped of its workers and anomalies, carrying
# the set's outcome (of all its notifications: an earlier one may have refused a worker the last one does not
# name), that record's own when the set has none: what a status table shows, without reading any anomaly
LAST_NOTE = "json_extract(data, '$.notifications[#-1]')"
LIGHT_SETS = f"""
SELECT go_name, env, state, parts, created_at, updated_at, reason, ticket, archived, change_seq,
    CASE WHEN json_valid(data) AND json_array_length(data, '$.notifications') > 0 THEN
        json_set(data, '$.notifications', json_array(json_set(
            json_remove({LAST_NOTE}, '$.workers', '$.anomalies'),
            '$.outcome', COALESCE(NULLIF(outcome, ''), NULLIF(json_extract({LAST_NOTE}, '$.outcome'), ''), ''))))
    ELSE data END AS data
FROM sets ORDER BY updated_at DESC LIMIT ?
"""

# columns added after a table was first shipped: (table, column, definition); added to older journals at open
ADDED_COLUMNS = (
    ("sets", "change_seq", "INTEGER NOT NULL DEFAULT 0"),  # the change counter results/ follow
    ("responses", "detail", "TEXT"),  # why a response is malformed
    ("sets", "outcome", "TEXT"),  # what the ONSS decided (onss_relay/outcome.py), beside the state
)


def add_missing_columns(db: sqlite3.Connection) -> list[tuple[str, str]]:
    """Given a journal open for writing, add the columns of ADDED_COLUMNS its tables lack (a journal of an older
    onss-relay keeps its rows; readers of that version ignore the new columns); return the (table, column)
    added, and fill those computed from the rows (a set's outcome)."""
    added = []
    for table, column, definition in ADDED_COLUMNS:
        have = {r[1] for r in db.execute(f"PRAGMA table_info({table})")}
        if have and column not in have:
            db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {definition}")
            added.append((table, column))
    if ("sets", "outcome") in added:
        fill_outcomes(db)
    return added


def fill_outcomes(db: sqlite3.Connection) -> None:
    """Given a journal whose sets predate their outcome column, compute each set's outcome from its stored data
    and mark it changed, so that results/ is written again with its outcome and /metrics counts it."""
    rows = db.execute("SELECT go_name, state, data FROM sets ORDER BY change_seq, go_name").fetchall()
    for r in rows:
        outcome = outcome_of(r["go_name"], State(r["state"]), SetData.from_json(r["data"]))
        db.execute(
            f"UPDATE sets SET outcome = ?, change_seq = {NEXT_CHANGE} WHERE go_name = ?", (outcome, r["go_name"])
        )


def open_readonly(path: Path) -> sqlite3.Connection:
    """Open the journal for reading only (`status` by a user who can read the spool and nothing more).

    With the daemon running, its -wal and -shm files exist and a read-only connection uses them. With no
    daemon they are gone, and a reader that may not create them opens the file as immutable (nobody writes);
    so does a reader beside a daemon waiting for room on a full disk (an empty -wal, a torn -shm).
    """
    if not path.exists():
        raise JournalError(f"{path}: no journal here")
    last: sqlite3.Error | None = None
    for query in ("mode=ro", "mode=ro&immutable=1"):
        try:
            db = sqlite3.connect(
                f"{path.absolute().as_uri()}?{query}",
                uri=True,
                timeout=30,
                isolation_level=None,
                check_same_thread=False,
            )
            db.row_factory = sqlite3.Row
            db.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            db.execute("SELECT 1 FROM sets LIMIT 1").fetchone()  # readable, without counting a year of sets
            return db
        except sqlite3.OperationalError as e:
            last = e
            if _wal_holds_frames(path):
                break  # a writer is active: reading it as immutable could show a half-written state
    raise JournalError(f"{path}: cannot read the journal ({last})")


def _wal_holds_frames(path: Path) -> bool:
    """Given the journal, return whether its -wal file holds anything. An empty one (a daemon that opened the
    journal on a full disk and could write neither it nor its -shm) holds nothing the main file lacks."""
    try:
        return (path.parent / f"{path.name}-wal").stat().st_size > 0
    except OSError:
        return False


@contextlib.contextmanager
def neutral_errors(path: Path) -> Iterator[None]:
    """Turn SQLite's busy, locked and full-disk errors into the backend-neutral ones the stages handle."""
    try:
        yield
    except sqlite3.DatabaseError as e:  # OperationalError, and "file is not a database"
        code = getattr(e, "sqlite_errorcode", 0) & 0xFF
        if code in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
            raise JournalBusy(f"{path}: the journal is locked by another process ({e})") from e
        if code == sqlite3.SQLITE_FULL or (code == sqlite3.SQLITE_IOERR and _no_room(path)):
            raise JournalFull(f"{path}: disk full: the journal cannot grow; free space on that filesystem") from e
        raise JournalError(f"{path}: {e}") from e


def _no_room(path: Path) -> bool:
    """Whether the filesystem holding the journal is full (SQLite reports a write into its -wal or -shm file
    on a full disk as a disk I/O error)."""
    try:
        return os.statvfs(path.parent).f_bavail == 0
    except OSError:
        return False
