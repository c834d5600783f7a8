"""The PostgreSQL journal's tables, created and migrated by the relay itself: ``journal_meta`` holds the schema
version, each migration is applied once in order under a lock, and a newer schema is refused in one sentence.
The tables are SQLite's (sqlite_schema.py) in PostgreSQL's types, plus ``leadership``: one row per sender
number naming the active relay, its epoch and how long its lease lasts."""

from __future__ import annotations

from typing import Any

from onss_relay.errors import ConfigError, JournalError
from onss_relay.journal.sql_rows import Db
from onss_relay.journal.sql_workers import backfill_workers

SCHEMA_LOCK = 0x6F6E7300  # pg_advisory_xact_lock key: one relay at a time creates or migrates the schema
WRITER_LOCK = 0x6F6E7301  # pg_advisory_xact_lock key: writers queue, as SQLite's BEGIN IMMEDIATE makes them

V1 = """
CREATE TABLE IF NOT EXISTS sets (
    go_name TEXT PRIMARY KEY,
    env TEXT NOT NULL,
    state TEXT NOT NULL,
    parts TEXT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    updated_at DOUBLE PRECISION NOT NULL,
    reason TEXT,
    ticket TEXT,
    data TEXT NOT NULL DEFAULT '{}',
    archived INTEGER NOT NULL DEFAULT 0,
    change_seq BIGINT NOT NULL DEFAULT 0,
    outcome TEXT
);
CREATE INDEX IF NOT EXISTS sets_state ON sets(state);
CREATE INDEX IF NOT EXISTS sets_change ON sets(change_seq);
CREATE INDEX IF NOT EXISTS sets_ticket ON sets(ticket);
CREATE INDEX IF NOT EXISTS sets_updated ON sets(updated_at);
CREATE TABLE IF NOT EXISTS history (
    id BIGSERIAL PRIMARY KEY,
    go_name TEXT NOT NULL,
    state TEXT NOT NULL,
    at DOUBLE PRECISION NOT NULL,
    detail TEXT
);
CREATE INDEX IF NOT EXISTS history_set ON history(go_name);
CREATE TABLE IF NOT EXISTS responses (
    folder TEXT NOT NULL,
    name TEXT NOT NULL,
    size BIGINT NOT NULL,
    local_path TEXT NOT NULL,
    deleted_remote INTEGER NOT NULL DEFAULT 0,
    kind TEXT,
    linked_set TEXT,
    at DOUBLE PRECISION NOT NULL,
    detail TEXT,
    PRIMARY KEY (folder, name)
);
CREATE TABLE IF NOT EXISTS set_keys (
    kind TEXT NOT NULL,
    value TEXT NOT NULL,
    go_name TEXT NOT NULL,
    rowid BIGSERIAL,
    PRIMARY KEY (kind, value, go_name)
);
CREATE INDEX IF NOT EXISTS set_keys_set ON set_keys(go_name);
CREATE TABLE IF NOT EXISTS sequences (
    sender TEXT NOT NULL,
    date TEXT NOT NULL,
    env TEXT NOT NULL,
    seq INTEGER NOT NULL,
    PRIMARY KEY (sender, date, env, seq)
);
CREATE TABLE IF NOT EXISTS leadership (
    sender TEXT PRIMARY KEY,
    epoch BIGINT NOT NULL,
    holder TEXT NOT NULL,
    since TIMESTAMPTZ NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL
)
"""

# the status page (issue 26): every worker of every notification Form, and the indexes its reads walk
V2 = """
CREATE TABLE IF NOT EXISTS set_workers (
    inss TEXT NOT NULL,
    go_name TEXT NOT NULL,
    file TEXT NOT NULL,
    outcome TEXT NOT NULL,
    PRIMARY KEY (inss, go_name, file)
);
CREATE INDEX IF NOT EXISTS set_workers_set ON set_workers(go_name);
CREATE INDEX IF NOT EXISTS sets_day ON sets((CAST(FLOOR(created_at / 86400) AS INTEGER)), outcome, state);
CREATE INDEX IF NOT EXISTS sets_waiting ON sets(state, updated_at);
CREATE INDEX IF NOT EXISTS sets_outcome ON sets(outcome, updated_at)
"""

