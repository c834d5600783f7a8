"""The journal's set_keys table (both backends): every name a declaration set is known by besides its GO name, so that
any answer naming it finds it. Kinds: ``ticket`` (an ONSS ticket: the ACRF's, a notification's file ticket,
the declaration's own ticket), ``original_form`` (Identification|date|hour of a Form the set's FI holds) and
``sender_ref`` (the sender's own reference, origin 1). Part of SqlJournal (sql_journal.py)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterable

from onss_relay.journal.model import SetRow
from onss_relay.journal.sql_rows import NEXT_CHANGE, Db, batches, marks, set_row


class KeyTable:
    """The key methods of SqlJournal; its connection, lock and transactions are the backend's."""

    _old_journal_errors: tuple[type[Exception], ...]  # a table missing from a journal read-only and old

    def _tx(self) -> contextlib.AbstractContextManager[Db]:
        raise NotImplementedError  # the backend's

    def _read(self) -> contextlib.AbstractContextManager[Db]:
        raise NotImplementedError  # the backend's

    def add_keys(self, go_name: str, keys: Iterable[tuple[str, str]]) -> None:
        """Given a set and (kind, value) keys it is known by, record those it did not have."""
        with self._tx() as db:
            db.executemany(
                "INSERT OR IGNORE INTO set_keys (kind, value, go_name) VALUES (?,?,?)",
                [(kind, value, go_name) for kind, value in keys if value],
            )

    def keys_of(self, go_name: str) -> list[tuple[str, str]]:
        """Given a set, return its (kind, value) keys in the order they were recorded (the backends number them
        in a ``rowid`` column)."""
        with self._read() as db:
            try:
                rows = db.execute(
                    "SELECT kind, value FROM set_keys WHERE go_name = ? ORDER BY rowid", (go_name,)
                ).fetchall()
            except self._old_journal_errors:  # a journal of an older version, opened read-only: no such table
                return []
            return [(r["kind"], r["value"]) for r in rows]

    def keys_of_sets(self, go_names: list[str]) -> dict[str, list[tuple[str, str]]]:
        """Given sets, return each one's (kind, value) keys in the order they were recorded, in one read per
        READ_BATCH sets."""
        out: dict[str, list[tuple[str, str]]] = {name: [] for name in go_names}
        with self._read() as db:
            for batch in batches(go_names):
                try:
                    rows = db.execute(
                        f"SELECT go_name, kind, value FROM set_keys WHERE go_name IN ({marks(batch)}) ORDER BY rowid",
                        batch,
                    ).fetchall()
                except self._old_journal_errors:  # a journal of an older version, opened read-only: no such table
                    return out
                for r in rows:
                    out[r["go_name"]].append((r["kind"], r["value"]))
        return out

    def sets_by_key(self, kind: str, value: str) -> list[SetRow]:
        """Given a key, return every set known by it (a sender's reference may name several)."""
        with self._read() as db:
            rows = db.execute(
                "SELECT sets.* FROM set_keys JOIN sets USING (go_name) WHERE kind = ? AND value = ? ORDER BY go_name",
                (kind, value),
            ).fetchall()
        return [set_row(r) for r in rows]

    def set_by_ticket(self, ticket: str) -> SetRow | None:
        """Given an ONSS ticket of any family (ACRF, notification file, the declaration's own), return its set."""
        with self._read() as db:
            row = db.execute("SELECT * FROM sets WHERE ticket = ?", (ticket,)).fetchone()
        if row is not None:
            return set_row(row)
        found = self.sets_by_key("ticket", ticket)
        return found[0] if found else None

    def add_note(self, go_name: str, detail: str) -> None:
        """Given a set, add a line to its history in its current state (an answer that changes no state)."""
        with self._tx() as db:
            row = db.execute("SELECT state FROM sets WHERE go_name = ?", (go_name,)).fetchone()
            if row is None:
                return
            now = time.time()
            db.execute(
                "INSERT INTO history (go_name, state, at, detail) VALUES (?,?,?,?)",
                (go_name, row["state"], now, detail),
            )
            db.execute(f"UPDATE sets SET change_seq = {NEXT_CHANGE} WHERE go_name = ?", (go_name,))
