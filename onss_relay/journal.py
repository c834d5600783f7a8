"""The journal: one SQLite database (WAL, synchronous=FULL) holding every declaration set and response.

It is the only writer of state. The state machine lives in ``TRANSITIONS``; any other change raises.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import enum
import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import structlog

from onss_relay.errors import IllegalTransition

log = structlog.get_logger(__name__)

BUSY_TIMEOUT_MS = 30_000  # how long a statement waits for another process's lock on the journal


class State(enum.StrEnum):
    QUEUED = "queued"
    SIGNED = "signed"
    UPLOADING = "uploading"
    GO_SENDING = "go_sending"
    SENT = "sent"
    ACKNOWLEDGED = "acknowledged"
    REFUSED = "refused"
    NOTIFIED = "notified"
    FAILED = "failed"


S = State
TRANSITIONS: dict[State, frozenset[State]] = {
    S.QUEUED: frozenset({S.SIGNED, S.FAILED}),
    S.SIGNED: frozenset({S.UPLOADING, S.FAILED}),
    # UPLOADING -> UPLOADING: a set interrupted before go_sending is re-sent from its first file.
    S.UPLOADING: frozenset({S.UPLOADING, S.GO_SENDING, S.SIGNED, S.FAILED}),
    S.GO_SENDING: frozenset({S.SENT}),
    S.SENT: frozenset({S.ACKNOWLEDGED, S.REFUSED}),
    S.ACKNOWLEDGED: frozenset({S.NOTIFIED}),
    S.NOTIFIED: frozenset({S.NOTIFIED}),  # further notifications for the same declaration
    S.REFUSED: frozenset(),
    S.FAILED: frozenset({S.QUEUED}),  # the same name dropped again, fixed, after a quarantine
}
IN_FLIGHT = (S.QUEUED, S.SIGNED, S.UPLOADING, S.GO_SENDING)


def check_transition(old: State, new: State) -> None:
    """Given two states, return if the state machine allows old → new, else raise IllegalTransition."""
    if new not in TRANSITIONS[old]:
        raise IllegalTransition(f"illegal transition {old} → {new}")


@dataclasses.dataclass(frozen=True)
class NewSet:
    """A complete set claimed from the outbox, for Journal.add_sets."""

    go_name: str
    env: str
    parts: list[str]
    data: dict[str, Any]


@dataclasses.dataclass(frozen=True)
class Change:
    """One state change for Journal.transition_many: the set, its new state, a detail, data to merge."""

    go_name: str
    state: State
    detail: str | None = None
    archived: bool = False  # the set's local files are already in sent/
    data: dict[str, Any] | None = None


@dataclasses.dataclass(frozen=True)
class SetRow:
    go_name: str
    env: str
    state: State
    parts: list[str]  # FI names, in part order
    created_at: float
    updated_at: float
    reason: str | None
    ticket: str | None
    data: dict[str, Any]  # sizes, results, paths: everything else, as JSON
    archived: bool


@dataclasses.dataclass(frozen=True)
class ResponseRow:
    folder: str
    name: str
    size: int
    local_path: str
    deleted_remote: bool
    kind: str | None
    linked_set: str | None


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
    archived INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS sets_state ON sets(state);
CREATE INDEX IF NOT EXISTS sets_ticket ON sets(ticket);
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
    PRIMARY KEY (folder, name)
);
CREATE TABLE IF NOT EXISTS sequences (
    sender TEXT NOT NULL,
    date TEXT NOT NULL,
    env TEXT NOT NULL,
    seq INTEGER NOT NULL,
    PRIMARY KEY (sender, date, env, seq)
);
"""


