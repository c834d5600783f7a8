"""The journal's rules, written once for both backends: the state machine checked on every change, a set's
typed data merged and versioned, its outcome, the change counter, the sequence-reuse check of ACRF-133 and the
allocation of free sequences. The backends (sqlite.py, postgres.py) own the connection, the transactions and
their errors; they run the same SQL (SQLite's dialect, translated for PostgreSQL by postgres_db.py).
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from pathlib import Path

import structlog

from onss_relay.errors import IllegalTransition
from onss_relay.journal.data_change import DataChange
from onss_relay.journal.model import (
    DATA_VERSION,
    DONE,
    Change,
    NewSet,
    SequenceKey,
    SetData,
    SetRow,
    State,
    check_transition,
)
from onss_relay.journal.sql_keys import KeyTable
from onss_relay.journal.sql_responses import ResponseTable
from onss_relay.journal.sql_rows import NEXT_CHANGE, Db, batches, marks, set_row
from onss_relay.journal.sql_sequences import SequenceTable
from onss_relay.journal.sql_workers import WorkerTable
from onss_relay.names import parse_name
from onss_relay.outcome import outcome_of

log = structlog.get_logger(__name__)

S = State
NO_CHANGE = DataChange()
CURRENT_DATA = f'{{"version": {DATA_VERSION}, '  # how SetData.to_json's text of this version starts
# every write to a set takes the next value of the change counter, in the same transaction (results follow it)


class SqlJournal(ResponseTable, KeyTable, WorkerTable, SequenceTable):
    """The Journal of both SQL backends; a backend sets ``path`` and provides ``_tx()`` (one transaction, joined
    by inner ones), ``_read()`` (the connection for one read), ``atomic()`` and ``close()``."""

    path: Path | str  # where the journal is, for messages: a file, or a PostgreSQL URL without password
    _light_sets_sql: str | None = None  # a query for recent_sets(light=True), in the backend's own dialect
    _old_journal_errors: tuple[type[Exception], ...] = ()
    # a GO name from its sender on (GO.CCCC. is 8 characters: SSSSSS.YYYYMMDD.NNNNN.E…), in a byte order both
    # backends index (sets_sequence): a prefix search is a range on it, "~" sorting after every name character
    _from_sender = "substr(go_name, 9)"

    @contextlib.contextmanager
    def savepoint(self) -> Iterator[None]:
        """Run the block in a savepoint of the current transaction (either backend): its writes are undone if it raises."""
        with self._tx() as db:
            db.execute("SAVEPOINT one_block")
            try:
                yield
            except BaseException:
                with contextlib.suppress(Exception):
                    db.execute("ROLLBACK TO SAVEPOINT one_block")
                    db.execute("RELEASE SAVEPOINT one_block")
                raise
            db.execute("RELEASE SAVEPOINT one_block")

    # -- declaration sets ---------------------------------------------------------------------

    def add_set(self, go_name: str, env: str, parts: list[str], data: SetData | None = None) -> None:
        """Given a new set (or one quarantined before), record it as queued; raise IllegalTransition otherwise."""
        self.add_sets([NewSet(go_name, env, parts, data or SetData())])

    def add_sets(self, sets: list[NewSet]) -> None:
        """Given new sets (or ones quarantined before), record them as queued in one transaction: one read of
        those already known, then each kind of write as one batch (few round trips on PostgreSQL)."""
        now = time.time()
        with self._tx() as db:
            known = {name: row[0] for name, row in self._rows_of(db, [n.go_name for n in sets]).items()}
            again, new = [], []
            for n in sets:
                if n.go_name in known:
                    check_transition(known[n.go_name], S.QUEUED)
                    again.append((S.QUEUED, json.dumps(n.parts), n.data.to_json(), now, n.go_name))
                else:
                    new.append((n.go_name, n.env, S.QUEUED, json.dumps(n.parts), now, now, n.data.to_json()))
                known[n.go_name] = S.QUEUED  # the same name twice in one batch is refused, as one by one
            db.executemany(
                "UPDATE sets SET state = ?, parts = ?, data = ?, updated_at = ?, reason = NULL, archived = 0,"
                f" change_seq = {NEXT_CHANGE} WHERE go_name = ?",
                again,
            )
            db.executemany(
                "INSERT INTO sets (go_name, env, state, parts, created_at, updated_at, data, change_seq)"
                f" VALUES (?,?,?,?,?,?,?,{NEXT_CHANGE})",
                new,
            )
            db.executemany(
                "INSERT INTO history (go_name, state, at) VALUES (?,?,?)", [(n.go_name, S.QUEUED, now) for n in sets]
            )
            db.executemany(
                "INSERT OR IGNORE INTO set_keys (kind, value, go_name) VALUES (?,?,?)",
                [(kind, value, n.go_name) for n in sets for kind, value in n.keys],
            )
        said = log.bind()  # made once for the batch, not per line (log.py, above setup_logging)
        for n in sets:
            said.info("set_state", set=n.go_name, state=str(S.QUEUED), parts=len(n.parts))

    @staticmethod
    def _rows_of(db: Db, names: list[str]) -> dict[str, tuple[State, float, str]]:
        """Given a transaction and GO names, return (state, updated_at, data JSON) of those the journal knows,
        read in a few statements (IN lists of at most 500 names)."""
        out: dict[str, tuple[State, float, str]] = {}
        for chunk in batches(list(dict.fromkeys(names))):
            sql = f"SELECT go_name, state, updated_at, data FROM sets WHERE go_name IN ({marks(chunk)})"
            for r in db.execute(sql, chunk):
                out[r["go_name"]] = (State(r["state"]), float(r["updated_at"]), r["data"])
        return out

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
                    " AND reason IS DISTINCT FROM ?",
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
        data: DataChange = NO_CHANGE,
    ) -> None:
        """Given a set and a new state, check and record the change (setting the SetData fields ``data`` sets).

        ``archived`` records in the same transaction that the set's local files are already in sent/.
        """
        self.transition_many([Change(go_name, new, detail, archived, data, ticket, reason)])

    def transition_many(self, changes: list[Change]) -> None:
        """Given state changes of several sets, check and record them all in one transaction (one fsync).

        Either every change is recorded or none is (an illegal one raises and rolls the others back). A change
        with ``only_from`` is skipped when the set is no longer in one of those states. The sets are read once
        and written as one batch, a later change of the same set seeing the earlier one.
        """
        if not changes:
            return
        now = time.time()
        with self._tx() as db:
            stored = self._rows_of(db, [c.go_name for c in changes])
            current = {name: (state, at, SetData.from_json(data)) for name, (state, at, data) in stored.items()}
            updates, history, logged = [], [], []
            for c in changes:
                if c.go_name not in current:
                    raise IllegalTransition(f"unknown set {c.go_name}")
                state, updated_at, data = current[c.go_name]
                if c.only_from is not None and state not in c.only_from:
                    log.debug("set_state_skipped", set=c.go_name, state=str(state), wanted=str(c.state))
                    continue
                check_transition(state, c.state)
                merged = c.data.applied_to(data)
                current[c.go_name] = (c.state, now, merged)
                outcome = outcome_of(c.go_name, c.state, merged)
                text = stored[c.go_name][2]
                if merged is not data or not (text and text.startswith(CURRENT_DATA)):  # the gates change no data: kept
                    text = merged.to_json()
                    stored[c.go_name] = (c.state, now, text)
                updates.append((c.state, now, text, c.ticket, c.reason, int(c.archived), outcome, c.go_name))
                history.append((c.go_name, c.state, now, c.detail))
                logged.append((c, str(state), updated_at))
            db.executemany(
                "UPDATE sets SET state = ?, updated_at = ?, data = ?, ticket = COALESCE(?, ticket),"
                " reason = COALESCE(?, reason), archived = CASE WHEN ? = 1 THEN 1 ELSE archived END, outcome = ?,"
                f" change_seq = {NEXT_CHANGE} WHERE go_name = ?",
                updates,
            )
            db.executemany("INSERT INTO history (go_name, state, at, detail) VALUES (?,?,?,?)", history)
        # the one event per state change, whoever asked for it, with the time spent in the previous state
        said = log.bind()  # made once for the batch, not per line (log.py, above setup_logging)
        for c, previous, updated_at in logged:
            said.info(
                "set_state",
                set=c.go_name,
                state=str(c.state),
                previous=previous,
                duration_ms=round((now - updated_at) * 1000),
                detail=c.detail,
            )

    def update_data(self, go_name: str, change: DataChange) -> None:
        """Given a set and a change of its data, set the SetData fields it sets without changing its state."""
        with self._tx() as db:
            row = db.execute("SELECT state, data FROM sets WHERE go_name = ?", (go_name,)).fetchone()
            if row is None:
                raise IllegalTransition(f"unknown set {go_name}")
            merged = change.applied_to(SetData.from_json(row["data"]))
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
                data = DataChange(sent_dir=sent_dir).applied_to(SetData.from_json(row["data"]))
                db.execute(
                    f"UPDATE sets SET archived = 1, data = ?, change_seq = {NEXT_CHANGE} WHERE go_name = ?",
                    (data.to_json(), go_name),
                )

    def sets_with_sequence(self, sender: str, date: str, seq: str, env: str) -> list[SetRow]:
        return self.sets_with_sequences([(sender, date, seq, env)])[(sender, date, seq, env)]

    def sets_with_sequences(self, sequences: list[SequenceKey]) -> dict[SequenceKey, list[SetRow]]:
        """Given (sender, date, sequence, environment) tuples, return the sets not failed using each, read with
        one statement per READ_BATCH of them (a range of the sets_sequence index each)."""
        out: dict[SequenceKey, list[SetRow]] = {s: [] for s in sequences}
        wanted = list(dict.fromkeys(".".join(s) for s in sequences))
        with self._read() as db:
            for chunk in batches(wanted):
                ranges = " OR ".join([f"({self._from_sender} >= ? AND {self._from_sender} < ?)"] * len(chunk))
                args = [bound for start in chunk for bound in (start, start + "~")]
                rows = db.execute(f"SELECT * FROM sets WHERE ({ranges}) AND state != 'failed'", args).fetchall()
                for r in rows:
                    with contextlib.suppress(ValueError):
                        n = parse_name(r["go_name"])
                        key = (n.sender, n.date, n.seq, n.env.value)
                        if key in out:
                            out[key].append(set_row(r))
        return out

    def get_set(self, go_name: str) -> SetRow | None:
        with self._read() as db:
            row = db.execute("SELECT * FROM sets WHERE go_name = ?", (go_name,)).fetchone()
        return set_row(row) if row else None

    def sets_in(self, *states: State, limit: int | None = None, changed_after: int | None = None) -> list[SetRow]:
        """Given states, return the sets in them, oldest first; with ``changed_after``, those written after it in
        the order of their change (a queue refilled a page at a time)."""
        args: list[object] = [str(s) for s in states]
        order = "created_at, go_name"
        since = ""
        if changed_after is not None:
            since, order = " AND change_seq > ?", "change_seq"
            args.append(int(changed_after))
        sql = f"SELECT * FROM sets WHERE state IN ({marks(list(states))}){since} ORDER BY {order}"
        if limit:
            sql += f" LIMIT {int(limit)}"
        with self._read() as db:
            return [set_row(r) for r in db.execute(sql, args)]

    def sets_by_names(self, go_names: list[str]) -> dict[str, SetRow]:
        """Given GO names, return the known sets among them by name, in one read per READ_BATCH names."""
        out: dict[str, SetRow] = {}
        with self._read() as db:
            for batch in batches(go_names):
                rows = db.execute(f"SELECT * FROM sets WHERE go_name IN ({marks(batch)})", batch).fetchall()
                out.update((r["go_name"], set_row(r)) for r in rows)
        return out

    def recent_sets(self, limit: int = 50, light: bool = False) -> list[SetRow]:
        """Return the sets written last, newest first; ``light``: each with only its last notification, without
        its workers and anomalies (what a table shows: its summary and outcome), where the backend can trim them."""
        with self._read() as db:
            if light and self._light_sets_sql:
                with contextlib.suppress(*self._old_journal_errors):  # a journal from before outcomes, read-only
                    rows = db.execute(self._light_sets_sql, (limit,)).fetchall()
                    return [set_row(r) for r in rows]
            rows = db.execute("SELECT * FROM sets ORDER BY updated_at DESC LIMIT ?", (limit,)).fetchall()
        return [set_row(r) for r in rows]

    def sets_changed_after(
        self, change: int, limit: int | None = None, without_data: frozenset[State] = frozenset()
    ) -> list[SetRow]:
        """Given a value of the change counter, return the sets written after it (at most ``limit``), in the order
        of their change; those in a state of ``without_data`` with an empty SetData (not parsed)."""
        sql = "SELECT * FROM sets WHERE change_seq > ? ORDER BY change_seq"
        if limit:
            sql += f" LIMIT {int(limit)}"
        with self._read() as db:
            rows = db.execute(sql, (change,)).fetchall()
        return [set_row(r, bare=r["state"] in without_data) for r in rows]

    def sets_updated_until(self, until: float, after: tuple[float, str], limit: int) -> list[SetRow]:
        """Given a time, a position (updated_at, GO name) and a page size, return up to ``limit`` sets last
        written at or before ``until`` and past that position, in (updated_at, GO name) order."""
        with self._read() as db:
            rows = db.execute(
                "SELECT * FROM sets WHERE updated_at <= ? AND (updated_at > ? OR (updated_at = ? AND go_name > ?))"
                " ORDER BY updated_at, go_name LIMIT ?",
                (until, after[0], after[0], after[1], limit),
            ).fetchall()
        return [set_row(r) for r in rows]

    def last_change(self) -> int:
        """Return the change counter's value now (0 for an empty journal)."""
        with self._read() as db:
            return int(db.execute("SELECT COALESCE(MAX(change_seq), 0) FROM sets").fetchone()[0])

    def unarchived_done(self) -> list[SetRow]:
        """Return sets whose GO went out but whose local files were not yet moved to sent/."""
        with self._read() as db:
            rows = db.execute(
                f"SELECT * FROM sets WHERE archived = 0 AND state IN ({','.join('?' * len(DONE))})",
                [str(s) for s in DONE],
            ).fetchall()
        return [set_row(r) for r in rows]

    def outcome_counts(self) -> dict[str, int]:
        """Return how many sets have each outcome (a set never answered is pending, a quarantined one
        quarantined; sets of an older journal count as pending until their next write)."""
        with self._read() as db:
            rows = db.execute(
                "SELECT COALESCE(outcome, CASE state WHEN 'failed' THEN 'quarantined' ELSE 'pending' END), COUNT(*)"
                " FROM sets GROUP BY 1"
            )
            return {r[0]: r[1] for r in rows}

    def counts(self) -> dict[str, int]:
        with self._read() as db:
            return {r[0]: r[1] for r in db.execute("SELECT state, COUNT(*) FROM sets GROUP BY state")}

    def history(self, go_name: str) -> list[tuple[float, str, str | None]]:
        with self._read() as db:
            rows = db.execute("SELECT at, state, detail FROM history WHERE go_name = ? ORDER BY id", (go_name,))
            return [(r["at"], r["state"], r["detail"]) for r in rows]

    def histories(self, go_names: list[str]) -> dict[str, list[tuple[float, str, str | None]]]:
        """Given sets, return each one's history, oldest first, in one read per READ_BATCH sets."""
        out: dict[str, list[tuple[float, str, str | None]]] = {name: [] for name in go_names}
        with self._read() as db:
            for batch in batches(go_names):
                rows = db.execute(
                    f"SELECT go_name, at, state, detail FROM history WHERE go_name IN ({marks(batch)}) ORDER BY id",
                    batch,
                ).fetchall()
                for r in rows:
                    out[r["go_name"]].append((r["at"], r["state"], r["detail"]))
        return out
