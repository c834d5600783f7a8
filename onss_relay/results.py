"""results/<GO name>.json: one file per declaration set, rewritten atomically at each change, for folder readers.
What a result says is the set's view (views/set_view.py); this module only keeps the files in step."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog

from onss_relay.config import PollConfig
from onss_relay.durable import atomic_write
from onss_relay.journal import Journal, SetRow, State
from onss_relay.json_text import dumps_indented
from onss_relay.spool import Spool
from onss_relay.views.set_view import document_of as document_of  # the set's one view, as JSON
from onss_relay.views.set_view import set_views
from onss_relay.waiting import answered_circuit_test as answered_circuit_test  # moved: older importers
from onss_relay.waiting import overdue as overdue
from onss_relay.waiting import overdue_sets as overdue_sets
from onss_relay.waiting import uncertain_document as uncertain_document

IN_FLIGHT = frozenset({State.SIGNED, State.UPLOADING, State.GO_SENDING})  # states a set passes through in a burst
IN_FLIGHT_QUIET = 2.0  # seconds a set stays in one of them before the daemon's results tick writes it
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
    # json.dumps(doc, indent=2)'s text, without its pure-Python encoder (json_text.py)
    atomic_write(path, dumps_indented(doc).encode(), sync=False)  # derived from the journal
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
        self._saved = -1  # the value this catch-up wrote to results.cursor last (-1: none yet)
        if self.done == 0:  # every result is written again: retention must look at all of them again too
            from onss_relay.retention import forget_walk  # retention reads this module: imported when needed

            forget_walk(spool, "results")
        # told of each result written (the on_result hook); called outside no lock of the journal's
        self.on_write: Callable[[SetRow, Path], None] | None = None
        # the daemon's results tick and a stage's end both catch up: one at a time, or an older read of a set
        # written after a newer one would stay (the newer change is behind the cursor by then)
        self._lock = threading.Lock()
        # how long a set in flight stays in one state before its result is written: 0 (at once) but in the daemon
        self.in_flight_quiet = 0.0
        # sets in flight not written yet (catch_up's in_flight_quiet): GO name -> (its change, when first seen)
        self._waiting: dict[str, tuple[int, float]] = {}

    def _read_cursor(self) -> int:
        """Return the change counter value written last; 0 (write every set) when there is none, or when the
        journal is behind it (restored from a backup: its sets are written again as it now has them)."""
        try:
            done = int(self.cursor_path.read_text().strip() or 0)
        except (OSError, ValueError):
            return 0
        return done if done <= self.journal.last_change() else 0

    def catch_up(
        self,
        stop: threading.Event | None = None,
        in_flight_quiet: float | None = None,
        holding: frozenset[State] = IN_FLIGHT,
    ) -> int:
        """Given the relay's stop event and how long a set in flight must stay in one state before its result says
        it (``self.in_flight_quiet`` when None), write the result of every set changed since the last call; return
        how many were written. With ``stop`` set (SIGTERM), end between two pages, never before the first: the
        cursor is durable per page, so the next catch-up goes on from there.

        With ``in_flight_quiet`` (the daemon's ticks), a set seen signed, uploading or going to send its GO is
        written only once it stayed that long in that state: a set passing through those states in a burst has
        its file written at its claim and when sent, not at each step (each rewrite creates a file, and frees
        one new files must scan past on ext4). The cursor kept on disk stays before every set left unwritten, so
        a restart writes them. ``holding`` (IN_FLIGHT unless said) are the states held so."""
        quiet = self.in_flight_quiet if in_flight_quiet is None else in_flight_quiet
        written = 0
        said = 0  # written when the last progress line was said
        with self._lock:
            self._saved = -1  # written at least once per catch-up (another process may have written it meanwhile)
            bare = holding if quiet else frozenset()  # a set held is only noted: its data is not read
            while rows := self.journal.sets_changed_after(self.done, RESULTS_PAGE, bare):  # any number, a page held
                written += self._write_page(rows, quiet, holding)
                self.done = max(self.done, *(row.change for row in rows))
                self._save_cursor()
                if written - said >= PROGRESS_EVERY:  # a long catch-up (a lost results.cursor) says how far it is
                    said = written
                    log.info("results_catching_up", written=written, change=self.done, last=self.journal.last_change())
                if stop is not None and stop.is_set():
                    log.info("results_catch_up_stopped", written=written, change=self.done)
                    return written
            return written + self._write_quiet(quiet)

    def _write_page(self, rows: list[SetRow], in_flight_quiet: float, holding: frozenset[State]) -> int:
        """Given sets changed since the cursor, write their results, the sets in ``holding`` states left for later
        when ``in_flight_quiet``; return how many were written."""
        now = time.monotonic()
        due = []
        for row in rows:
            if in_flight_quiet and row.state in holding:
                self._waiting[row.go_name] = (row.change, now)  # written once it stayed in this state
                continue
            self._waiting.pop(row.go_name, None)
            due.append(row)
        return self._write(due)

    def _write_quiet(self, in_flight_quiet: float) -> int:
        """Given how long a set in flight must stay in one state, write the result of each left waiting that stayed
        so long (every one, when 0); return how many were written."""
        now = time.monotonic()
        names = [name for name, (_, since) in self._waiting.items() if now - since >= in_flight_quiet]
        if not names:
            return 0
        waited = {name: self._waiting.pop(name)[0] for name in names}
        rows = self.journal.sets_by_names(names)
        # a set changed since it was left waiting is past the cursor's reach no more: the next page writes it
        written = self._write([row for name, row in rows.items() if row.change == waited[name]])
        self._save_cursor()
        return written

    def _write(self, rows: list[SetRow]) -> int:
        """Given sets, write their results (a page's histories and keys read together); return how many."""
        for view in set_views(self.journal, rows):
            path = _write_document(self.spool, view.row, view.document())
            if self.on_write is not None:
                self.on_write(view.row, path)
        return len(rows)

    def _save_cursor(self) -> None:
        """Write how far the results got: before the first set left waiting, so that a restart writes it."""
        kept = min([self.done, *(change - 1 for change, _ in self._waiting.values())])
        if kept == self._saved:  # this catch-up wrote it already (a page of sets held while `send --once` uploads)
            return
        atomic_write(self.cursor_path, f"{kept}\n".encode())
        self._saved = kept


HELD_WHILE_SENDING = IN_FLIGHT | {State.QUEUED}  # states `send --once` still moves a set out of
# seconds between two catch-ups while `send --once` uploads: what is left is written after its last upload, with one
# core (the signing child is over by then): 0.5 s left ~50 ms of it at the end of a 1,000-set run
WHILE_SENDING_EVERY = 0.1


class WhileSending:
    """Given the results writer and the relay's stop event, a thread that, while `send --once` uploads, writes the
    results of the sets already in a state this run leaves them in (sent, quarantined, or not touched by it),
    so that the catch-up after the last upload (serial: ~0.24 ms per set) has only the last ones left. Sets
    still queued or on their way out are held (the cursor kept before them, catch_up's in_flight_quiet) and
    written by that catch-up, as they were: no set's file is written more often than before."""

    def __init__(self, writer: ResultsWriter, stop: threading.Event) -> None:
        self.writer = writer
        self.stop = stop
        self.over = threading.Event()
        self.thread = threading.Thread(target=self._run, name="results-while-sending", daemon=True)

    def __enter__(self) -> WhileSending:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        """The uploads are over (or stopped, or failed): end after the page at hand."""
        self.over.set()
        self.thread.join()

    def _run(self) -> None:
        while not self.over.wait(WHILE_SENDING_EVERY) and not self.stop.is_set():
            try:
                self.writer.catch_up(self.stop, math.inf, HELD_WHILE_SENDING)
            except Exception as e:  # the catch-up after the uploads writes them again, or says what stops it
                log.warning("results_while_sending_stopped", error=str(e))
                return