class Journal:
    """Given a database path, keep the state of every set and response; safe to share between threads."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._db = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        with self._tx():
            for statement in SCHEMA.split(";"):
                if statement.strip():
                    self._db.execute(statement)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextlib.contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """One IMMEDIATE transaction: the write lock is taken at its start, so concurrent processes queue."""
        with self._lock:
            self._begin_immediate()
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _begin_immediate(self) -> None:
        """Take the write lock, trying again every half millisecond for up to the busy timeout.

        SQLite's own busy handler sleeps 1, 2, 5, 10 … 100 ms between tries: two processes committing
        small batches all the time (send --once signs in a child) would spend most of their time asleep.
        """
        deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
        self._db.execute("PRAGMA busy_timeout=0")
        try:
            while True:
                try:
                    self._db.execute("BEGIN IMMEDIATE")
                    return
                except sqlite3.OperationalError as e:
                    if e.sqlite_errorcode & 0xFF != sqlite3.SQLITE_BUSY or time.monotonic() > deadline:
                        raise
                time.sleep(0.0005)
        finally:
            self._db.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")

    # -- declaration sets ---------------------------------------------------------------------

    def add_set(self, go_name: str, env: str, parts: list[str], data: dict[str, Any] | None = None) -> None:
        """Given a new set (or one quarantined before), record it as queued; raise IllegalTransition otherwise."""
        self.add_sets([NewSet(go_name, env, parts, data or {})])

    def add_sets(self, sets: list[NewSet]) -> None:
        """Given new sets (or ones quarantined before), record them as queued in one transaction."""
        now = time.time()
        with self._tx() as db:
            for n in sets:
                row = db.execute("SELECT state FROM sets WHERE go_name = ?", (n.go_name,)).fetchone()
                if row is not None:
                    check_transition(State(row["state"]), S.QUEUED)
                    db.execute(
                        "UPDATE sets SET state = ?, parts = ?, data = ?, updated_at = ?, reason = NULL, archived = 0"
                        " WHERE go_name = ?",
                        (S.QUEUED, json.dumps(n.parts), json.dumps(n.data), now, n.go_name),
                    )
                else:
                    db.execute(
                        "INSERT INTO sets (go_name, env, state, parts, created_at, updated_at, data) VALUES (?,?,?,?,?,?,?)",
                        (n.go_name, n.env, S.QUEUED, json.dumps(n.parts), now, now, json.dumps(n.data)),
                    )
                db.execute("INSERT INTO history (go_name, state, at) VALUES (?,?,?)", (n.go_name, S.QUEUED, now))
        for n in sets:
            log.info("set_state", set=n.go_name, state=str(S.QUEUED), parts=len(n.parts))

    def add_failed(self, go_name: str, env: str, parts: list[str], reason: str) -> None:
        """Given a set refused before it was queued, record it as failed (for status) unless its name is known."""
        now = time.time()
        with self._tx() as db:
            cur = db.execute(
                "INSERT OR IGNORE INTO sets (go_name, env, state, parts, created_at, updated_at, reason, archived)"
                " VALUES (?,?,?,?,?,?,?,1)",
                (go_name, env, S.FAILED, json.dumps(parts), now, now, reason),
            )
            added = cur.rowcount > 0
            if added:
                db.execute("INSERT INTO history (go_name, state, at, detail) VALUES (?,?,?,?)", (go_name, S.FAILED, now, reason))
        if added:
            log.info("set_state", set=go_name, state=str(S.FAILED), detail=reason)

    def transition(self, go_name: str, new: State, detail: str | None = None, archived: bool = False,
                   **data: Any) -> None:
        """Given a set and a new state, check and record the change (merging ``data``).

        ``archived`` records in the same transaction that the set's local files are already in sent/.
        """
        self.transition_many([Change(go_name, new, detail, archived, data)])

    def transition_many(self, changes: list[Change]) -> None:
        """Given state changes of several sets, check and record them all in one transaction (one fsync).

        Either every change is recorded or none is (an illegal one raises and rolls the others back).
        """
        if not changes:
            return
        now = time.time()
        logged = []
        with self._tx() as db:
            for c in changes:
                row = db.execute("SELECT state, updated_at, data FROM sets WHERE go_name = ?", (c.go_name,)).fetchone()
                if row is None:
                    raise IllegalTransition(f"unknown set {c.go_name}")
                check_transition(State(row["state"]), c.state)
                data = c.data or {}
                merged = json.loads(row["data"]) | {k: v for k, v in data.items() if k not in ("ticket", "reason")}
                db.execute(
                    "UPDATE sets SET state = ?, updated_at = ?, data = ?, ticket = COALESCE(?, ticket),"
                    " reason = COALESCE(?, reason), archived = MAX(archived, ?) WHERE go_name = ?",
                    (c.state, now, json.dumps(merged), data.get("ticket"), data.get("reason"), int(c.archived), c.go_name),
                )
                db.execute("INSERT INTO history (go_name, state, at, detail) VALUES (?,?,?,?)",
                           (c.go_name, c.state, now, c.detail))
                logged.append((c, row["state"], row["updated_at"]))
        # the one event per state change, whoever asked for it, with the time spent in the previous state
        for c, previous, updated_at in logged:
            log.info("set_state", set=c.go_name, state=str(c.state), previous=previous,
                     duration_ms=round((now - updated_at) * 1000), detail=c.detail)

    def update_data(self, go_name: str, **data: Any) -> None:
        """Given a set, merge ``data`` into its JSON data without changing its state."""
        with self._tx() as db:
            row = db.execute("SELECT data FROM sets WHERE go_name = ?", (go_name,)).fetchone()
            merged = json.loads(row["data"]) | data
            db.execute("UPDATE sets SET data = ?, updated_at = ? WHERE go_name = ?", (json.dumps(merged), time.time(), go_name))

    def mark_archived(self, archived: dict[str, str]) -> None:
        """Given sent sets and the folder their files now sit in (GO name → sent dir), record that in one commit."""
        with self._tx() as db:
            for go_name, sent_dir in archived.items():
                row = db.execute("SELECT data FROM sets WHERE go_name = ?", (go_name,)).fetchone()
                data = json.loads(row["data"]) | {"sent_dir": sent_dir}
                db.execute("UPDATE sets SET archived = 1, data = ? WHERE go_name = ?", (json.dumps(data), go_name))

    def get_set(self, go_name: str) -> SetRow | None:
        with self._lock:
            row = self._db.execute("SELECT * FROM sets WHERE go_name = ?", (go_name,)).fetchone()
        return _set_row(row) if row else None

    def sets_in(self, *states: State, limit: int | None = None) -> list[SetRow]:
        """Given states, return the sets in them, oldest first."""
        marks = ",".join("?" * len(states))
        sql = f"SELECT * FROM sets WHERE state IN ({marks}) ORDER BY created_at, go_name"
        if limit:
            sql += f" LIMIT {int(limit)}"
        with self._lock:
            return [_set_row(r) for r in self._db.execute(sql, [str(s) for s in states])]

    def recent_sets(self, limit: int = 50) -> list[SetRow]:
        with self._lock:
            rows = self._db.execute("SELECT * FROM sets ORDER BY updated_at DESC LIMIT ?", (limit,)).fetchall()
        return [_set_row(r) for r in rows]

    def set_by_ticket(self, ticket: str) -> SetRow | None:
        with self._lock:
            row = self._db.execute("SELECT * FROM sets WHERE ticket = ?", (ticket,)).fetchone()
        return _set_row(row) if row else None

    def unarchived_done(self) -> list[SetRow]:
        """Return sets whose GO went out but whose local files were not yet moved to sent/."""
        with self._lock:
            rows = self._db.execute(
                "SELECT * FROM sets WHERE archived = 0 AND state IN (?,?,?,?)",
                (S.SENT, S.ACKNOWLEDGED, S.REFUSED, S.NOTIFIED),
            ).fetchall()
        return [_set_row(r) for r in rows]

    def counts(self) -> dict[str, int]:
        with self._lock:
            return {r[0]: r[1] for r in self._db.execute("SELECT state, COUNT(*) FROM sets GROUP BY state")}

    def history(self, go_name: str) -> list[tuple[float, str, str | None]]:
        with self._lock:
            rows = self._db.execute("SELECT at, state, detail FROM history WHERE go_name = ? ORDER BY id", (go_name,))
            return [(r["at"], r["state"], r["detail"]) for r in rows]

    # -- responses ----------------------------------------------------------------------------

    def add_responses(self, folder: str, files: list[tuple[str, int, str]]) -> None:
        """Given responses (name, size, local path) durably copied, record them in one commit (before any delete)."""
        now = time.time()
        with self._tx() as db:
            db.executemany(
                "INSERT OR REPLACE INTO responses (folder, name, size, local_path, at) VALUES (?,?,?,?,?)",
                [(folder, name, size, path, now) for name, size, path in files],
            )

    def mark_responses_deleted(self, folder: str, names: list[str]) -> None:
        with self._tx() as db:
            db.executemany("UPDATE responses SET deleted_remote = 1 WHERE folder = ? AND name = ?",
                           [(folder, n) for n in names])

    def link_response(self, folder: str, name: str, kind: str, linked_set: str | None) -> None:
        with self._tx() as db:
            db.execute(
                "UPDATE responses SET kind = ?, linked_set = ? WHERE folder = ? AND name = ?",
                (kind, linked_set, folder, name),
            )

    def get_response(self, folder: str, name: str) -> ResponseRow | None:
        with self._lock:
            row = self._db.execute("SELECT * FROM responses WHERE folder = ? AND name = ?", (folder, name)).fetchone()
        return _response_row(row) if row else None

    def unlinked_responses(self) -> list[ResponseRow]:
        with self._lock:
            rows = self._db.execute("SELECT * FROM responses WHERE kind IS NULL ORDER BY at, name").fetchall()
        return [_response_row(r) for r in rows]

    # -- sequence numbers ---------------------------------------------------------------------

    def allocate_sequence(self, sender: str, date: str, env: str, taken: set[int] = frozenset()) -> int:  # type: ignore[assignment]
        """Given sender, date and environment, reserve and return the next free sequence number (atomic)."""
        with self._tx() as db:
            used = {r[0] for r in db.execute("SELECT seq FROM sequences WHERE sender=? AND date=? AND env=?", (sender, date, env))}
            used |= set(taken) | self._sequences_in_sets(db, sender, date, env)
            seq = next(i for i in range(1, 100000) if i not in used)  # StopIteration at 99999: a day's worth
            db.execute("INSERT INTO sequences (sender, date, env, seq) VALUES (?,?,?,?)", (sender, date, env, seq))
        return seq

    @staticmethod
    def _sequences_in_sets(db: sqlite3.Connection, sender: str, date: str, env: str) -> set[int]:
        pattern = f"GO.%.{sender}.{date}.%.{env}%"
        out = set()
        for (name,) in db.execute("SELECT go_name FROM sets WHERE go_name LIKE ?", (pattern,)):
            fields = name.split(".")
            if len(fields) >= 6 and fields[5] == env and fields[4].isdigit():
                out.add(int(fields[4]))
        return out


def _set_row(r: sqlite3.Row) -> SetRow:
    return SetRow(
        go_name=r["go_name"], env=r["env"], state=State(r["state"]), parts=json.loads(r["parts"]),
        created_at=r["created_at"], updated_at=r["updated_at"], reason=r["reason"], ticket=r["ticket"],
        data=json.loads(r["data"]), archived=bool(r["archived"]),
    )


def _response_row(r: sqlite3.Row) -> ResponseRow:
    return ResponseRow(
        folder=r["folder"], name=r["name"], size=r["size"], local_path=r["local_path"],
        deleted_remote=bool(r["deleted_remote"]), kind=r["kind"], linked_set=r["linked_set"],
    )


def today() -> str:
    return dt.date.today().strftime("%Y%m%d")
