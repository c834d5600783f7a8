"""The journal's responses table (both backends): what the poller mirrored, whether it was deleted remotely, and what
each response was linked to (or why it is malformed). Part of SqlJournal (sql_journal.py); the backend
owns the connection and its transactions."""

from __future__ import annotations

import contextlib
import time

from onss_relay.journal.model import WAITING_KINDS, ResponseRow
from onss_relay.journal.sql_rows import Db, response_row

UNMATCHED = "linked_set IS NULL AND kind IS NOT NULL AND kind NOT IN (?, ?)"  # answers kept without a set
NOT_ANSWERS = ("signature", "marker")  # mirrored files that answer nothing by themselves
# the same answers, as literals: the condition of the index retention walks them by (responses_unmatched_at), which
# SQLite uses only when a query states its very terms
UNMATCHED_LITERAL = "COALESCE(linked_set, '') = '' AND kind NOT IN ('signature', 'marker')"
PRUNED = "its file was pruned after retention.inbox_days"


class ResponseTable:
    """The response methods of SqlJournal; its connection, lock and transactions are the backend's."""

    def _tx(self) -> contextlib.AbstractContextManager[Db]:
        raise NotImplementedError  # the backend's

    def _read(self) -> contextlib.AbstractContextManager[Db]:
        raise NotImplementedError  # the backend's

    _response_position = "rowid"  # a column numbering responses in the order recorded (PostgreSQL: a serial)

    def add_responses(self, folder: str, files: list[tuple[str, int, str]]) -> None:
        """Given responses (name, size, local path) durably copied, record them in one commit (before any delete)."""
        now = time.time()
        with self._tx() as db:  # a response mirrored again replaces its row: delete, then insert (both dialects)
            db.executemany("DELETE FROM responses WHERE folder = ? AND name = ?", [(folder, n) for n, _, _ in files])
            db.executemany(
                "INSERT INTO responses (folder, name, size, local_path, at) VALUES (?,?,?,?,?)",
                [(folder, name, size, path, now) for name, size, path in files],
            )

    def mark_responses_deleted(self, folder: str, names: list[str]) -> None:
        """Given responses of a remote folder, record that they were deleted there (after their local copy)."""
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
        """Given a remote folder and a response name, return its row, or None if it was never mirrored."""
        with self._read() as db:
            row = db.execute("SELECT * FROM responses WHERE folder = ? AND name = ?", (folder, name)).fetchone()
        return response_row(row) if row else None

    def unlinked_responses(self) -> list[ResponseRow]:
        """Return the responses to link: never read yet, or waiting for their set (a notification before its ACRF)."""
        with self._read() as db:
            rows = db.execute(
                "SELECT * FROM responses WHERE kind IS NULL OR kind IN (?, ?) ORDER BY at, name", WAITING_KINDS
            ).fetchall()
        return [response_row(r) for r in rows]

    def unlinked_page(self, after: int, limit: int) -> list[tuple[int, ResponseRow]]:
        """Given a position (0: from the start) and a page size, return up to ``limit`` responses never read yet
        past that position, each with its position, in the order they were mirrored."""
        at = self._response_position
        with self._read() as db:
            rows = db.execute(
                f"SELECT {at} AS position, * FROM responses WHERE kind IS NULL AND {at} > ? ORDER BY {at} LIMIT ?",
                (after, limit),
            ).fetchall()
        return [(int(r["position"]), response_row(r)) for r in rows]

    def waiting_page(self, after: int, limit: int, before: int | None = None) -> list[tuple[int, ResponseRow]]:
        """Given a position (0: from the start), a page size and optionally a position to stop before, return
        up to ``limit`` responses waiting for their set (WAITING_KINDS) between them, with their positions, in
        the order they were mirrored."""
        at = self._response_position
        with self._read() as db:
            rows = db.execute(
                f"SELECT {at} AS position, * FROM responses WHERE kind IN (?, ?) AND {at} > ? AND {at} < ?"
                f" ORDER BY {at} LIMIT ?",
                (*WAITING_KINDS, after, 2**62 if before is None else before, limit),
            ).fetchall()
        return [(int(r["position"]), response_row(r)) for r in rows]

    def responses_linked_to(self, go_name: str) -> list[ResponseRow]:
        """Given a set, return the responses linked to it (its ACRFs, notifications, other answers)."""
        with self._read() as db:
            rows = db.execute("SELECT * FROM responses WHERE linked_set = ?", (go_name,)).fetchall()
        return [response_row(r) for r in rows]

    def unmatched_responses(self, limit: int | None = None, malformed: bool | None = None) -> list[ResponseRow]:
        """Given a limit (None: every one) and which (malformed True: those that could not be read, False: the
        others, None: both), return the answers kept without a set (other applications, sets sent by another
        tool, malformed ones): the newest ``limit`` of them, oldest first."""
        where, args = UNMATCHED, list[object](NOT_ANSWERS)
        if malformed is not None:
            where += " AND kind = ?" if malformed else " AND kind <> ?"
            args.append("malformed")
        sql = f"SELECT * FROM responses WHERE {where} ORDER BY at DESC, name DESC"
        if limit is not None:
            sql, args = sql + " LIMIT ?", [*args, limit]
        with self._read() as db:
            rows = db.execute(sql, args).fetchall()
        return [response_row(r) for r in reversed(rows)]

    def unmatched_counts(self) -> dict[str, int]:
        """Return how many answers are kept without a set, by kind (``malformed``, ``notification`` …), counted
        by the database: a year of them is never read to be counted."""
        with self._read() as db:
            rows = db.execute(
                f"SELECT kind, COUNT(*) AS n FROM responses WHERE {UNMATCHED} GROUP BY kind", NOT_ANSWERS
            ).fetchall()
        return {str(r["kind"]): int(r["n"]) for r in rows}

    def unmatched_until(
        self, until: float, after: tuple[float, str, str], limit: int
    ) -> list[tuple[float, ResponseRow]]:
        """Given a time, a position (recorded at, folder, name) and a page size, return up to ``limit`` answers
        linked to no set recorded at or before ``until``, and before any answer not read yet (reading it may
        leave it linked to none), past that position, in that order, each with when it was recorded."""
        with self._read() as db:
            rows = db.execute(
                f"SELECT * FROM responses WHERE {UNMATCHED_LITERAL} AND at <= ?"
                " AND at < COALESCE((SELECT MIN(at) FROM responses WHERE kind IS NULL), ?)"
                " AND (at, folder, name) > (?, ?, ?) ORDER BY at, folder, name LIMIT ?",
                (until, until + 1, *after, limit),
            ).fetchall()
        return [(float(r["at"]), response_row(r)) for r in rows]

    def mark_pruned(self, folder: str, name: str) -> bool:
        """Given an answer linked to no set whose file retention removes, record so in its detail (a waiting one
        is given up: it is not read again) unless it was linked meanwhile; return whether it was still unlinked."""
        with self._tx() as db:
            return bool(
                db.execute(
                    "UPDATE responses SET detail = CASE WHEN detail IS NULL OR detail = '' THEN ? WHEN detail LIKE ?"
                    " THEN detail ELSE detail || '; ' || ? END,"  # walked again (a lost cursor): said once
                    " kind = CASE kind WHEN ? THEN 'notification' WHEN ? THEN 'other' ELSE kind END"
                    f" WHERE folder = ? AND name = ? AND {UNMATCHED_LITERAL}",
                    (PRUNED, f"%{PRUNED}%", PRUNED, *WAITING_KINDS, folder, name),
                ).rowcount
                == 1
            )
