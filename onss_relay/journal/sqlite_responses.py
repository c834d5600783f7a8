"""The SQLite journal's responses table: what the poller mirrored, whether it was deleted remotely, and what
each response was linked to (or why it is malformed). Part of SqliteJournal (sqlite.py), which owns the
connection and its transactions."""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time

from onss_relay.journal.model import WAITING_KINDS, ResponseRow
from onss_relay.journal.sqlite_schema import response_row


class ResponseTable:
    """The response methods of SqliteJournal; its connection, lock and transactions are SqliteJournal's."""

    _db: sqlite3.Connection
    _lock: threading.RLock

    def _tx(self) -> contextlib.AbstractContextManager[sqlite3.Connection]:
        raise NotImplementedError  # SqliteJournal._tx

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
            db.executemany(
                "UPDATE responses SET deleted_remote = 1 WHERE folder = ? AND name = ?", [(folder, n) for n in names]
            )

    def link_response(
        self, folder: str, name: str, kind: str, linked_set: str | None, detail: str | None = None
    ) -> None:
        """Given a response, record what it is, the set it answers and (for a malformed one) why it is."""
        with self._tx() as db:
            db.execute(
                "UPDATE responses SET kind = ?, linked_set = ?, detail = ? WHERE folder = ? AND name = ?",
                (kind, linked_set, detail, folder, name),
            )

    def get_response(self, folder: str, name: str) -> ResponseRow | None:
        with self._lock:
            row = self._db.execute("SELECT * FROM responses WHERE folder = ? AND name = ?", (folder, name)).fetchone()
        return response_row(row) if row else None

    def unlinked_responses(self) -> list[ResponseRow]:
        """Return the responses to link: never read yet, or waiting for their set (a notification before its ACRF)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT * FROM responses WHERE kind IS NULL OR kind IN (?, ?) ORDER BY at, name", WAITING_KINDS
            ).fetchall()
        return [response_row(r) for r in rows]

    def unlinked_page(self, after: int, limit: int) -> list[tuple[int, ResponseRow]]:
        """Given a position (0: from the start) and a page size, return up to ``limit`` responses never read yet
        past that position, each with its position, in the order they were mirrored."""
        with self._lock:
            rows = self._db.execute(
                "SELECT rowid, * FROM responses WHERE kind IS NULL AND rowid > ? ORDER BY rowid LIMIT ?",
                (after, limit),
            ).fetchall()
        return [(int(r["rowid"]), response_row(r)) for r in rows]

    def responses_linked_to(self, go_name: str) -> list[ResponseRow]:
        """Given a set, return the responses linked to it (its ACRFs, notifications, other answers)."""
        with self._lock:
            rows = self._db.execute("SELECT * FROM responses WHERE linked_set = ?", (go_name,)).fetchall()
        return [response_row(r) for r in rows]

    def unmatched_responses(self) -> list[ResponseRow]:
        """Return the answers kept without a set: other applications, sets sent by another tool, malformed ones."""
        with self._lock:
            rows = self._db.execute(
                "SELECT * FROM responses WHERE linked_set IS NULL AND kind IS NOT NULL AND kind NOT IN (?, ?)"
                " ORDER BY at, name",
                ("signature", "marker"),
            ).fetchall()
        return [response_row(r) for r in rows]
