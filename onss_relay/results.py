"""results/<GO name>.json: one file per declaration set, rewritten atomically at each change, for folder readers."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from onss_relay.config import PollConfig
from onss_relay.durable import atomic_write
from onss_relay.errors import InvalidName
from onss_relay.journal import AcrfRecord, Journal, SetRow, State
from onss_relay.names import circuit_test, circuit_tests, parse_name
from onss_relay.outcome import outcome_of
from onss_relay.responses import rendering
from onss_relay.responses.codes import type_form
from onss_relay.spool import Spool
from onss_relay.stages.uncertain import UNCERTAIN_STATES, quiet_left

FORMS_LISTED = 100  # a set's Form keys listed in its result (a Dimona of thousands of Forms: the count says all)
RESULTS_PAGE = 500  # sets read from the journal at a time when catching up


def overdue(row: SetRow, poll: PollConfig, now: float) -> str | None:
    """Given a set, return why it is overdue (waiting longer than poll.acrf_overdue / notification_overdue), or None."""
    waited = now - row.updated_at
    if row.state == State.SENT and waited > poll.acrf_overdue:
        return f"no ACRF {_span(waited)} after the GO was sent"
    if row.state == State.ACKNOWLEDGED and waited > poll.notification_overdue and not answered_circuit_test(row):
        return f"no notification {_span(waited)} after the ACRF"
    return None


def overdue_sets(journal: Journal, poll: PollConfig, now: float, limit: int) -> list[tuple[SetRow, str]]:
    """Given the journal, the poll settings, the time now and a limit, return up to ``limit`` sets overdue,
    oldest first, each with why: the journal leaves out what is never late (circuit tests answered by their
    ACRF, the rule of ``overdue``) before its limit, so that they cannot hide the late sets behind them."""
    waiting = journal.waiting_since_before(
        now - poll.acrf_overdue, now - poll.notification_overdue, limit, never_late=circuit_tests()
    )
    return [(row, why) for row in waiting if (why := overdue(row, poll, now))]


def is_circuit_test(go_name: str) -> bool:
    """Given a GO name, return True when it is a circuit test (DmfA in T): an ACRF answers it, no notification."""
    try:
        return circuit_test(parse_name(go_name))
    except InvalidName:
        return False


def answered_circuit_test(row: SetRow) -> bool:
    """Given a set, return True when it is a circuit test its ACRF accepted: done, nothing waits (waiting for a
    notification is not overdue, and nothing shows it as waiting)."""
    return row.state == State.ACKNOWLEDGED and not row.data.notifications and is_circuit_test(row.go_name)


def _span(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 60} min" if s < 7200 else f"{s // 3600} h" if s < 172800 else f"{s // 86400} days"


def _iso(at: float) -> str:
    return dt.datetime.fromtimestamp(at, dt.UTC).isoformat(timespec="seconds")


def document_of(journal: Journal, row: SetRow, poll: PollConfig | None = None) -> dict[str, Any]:
    """Given the journal and one of its sets, return the JSON document describing it (history and keys read)."""
    return result_document(row, journal.history(row.go_name), poll, journal.keys_of(row.go_name))


def result_document(
    row: SetRow,
    history: list[tuple[float, str, str | None]],
    poll: PollConfig | None = None,
    keys: list[tuple[str, str]] | None = None,
) -> dict[str, Any]:
    """Given a set's journal row, history and keys, return the JSON document describing it."""
    tickets = [t for t in dict.fromkeys([row.ticket, *(v for k, v in keys or [] if k == "ticket")]) if t]
    return {
        "set": row.go_name,
        "environment": row.env,
        "state": str(row.state),
        # what the ONSS decided, in one field: accepted, accepted_with_anomalies, partly_refused, refused,
        # pending or quarantined (a refused notification leaves the state at notified)
        "outcome": outcome_of(row.go_name, row.state, row.data),
        "ticket": row.ticket,
        "tickets": tickets,  # every ticket the ONSS gave it: the ACRF's, a notification's file ticket, its own
        # Identification|date|hour of its Forms (the first FORMS_LISTED; every one is a key answers find it by)
        "original_forms": [v for k, v in keys or [] if k == "original_form"][:FORMS_LISTED],
        "original_form_count": sum(k == "original_form" for k, _ in keys or []),
        "sender_references": [v for k, v in keys or [] if k == "sender_ref"][:FORMS_LISTED],  # the first ones
        "sender_reference_count": sum(k == "sender_ref" for k, _ in keys or []),
        "reason": row.reason,
        "parts": row.parts,
        "acrf": _acrf_entry(row.data.acrf),
        "notifications": [dataclasses.asdict(n) for n in row.data.notifications],
        "other_responses": list(row.data.other_responses),
        "answers": [rendering(a.kind).results_entry(a) for a in row.data.answers],  # of registered types
        "warnings": list(row.data.warnings),
        "circuit_test": is_circuit_test(row.go_name),  # DmfA in T: answered by its ACRF alone
        "sent_dir": row.data.sent_dir,
        "since": _iso(row.updated_at),  # in this state since
        "overdue": overdue(row, poll or PollConfig(), time.time()),
        "uncertain": uncertain_document(row),
        "history": [
            {
                "at": dt.datetime.fromtimestamp(at, dt.UTC).isoformat(timespec="seconds"),
                "state": state,
                "detail": detail,
            }
            for at, state, detail in history
        ],
    }


