"""The SQLite journal (WAL, synchronous=FULL): the embedded backend, one machine, the database in the spool.

The only writer of state. Busy and full-disk conditions leave as the backend-neutral JournalBusy and
JournalError; the state machine and the per-set data are in ``model.py``.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import structlog

from onss_relay import crash_point
from onss_relay.errors import IllegalTransition, JournalError
from onss_relay.journal.model import (
    DONE,
    Change,
    NewSet,
    SetData,
    SetRow,
    State,
    check_transition,
)
from onss_relay.journal.sqlite_keys import KeyTable
from onss_relay.journal.sqlite_responses import ResponseTable
from onss_relay.journal.sqlite_schema import (
    BUSY_TIMEOUT_MS,
    FROM_SENDER,
    LIGHT_SETS,
    NEXT_CHANGE,
    SCHEMA,
    SCHEMA_VERSION,
    add_missing_columns,
    neutral_errors,
    open_readonly,
    set_row,
)
from onss_relay.names import parse_name
from onss_relay.outcome import outcome_of

log = structlog.get_logger(__name__)

S = State
# every write to a set takes the next value of the change counter, in the same transaction (results follow it)


class SqliteJournal(ResponseTable, KeyTable):
    """Given a database path, keep the state of every set and response; safe to share between threads."""

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
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        with self._tx() as db:
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
            if version < SCHEMA_VERSION:  # 0.1 journals: same tables; set data is read as version 1 when loaded
                db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

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

    def add_set(self, go_name: str, env: str, parts: list[str], data: SetData | None = None) -> None:
        """Given a new set (or one quarantined before), record it as queued; raise IllegalTransition otherwise."""
        self.add_sets([NewSet(go_name, env, parts, data or SetData())])

    def add_sets(self, sets: list[NewSet]) -> None:
        """Given new sets (or ones quarantined before), record them as queued in one transaction."""
        now = time.time()
        with self._tx() as db:
            for n in sets:
                row = db.execute("SELECT state FROM sets WHERE go_name = ?", (n.go_name,)).fetchone()
                if row is not None:
                    check_transition(State(row["state"]), S.QUEUED)
                    db.execute(
                        "UPDATE sets SET state = ?, parts = ?, data = ?, updated_at = ?, reason = NULL, archived = 0,"
                        f" change_seq = {NEXT_CHANGE} WHERE go_name = ?",
                        (S.QUEUED, json.dumps(n.parts), n.data.to_json(), now, n.go_name),
                    )
                else:
                    db.execute(
                        "INSERT INTO sets (go_name, env, state, parts, created_at, updated_at, data, change_seq)"
                        f" VALUES (?,?,?,?,?,?,?,{NEXT_CHANGE})",
                        (n.go_name, n.env, S.QUEUED, json.dumps(n.parts), now, now, n.data.to_json()),
                    )
                db.execute("INSERT INTO history (go_name, state, at) VALUES (?,?,?)", (n.go_name, S.QUEUED, now))
                db.executemany(
                    "INSERT OR IGNORE INTO set_keys (kind, value, go_name) VALUES (?,?,?)",
                    [(kind, value, n.go_name) for kind, value in n.keys],
                )
        for n in sets:
            log.info("set_state", set=n.go_name, state=str(S.QUEUED), parts=len(n.parts))

    def add_failed(self, go_name: str, env: str, parts: list[str], reason: str) -> None:
        """Given a set refused before it was queued, record it as failed (for status) unless its name is known
        in another state; a set refused again (requeued, refused anew) gets the new reason."""
        now = time.time()
        with self._tx() as db:
            cur = db.execute(
                "INSERT OR IGNORE INTO sets (go_name, env, state, parts, created_at, updated_at, reason, archived,"
                f" change_seq) VALUES (?,?,?,?,?,?,?,1,{NEXT_CHANGE})",
                (go_name, env, S.FAILED, json.dumps(parts), now, now, reason),
            )
            added = cur.rowcount > 0
            if not added:
                cur = db.execute(
                    "UPDATE sets SET reason = ?, parts = ?, updated_at = ? WHERE go_name = ? AND state = ?"
                    " AND reason IS NOT ?",
                    (reason, json.dumps(parts), now, go_name, S.FAILED, reason),
                )
                added = cur.rowcount > 0
            if added:
                db.execute(
                    "INSERT INTO history (go_name, state, at, detail) VALUES (?,?,?,?)",
                    (go_name, S.FAILED, now, reason),
                )
        if added:
            log.info("set_state", set=go_name, state=str(S.FAILED), detail=reason)

    def transition(
        self,
        go_name: str,
        new: State,
        detail: str | None = None,
        archived: bool = False,
        *,
        ticket: str | None = None,
        reason: str | None = None,
        **data: Any,
    ) -> None:
        """Given a set and a new state, check and record the change (setting the SetData fields ``data``).

        ``archived`` records in the same transaction that the set's local files are already in sent/.
        """
        self.transition_many([Change(go_name, new, detail, archived, data, ticket, reason)])

    def transition_many(self, changes: list[Change]) -> None:
        """Given state changes of several sets, check and record them all in one transaction (one fsync).

        Either every change is recorded or none is (an illegal one raises and rolls the others back). A change
        with ``only_from`` is skipped when the set is no longer in one of those states.
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
                if c.only_from is not None and State(row["state"]) not in c.only_from:
                    log.debug("set_state_skipped", set=c.go_name, state=row["state"], wanted=str(c.state))
                    continue
                check_transition(State(row["state"]), c.state)
                merged = SetData.from_json(row["data"]).updated(c.data)
                db.execute(
                    "UPDATE sets SET state = ?, updated_at = ?, data = ?, ticket = COALESCE(?, ticket),"
                    " reason = COALESCE(?, reason), archived = MAX(archived, ?), outcome = ?,"
                    f" change_seq = {NEXT_CHANGE} WHERE go_name = ?",
                    (
                        c.state,
                        now,
                        merged.to_json(),
                        c.ticket,
                        c.reason,
                        int(c.archived),
                        outcome_of(c.go_name, c.state, merged),
                        c.go_name,
                    ),
                )
                db.execute(
                    "INSERT INTO history (go_name, state, at, detail) VALUES (?,?,?,?)",
                    (c.go_name, c.state, now, c.detail),
                )
                logged.append((c, row["state"], row["updated_at"]))
        # the one event per state change, whoever asked for it, with the time spent in the previous state
        for c, previous, updated_at in logged:
            log.info(
                "set_state",
                set=c.go_name,
                state=str(c.state),
                previous=previous,
                duration_ms=round((now - updated_at) * 1000),
                detail=c.detail,
            )

    def update_data(self, go_name: str, **data: Any) -> None:
        """Given a set, set the SetData fields ``data`` without changing its state."""
        with self._tx() as db:
            row = db.execute("SELECT state, data FROM sets WHERE go_name = ?", (go_name,)).fetchone()
            if row is None:
                raise IllegalTransition(f"unknown set {go_name}")
            merged = SetData.from_json(row["data"]).updated(data)
            outcome = outcome_of(go_name, State(row["state"]), merged)
            db.execute(
                f"UPDATE sets SET data = ?, updated_at = ?, outcome = ?, change_seq = {NEXT_CHANGE} WHERE go_name = ?",
                (merged.to_json(), time.time(), outcome, go_name),
            )

    def mark_archived(self, archived: dict[str, str]) -> None:
        """Given sent sets and the folder their files now sit in (GO name → sent dir), record that in one commit."""
        with self._tx() as db:
            for go_name, sent_dir in archived.items():
                row = db.execute("SELECT data FROM sets WHERE go_name = ?", (go_name,)).fetchone()
                data = SetData.from_json(row["data"]).updated({"sent_dir": sent_dir})
                db.execute(
                    f"UPDATE sets SET archived = 1, data = ?, change_seq = {NEXT_CHANGE} WHERE go_name = ?",
                    (data.to_json(), go_name),
                )

    def sets_with_sequence(self, sender: str, date: str, seq: str, env: str) -> list[SetRow]:
        with self._lock:
            start = f"{sender}.{date}.{seq}.{env}"
            rows = self._db.execute(
                f"SELECT * FROM sets WHERE {FROM_SENDER} >= ? AND {FROM_SENDER} < ? AND state != 'failed'",
                (start, start + "~"),  # "~" sorts after every character of a name: an indexed prefix search
            ).fetchall()
        out = []
        for r in rows:
            with contextlib.suppress(ValueError):
                n = parse_name(r["go_name"])
                if (n.sender, n.date, n.seq, n.env.value) == (sender, date, seq, env):
                    out.append(set_row(r))
        return out

    def get_set(self, go_name: str) -> SetRow | None:
        with self._lock:
            row = self._db.execute("SELECT * FROM sets WHERE go_name = ?", (go_name,)).fetchone()
        return set_row(row) if row else None

    def sets_in(self, *states: State, limit: int | None = None) -> list[SetRow]:
        """Given states, return the sets in them, oldest first."""
        marks = ",".join("?" * len(states))
        sql = f"SELECT * FROM sets WHERE state IN ({marks}) ORDER BY created_at, go_name"
        if limit:
            sql += f" LIMIT {int(limit)}"
        with self._lock:
            return [set_row(r) for r in self._db.execute(sql, [str(s) for s in states])]

    def recent_sets(self, limit: int = 50, light: bool = False) -> list[SetRow]:
        """Return the sets written last, newest first; ``light``: each with only its last notification, without
        its workers and anomalies (what a table shows: its summary and outcome), read by SQLite, not by us."""
        with self._lock:
            if light:
                with contextlib.suppress(sqlite3.OperationalError):  # a journal from before outcomes, read-only
                    rows = self._db.execute(LIGHT_SETS, (limit,)).fetchall()
                    return [set_row(r) for r in rows]
            rows = self._db.execute("SELECT * FROM sets ORDER BY updated_at DESC LIMIT ?", (limit,)).fetchall()
        return [set_row(r) for r in rows]

    def sets_changed_after(self, change: int, limit: int | None = None) -> list[SetRow]:
        """Given a value of the change counter, return the sets written after it (at most ``limit``), in the order
        of their change."""
        with self._lock:
            rows = self._db.execute(
                "SELECT * FROM sets WHERE change_seq > ? ORDER BY change_seq LIMIT ?", (change, limit or -1)
            ).fetchall()
        return [set_row(r) for r in rows]

    def sets_updated_until(self, until: float, after: tuple[float, str], limit: int) -> list[SetRow]:
        """Given a time, a position (updated_at, GO name) and a page size, return up to ``limit`` sets last
        written at or before ``until`` and past that position, in (updated_at, GO name) order."""
        with self._lock:
            rows = self._db.execute(
                "SELECT * FROM sets WHERE updated_at <= ? AND (updated_at, go_name) > (?, ?)"
                " ORDER BY updated_at, go_name LIMIT ?",
                (until, *after, limit),
            ).fetchall()
        return [set_row(r) for r in rows]

    def last_change(self) -> int:
        """Return the change counter's value now (0 for an empty journal)."""
        with self._lock:
            return int(self._db.execute("SELECT COALESCE(MAX(change_seq), 0) FROM sets").fetchone()[0])

    def unarchived_done(self) -> list[SetRow]:
        """Return sets whose GO went out but whose local files were not yet moved to sent/."""
        with self._lock:
            rows = self._db.execute(
                f"SELECT * FROM sets WHERE archived = 0 AND state IN ({','.join('?' * len(DONE))})",
                [str(s) for s in DONE],
            ).fetchall()
        return [set_row(r) for r in rows]

    def outcome_counts(self) -> dict[str, int]:
        """Return how many sets have each outcome (a set never answered is pending, a quarantined one
        quarantined; sets of an older journal count as pending until their next write)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT COALESCE(outcome, CASE state WHEN 'failed' THEN 'quarantined' ELSE 'pending' END), COUNT(*)"
                " FROM sets GROUP BY 1"
            )
            return {r[0]: r[1] for r in rows}

    def counts(self) -> dict[str, int]:
        with self._lock:
            return {r[0]: r[1] for r in self._db.execute("SELECT state, COUNT(*) FROM sets GROUP BY state")}

    def history(self, go_name: str) -> list[tuple[float, str, str | None]]:
        with self._lock:
            rows = self._db.execute("SELECT at, state, detail FROM history WHERE go_name = ? ORDER BY id", (go_name,))
            return [(r["at"], r["state"], r["detail"]) for r in rows]

    # -- sequence numbers ---------------------------------------------------------------------

    def allocate_sequence(self, sender: str, date: str, env: str, taken: set[int] = frozenset()) -> int:  # type: ignore[assignment]
        """Given sender, date and environment, reserve and return the next free sequence number (atomic)."""
        with self._tx() as db:
            used = {
                r[0]
                for r in db.execute(
                    "SELECT seq FROM sequences WHERE sender=? AND date=? AND env=?", (sender, date, env)
                )
            }
            used |= set(taken) | self._sequences_in_sets(db, sender, date, env)
            seq = next(i for i in range(1, 100000) if i not in used)  # StopIteration at 99999: a day's worth
            db.execute("INSERT INTO sequences (sender, date, env, seq) VALUES (?,?,?,?)", (sender, date, env, seq))
        return seq

    @staticmethod
    def _sequences_in_sets(db: sqlite3.Connection, sender: str, date: str, env: str) -> set[int]:
        """Given sender, date and environment, return the numeric sequences of sets the journal knows (any app)."""
        out = set()
        start = f"{sender}.{date}."
        for (name,) in db.execute(
            f"SELECT go_name FROM sets WHERE {FROM_SENDER} >= ? AND {FROM_SENDER} < ?", (start, start + "~")
        ):
            with contextlib.suppress(ValueError):
                n = parse_name(name)
                if n.env == env and n.seq.isdigit():
                    out.add(int(n.seq))
        return out
