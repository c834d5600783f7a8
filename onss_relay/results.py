"""results/<GO name>.json: one file per declaration set, rewritten atomically at each change, for folder readers.
What a result says is the set's view (views/set_view.py); this module only keeps the files in step."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog

from onss_relay.config import PollConfig
from onss_relay.durable import atomic_write
from onss_relay.journal import Journal, SetRow
from onss_relay.spool import Spool
from onss_relay.views.set_view import document_of as document_of  # the set's one view, as JSON
from onss_relay.views.set_view import set_views
from onss_relay.waiting import answered_circuit_test as answered_circuit_test  # moved: older importers
from onss_relay.waiting import overdue as overdue
from onss_relay.waiting import overdue_sets as overdue_sets
from onss_relay.waiting import uncertain_document as uncertain_document

RESULTS_PAGE = 500  # sets read from the journal at a time when catching up
PROGRESS_EVERY = 2000  # results written between two progress lines of a long catch-up

log = structlog.get_logger(__name__)


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

    def catch_up(self, stop: threading.Event | None = None) -> int:
        """Given the relay's stop event, write the result of every set changed since the last call; return how many
        were written. With ``stop`` set (SIGTERM), end between two pages, never before the first: the cursor is
        durable per page, so the next catch-up goes on from there."""
        written = 0
        said = 0  # written when the last progress line was said
        with self._lock:
            while rows := self.journal.sets_changed_after(self.done, RESULTS_PAGE):  # any number, a page held
                for view in set_views(self.journal, rows):  # a page's histories and keys read together
                    row = view.row
                    path = _write_document(self.spool, row, view.document())
                    self.done = max(self.done, row.change)
                    if self.on_write is not None:
                        self.on_write(row, path)
                atomic_write(self.cursor_path, f"{self.done}\n".encode())
                written += len(rows)
                if written - said >= PROGRESS_EVERY:  # a long catch-up (a lost results.cursor) says how far it is
                    said = written
                    log.info("results_catching_up", written=written, change=self.done, last=self.journal.last_change())
                if stop is not None and stop.is_set():
                    log.info("results_catch_up_stopped", written=written, change=self.done)
                    break
            return written