def _acrf_entry(acrf: AcrfRecord | None) -> dict[str, Any] | None:
    """Given a set's ACRF record (or None), return its results entry, with what its TypeForm means."""
    if acrf is None:
        return None
    return dataclasses.asdict(acrf) | {"type_form_meaning": type_form(acrf.type_form)}


def uncertain_document(row: SetRow) -> dict[str, Any] | None:
    """Given a set, return what makes it uncertain and when it will be decided, or None when it is not."""
    u = row.data.uncertain
    if u is None or row.state not in UNCERTAIN_STATES:
        return None
    left = quiet_left(u, 0.0)
    return {
        "step": u.step,  # FI, FS or GO in flight on a connection given up; uploading or go_sending: an unclean stop
        "given_up_at": _iso(u.since),
        "quiet_period_s": u.quiet,
        # a fixed moment: once it has passed, the set is decided at the next upload round ("due")
        "decided_after": _iso(time.time() + left if left > 0 else u.since + u.quiet),
        "due": left == 0,
    }


def write_result(spool: Spool, journal: Journal, row: SetRow, poll: PollConfig | None = None) -> Path:
    """Given a set (and the poll settings that say when it is overdue), (re)write results/<GO name>.json
    atomically and return its path."""
    return _write_document(spool, row, document_of(journal, row, poll))


def _write_document(spool: Spool, row: SetRow, doc: dict[str, Any]) -> Path:
    """Given a set and its JSON document, (re)write results/<GO name>.json atomically and return its path."""
    path = spool.results / f"{row.go_name}.json"
    atomic_write(path, json.dumps(doc, indent=2).encode(), sync=False)  # derived from the journal
    return path


class ResultsWriter:
    """Keeps results/<GO name>.json in step with the journal, from a set's first state on (queued, sent,
    failed here, refused by the transfer point …): a folder-reading HR system sees every set as it goes.

    It follows the journal's change counter, not clocks: a wall clock stepping back or a write waiting for
    the lock cannot hide a change. How far it got is kept in <root>/results.cursor, so that a restart writes
    only what changed meanwhile, not the results the HR side already consumed (deleted).
    """

    def __init__(self, spool: Spool, journal: Journal) -> None:
        self.spool = spool
        self.journal = journal
        self.cursor_path = spool.paths.root / "results.cursor"
        self.done = self._read_cursor()
        if self.done == 0:  # every result is written again: retention must look at all of them again too
            from onss_relay.retention import forget_walk  # retention reads this module: imported when needed

            forget_walk(spool, "results")
        # told of each result written (the on_result hook); called outside no lock of the journal's
        self.on_write: Callable[[SetRow, Path], None] | None = None
        # the daemon's results tick and a stage's end both catch up: one at a time, or an older read of a set
        # written after a newer one would stay (the newer change is behind the cursor by then)
        self._lock = threading.Lock()

    def _read_cursor(self) -> int:
        """Return the change counter value written last; 0 (write every set) when there is none, or when the
        journal is behind it (restored from a backup: its sets are written again as it now has them)."""
        try:
            done = int(self.cursor_path.read_text().strip() or 0)
        except (OSError, ValueError):
            return 0
        return done if done <= self.journal.last_change() else 0

    def catch_up(self) -> int:
        """Write the result of every set changed since the last call; return how many were written."""
        written = 0
        with self._lock:
            while rows := self.journal.sets_changed_after(self.done, RESULTS_PAGE):  # any number, a page held
                names = [row.go_name for row in rows]
                histories, keys = self.journal.histories(names), self.journal.keys_of_sets(names)  # a read each
                for row in rows:
                    doc = result_document(row, histories[row.go_name], None, keys[row.go_name])
                    path = _write_document(self.spool, row, doc)
                    self.done = max(self.done, row.change)
                    if self.on_write is not None:
                        self.on_write(row, path)
                atomic_write(self.cursor_path, f"{self.done}\n".encode())
                written += len(rows)
            return written