V3 = """
ALTER TABLE responses ADD COLUMN IF NOT EXISTS position BIGSERIAL;
CREATE INDEX IF NOT EXISTS responses_position ON responses(position) WHERE kind IS NULL;
CREATE INDEX IF NOT EXISTS responses_linked ON responses(linked_set);
CREATE INDEX IF NOT EXISTS sets_updated_name ON sets(updated_at, go_name);
CREATE INDEX IF NOT EXISTS sets_unarchived ON sets(state) WHERE archived = 0;
CREATE INDEX IF NOT EXISTS sets_sequence ON sets((substr(go_name, 9) COLLATE "C"))
"""  # issue 29: a year of history read a page at a time, the sequence check an indexed range

# issue 29: retention walks the answers linked to no set by when they were recorded (sql_responses.UNMATCHED_LITERAL)
V4 = """
CREATE INDEX IF NOT EXISTS responses_unmatched_at ON responses(at, folder, name)
    WHERE COALESCE(linked_set, '') = '' AND kind NOT IN ('signature', 'marker')
"""

MIGRATIONS: tuple[tuple[int, str], ...] = (
    (1, V1),
    (2, V2),
    (3, V3),
    (4, V4),
)  # (version, statements): a new one is appended, never edited
SCHEMA_VERSION = MIGRATIONS[-1][0]


def migrate(db: Db, where: str) -> int:
    """Given a connection inside a transaction, create or upgrade the schema to SCHEMA_VERSION and return the
    version found before (0 for an empty database); raise JournalError for a schema newer than this relay's."""
    db.execute("SELECT pg_advisory_xact_lock(?)", (SCHEMA_LOCK,))
    db.execute("CREATE TABLE IF NOT EXISTS journal_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    row = db.execute("SELECT value FROM journal_meta WHERE key = 'schema_version'").fetchone()
    found = int(row[0]) if row else 0
    if found > SCHEMA_VERSION:
        raise JournalError(
            f"{where}: journal schema {found} is newer than this onss-relay ({SCHEMA_VERSION});"
            " upgrade onss-relay or restore a backup"
        )
    for version, statements in MIGRATIONS:
        if version > found:
            for statement in statements.split(";"):
                if statement.strip():
                    db.execute(statement)
    if 0 < found < 2:  # the worker index is new: fill it from the notifications already recorded
        backfill_workers(db)
    db.execute(
        "INSERT INTO journal_meta (key, value) VALUES ('schema_version', ?)"
        " ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
        (str(SCHEMA_VERSION),),
    )
    return found


def own_sender(db: Db, sender: str, where: str, record: bool = True) -> None:
    """Given a connection (inside a transaction when ``record``), the relay's sender number and the database for
    messages, record that number as the journal's own the first time (with ``record``); raise ConfigError when
    the journal is another sender's: the leadership row is per sender, so two senders' relays on one database
    would both lead, and each would read, recover and upload the other's sets."""
    row = db.execute("SELECT value FROM journal_meta WHERE key = 'sender'").fetchone()
    if row is None:
        if record:
            db.execute("INSERT INTO journal_meta (key, value) VALUES ('sender', ?) ON CONFLICT DO NOTHING", (sender,))
        return
    if str(row[0]) != sender:
        raise ConfigError(
            f"journal.url = {where!r}: this database holds the journal of sender number {row[0]}, not {sender}"
            " ([sender] number): each sender number needs a database of its own"
        )


def schema_version(db: Db) -> int:
    """Given a connection, return the schema version of the journal in that database (0: none yet)."""
    exists = db.execute("SELECT to_regclass('journal_meta')").fetchone()[0]
    if exists is None:
        return 0
    row = db.execute("SELECT value FROM journal_meta WHERE key = 'schema_version'").fetchone()
    return int(row[0]) if row else 0


def has_journal(conn: Any) -> bool:
    """Given a psycopg connection, return whether its database holds a journal (its schema version recorded)."""
    from onss_relay.journal.postgres_db import PgDb

    return schema_version(PgDb(conn)) > 0
