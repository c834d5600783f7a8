"""The journal's set_workers table (both backends): every worker (INSS) of every notification Form and its
outcome, so that "this worker's Dimona" is one look-up, also for the workers a notification record does not keep
in detail; and the status page's reads of the sets (per day, per outcome, by name, the overdue candidates).
Part of SqlJournal (sql_journal.py)."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
from collections.abc import Iterable, Sequence

from onss_relay.journal.model import SetRow
from onss_relay.journal.sql_rows import Db, set_row

# whole UTC days since the epoch, as each backend's sets_day index holds them (SQLite's CAST truncates,
# PostgreSQL's rounds: hence FLOOR there)
SQLITE_DAY = "CAST(created_at / 86400 AS INTEGER)"
POSTGRES_DAY = "CAST(FLOOR(created_at / 86400) AS INTEGER)"

NeverLate = Sequence[tuple[str, str]]  # (application code, env): acknowledged sets of these are never late


class WorkerTable:
    """The worker-index and status-page methods of SqlJournal; its connection and transactions are the
    backend's."""

    _old_journal_errors: tuple[type[Exception], ...]  # a table missing from a journal read-only and old
    _day_sql: str = SQLITE_DAY  # the UTC day of a set's creation, the same expression as the sets_day index

    def _tx(self) -> contextlib.AbstractContextManager[Db]:
        raise NotImplementedError  # the backend's

    def _read(self) -> contextlib.AbstractContextManager[Db]:
        raise NotImplementedError  # the backend's

    def add_workers(self, go_name: str, file: str, workers: Iterable[tuple[str, str]]) -> None:
        """Given a set, the notification file naming them and its (INSS, outcome) pairs, index them (a pair
        already indexed for that file keeps its first outcome)."""
        with self._tx() as db:
            db.executemany(
                "INSERT OR IGNORE INTO set_workers (inss, go_name, file, outcome) VALUES (?,?,?,?)",
                [(inss, go_name, file, outcome) for inss, outcome in workers if inss],
            )

    def sets_by_worker(self, inss: str, limit: int = 200) -> list[tuple[SetRow, str]]:
        """Given a worker's INSS, return the sets whose notifications name that worker, each with the worker's
        outcome there, newest first (none when the journal predates the index: a read-only reader of it)."""
        with self._read() as db:
            try:
                rows = db.execute(
                    "SELECT sets.*, set_workers.outcome AS worker_outcome FROM set_workers JOIN sets USING (go_name)"
                    " WHERE inss = ? ORDER BY sets.updated_at DESC LIMIT ?",
                    (inss, limit),
                ).fetchall()
            except self._old_journal_errors:
                return []
            return [(set_row(r), r["worker_outcome"]) for r in rows]

    def daily_outcomes(self, days: int, now: float) -> list[tuple[str, str, int]]:
        """Given a number of days and the time now, return (UTC day YYYY-MM-DD, outcome, sets created that day)
        for the last ``days`` days, a set without an outcome counted as pending (quarantined when failed)."""
        first = int(now // 86400) - (days - 1)  # whole UTC days since the epoch, as the sets_day index holds them
        day = self._day_sql
        with self._read() as db:  # the same expression as the index: walked in order, no sort, no table read
            rows = db.execute(
                f"SELECT {day}, outcome, state, COUNT(*) FROM sets WHERE {day} >= ? GROUP BY 1, 2, 3",
                (first,),
            ).fetchall()
        counts: dict[tuple[str, str], int] = {}
        epoch = dt.date(1970, 1, 1)
        for r in rows:
            name = r[1] or ("quarantined" if r[2] == "failed" else "pending")
            key = ((epoch + dt.timedelta(days=int(r[0]))).isoformat(), name)
            counts[key] = counts.get(key, 0) + int(r[3])
        return [(day, outcome, n) for (day, outcome), n in sorted(counts.items())]

    def sets_with_outcome(self, outcomes: Iterable[str], limit: int = 100) -> list[SetRow]:
        """Given outcomes (refused, partly_refused …), return the sets that have one, newest first."""
        wanted = list(outcomes)
        if not wanted:
            return []
        with self._read() as db:
            rows = db.execute(
                f"SELECT * FROM sets WHERE outcome IN ({','.join('?' * len(wanted))}) ORDER BY updated_at DESC LIMIT ?",
                (*wanted, limit),
            ).fetchall()
        return [set_row(r) for r in rows]

    def sets_named_like(self, fragment: str, limit: int = 100) -> list[SetRow]:
        """Given part of a GO name (DIMN.123456.20261130 …), return the sets whose name holds it, newest first."""
        pattern = "%" + fragment.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        with self._read() as db:
            rows = db.execute(
                "SELECT * FROM sets WHERE go_name LIKE ? ESCAPE '\\' ORDER BY updated_at DESC LIMIT ?",
                (pattern, limit),
            ).fetchall()
        return [set_row(r) for r in rows]

    def waiting_since_before(
        self,
        acrf_before: float,
        notification_before: float,
        limit: int = 100,
        never_late: NeverLate = (),
        after: Sequence[tuple[float, str]] = ((-1.0, ""), (-1.0, "")),
    ) -> list[SetRow]:
        """Given two times, the (application, env) pairs whose acknowledged sets are never late (circuit tests)
        and where each state's walk stopped, return the sets sent (no ACRF) and last written before the first,
        and those acknowledged (no notification) before the second but those pairs, each past its place in
        ``after`` ((updated_at, GO name) of the sent, of the acknowledged), oldest first: the candidates to be
        overdue, read without loading every set that waits (the pairs are left out before the limit, not
        after)."""
        skip = "".join(" AND NOT (env = ? AND go_name LIKE ?)" for _ in never_late)
        skipped = [v for app, env in never_late for v in (env, f"GO.{app}.%")]
        past = " AND (updated_at > ? OR (updated_at = ? AND go_name > ?))"
        (sent_at, sent_name), (ack_at, ack_name) = after
        with self._read() as db:  # one query per state: each walks the (state, updated_at) index
            rows = [
                *db.execute(
                    f"SELECT * FROM sets WHERE state = 'sent' AND updated_at < ?{past}"
                    " ORDER BY updated_at, go_name LIMIT ?",
                    (acrf_before, sent_at, sent_at, sent_name, limit),
                ).fetchall(),
                *db.execute(
                    f"SELECT * FROM sets WHERE state = 'acknowledged' AND updated_at < ?{past}{skip}"
                    " ORDER BY updated_at, go_name LIMIT ?",
                    (notification_before, ack_at, ack_at, ack_name, *skipped, limit),
                ).fetchall(),
            ]
        return sorted((set_row(r) for r in rows), key=lambda row: (row.updated_at, row.go_name))[:limit]

    def waiting_counts(
        self, acrf_before: float, notification_before: float, never_late: NeverLate = ()
    ) -> tuple[int, int]:
        """Given the times and pairs of ``waiting_since_before``, return how many sets it would give without a
        limit: (sent, acknowledged), counted on the (state, updated_at) index, no set read."""
        skip = "".join(" AND NOT (env = ? AND go_name LIKE ?)" for _ in never_late)
        skipped = [v for app, env in never_late for v in (env, f"GO.{app}.%")]
        with self._read() as db:
            sent = db.execute("SELECT COUNT(*) FROM sets WHERE state = 'sent' AND updated_at < ?", (acrf_before,))
            sent_count = int(sent.fetchone()[0])
            acknowledged = db.execute(
                f"SELECT COUNT(*) FROM sets WHERE state = 'acknowledged' AND updated_at < ?{skip}",
                (notification_before, *skipped),
            )
            return sent_count, int(acknowledged.fetchone()[0])


def backfill_workers(db: Db) -> int:
    """Given a journal older than the worker index being opened for writing (either backend, in a
    transaction), index the workers its notification records kept in detail (those records are all an older
    journal has: the Forms past them were only counted); return how many (INSS, set) pairs were indexed."""
    rows = db.execute("SELECT go_name, data FROM sets WHERE data LIKE ?", ('%"notifications"%',)).fetchall()
    pairs = []
    for r in rows:
        with contextlib.suppress(ValueError, AttributeError):
            data = json.loads(r[1])
            pairs += [
                (w["inss"], r[0], n.get("file", ""), w.get("outcome", "pending"))
                for n in data.get("notifications", [])
                for w in n.get("workers", [])
                if w.get("inss")
            ]
    db.executemany("INSERT OR IGNORE INTO set_workers (inss, go_name, file, outcome) VALUES (?,?,?,?)", pairs)
    return len(pairs)
