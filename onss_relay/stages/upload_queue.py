"""What the upload stage runs on: a round and its report, the queue of sets to send, the gate commits, the
batch of sets recorded as sent, and each thread's connection (the pool they come from: upload_connections.py).

None of this knows the order of a set's files (transport/base.py ``Upload`` enforces it) or what a set's
state means (stages/upload.py decides); it makes many sets cheap: one journal commit for many gates, one
fsync per folder and one commit for many sent sets.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import threading
import time
from collections.abc import Callable

import structlog

from onss_relay.errors import RelayError
from onss_relay.journal import Change, DataChange, Journal, SetRow, State
from onss_relay.spool import Spool
from onss_relay.stages.uncertain import waiting
from onss_relay.stages.upload_connections import close_quietly
from onss_relay.transport.base import Transport

log = structlog.get_logger(__name__)

PENDING = (State.SIGNED, State.UPLOADING, State.GO_SENDING)
GO_SENDING = frozenset({State.GO_SENDING})
SENT_BATCH = 64  # sets whose GO is on the server, archived and marked sent together (one look in /proc)…
SENT_DELAY = 0.25  # …or as soon as the first of them has waited this long (seconds)
FEED_BATCH = 16  # sets an upload thread takes from the queue at a time, their rows read together…
FEED_FRESH = 1.0  # …and read again when older than this (seconds) by the time they start
REFILL_PAGE = 256  # pending rows the queue reads from the journal at a time (names kept, rows dropped)


@dataclasses.dataclass
class UploadReport:
    """What upload rounds did: sets sent and quarantined, the error that stopped them, the uncertain sets."""

    sent: list[str] = dataclasses.field(default_factory=list)
    quarantined: list[str] = dataclasses.field(default_factory=list)
    error: RelayError | None = None
    waiting: list[str] = dataclasses.field(default_factory=list)  # uncertain sets: why they wait and until when


@dataclasses.dataclass
class Round:
    """One call of ``upload_pending``: the queue its threads share, what they report, and the abort switch."""

    work: WorkQueue
    report: UploadReport
    more: Callable[[], bool] | None
    abort: threading.Event = dataclasses.field(default_factory=threading.Event)
    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)

    def add(self, what: str, go_names: list[str]) -> None:
        with self.lock:  # the report is shared by the upload threads
            getattr(self.report, what).extend(go_names)

    def fail(self, error: RelayError) -> None:
        with self.lock:
            self.report.error = self.report.error or error
        self.abort.set()


class WorkQueue:
    """Names of sets to send, shared by the upload threads; refilled from the journal when it runs dry.

    An uncertain set (stages/uncertain.py) enters it only once its quiet period has passed.
    """

    def __init__(self, journal: Journal, quiet: float = 0.0) -> None:
        self.journal = journal
        self.quiet = quiet
        self._queue: collections.deque[str] = collections.deque()
        self._seen: set[str] = set()
        self._lock = threading.Lock()
        # the change counter's value of the last set read: the next refill reads the sets written after it (those
        # just signed), a page at a time, not every pending set again; 0 reads them all again from the first (at
        # first, and after an uncertain set waited out its quiet period: it becomes due without being written)
        self._read_until = 0
        self._rewind = False  # a page held an uncertain set in its quiet period: read from the first again
        self._full = True  # reading every pending set (the first pass, or again after a quiet period)

    def refill(self) -> int:
        """Add pending sets not seen yet (the signer may have added some), read REFILL_PAGE at a time in the order
        they were written, from where the last read stopped: memory holds a page of rows however many sets wait.
        Once a full pass has read every pending set, a set new to the round is one just signed: the sets this
        round's threads moved to uploading or go_sending (each at its gates) are not read again. A page that adds
        nothing (sets taken already, or waiting out a quiet period) is followed by the next; return how many were
        added."""
        while True:
            states = PENDING if self._full else (State.SIGNED,)
            rows = self.journal.sets_in(*states, changed_after=self._read_until, limit=REFILL_PAGE)
            if rows:
                self._read_until = max(r.change for r in rows)
            quiet = {r.go_name for r in waiting(rows, self.quiet)}
            self._rewind = self._rewind or bool(quiet)
            fresh = [r.go_name for r in rows if r.go_name not in self._seen and r.go_name not in quiet]
            self._seen.update(fresh)
            self._queue.extend(fresh)
            last = len(rows) < REFILL_PAGE
            if last:  # a full pass read again from the first after a quiet period, else only the sets signed
                self._full = self._rewind
                if self._rewind:
                    self._read_until, self._rewind = 0, False
            if fresh or last:
                return len(fresh)

    def size(self) -> int:
        return len(self._queue)

    def take(self) -> str | None:
        with self._lock:
            if not self._queue:
                self.refill()
            return self._queue.popleft() if self._queue else None

    def take_many(self, n: int) -> list[str]:
        """Up to ``n`` names (refilled first when the queue is dry); none when nothing is pending."""
        with self._lock:
            if not self._queue:
                self.refill()
            return [self._queue.popleft() for _ in range(min(n, len(self._queue)))]

    def put_back(self, go_name: str) -> None:
        with self._lock:
            self._queue.append(go_name)

    def forget(self, go_name: str) -> None:
        """Given a set taken from the queue and left uncertain, let a later refill take it again once due."""
        with self._lock:
            self._seen.discard(go_name)
            self._read_until = 0  # it becomes due without being written: the next refills read every pending set


class Taken:
    """Sets one upload thread took from the queue a few at a time, their rows read in one journal read (one
    round trip to a PostgreSQL journal for FEED_BATCH sets, not one each); rows read more than FEED_FRESH
    seconds ago are read again before use."""

    def __init__(self, work: WorkQueue, journal: Journal) -> None:
        self.work = work
        self.journal = journal
        self.names: collections.deque[str] = collections.deque()
        self.rows: dict[str, SetRow] = {}
        self.read_at = 0.0

    def next(self) -> tuple[str, SetRow | None] | None:
        """The next set taken and its row as the journal has it (None: unknown to it); None when none is left."""
        if not self.names:
            self.names.extend(self.work.take_many(FEED_BATCH))
            if not self.names:
                return None
            self._read()
        elif time.monotonic() - self.read_at > FEED_FRESH:
            self._read()
        go_name = self.names.popleft()
        return go_name, self.rows.pop(go_name, None)

    def _read(self) -> None:
        self.rows = self.journal.sets_by_names(list(self.names))
        self.read_at = time.monotonic()

    def put_back(self) -> None:
        """Return the sets taken and not started to the queue (the thread stops or its connection failed)."""
        for go_name in self.names:
            self.work.put_back(go_name)
        self.names.clear()
        self.rows.clear()


class Gates:
    """State changes at upload gates (uploading, go_sending), committed together when the transport asks."""

    def __init__(self, journal: Journal) -> None:
        self.journal = journal
        self.changes: list[Change] = []

    def add(self, change: Change) -> None:
        self.changes.append(change)

    def commit(self) -> None:
        changes, self.changes = self.changes, []
        if changes:
            self.journal.transition_many(changes)


class SentBatch:
    """Sets whose GO is on the server, recorded together: files moved to sent/ with one fsync per folder,
    then one journal commit marking them sent and archived. The only way a set becomes ``sent``.

    A crash before that commit leaves them in go_sending, whose recovery finds each GO on the server
    (or the set consumed) and never re-sends an FI or FS.
    """

    def __init__(self, journal: Journal, spool: Spool, on_sent: Callable[[list[str]], None]) -> None:
        self.journal = journal
        self.spool = spool
        self.on_sent = on_sent
        self.rows: list[tuple[SetRow, str, str]] = []
        self.first_at = 0.0

    def add(self, row: SetRow, folder: str, detail: str = "GO uploaded") -> None:
        if not self.rows:
            self.first_at = time.monotonic()
        self.rows.append((row, folder, detail))
        if len(self.rows) >= SENT_BATCH or time.monotonic() - self.first_at > SENT_DELAY:
            self.flush()

    def flush(self) -> None:
        if not self.rows:
            return
        rows, self.rows = self.rows, []
        dest = str(self.spool.archive_sets([row for row, _, _ in rows]))
        self.journal.transition_many(
            [  # only from go_sending: an answer linked meanwhile has moved the set on (it says the GO was consumed)
                Change(
                    row.go_name,
                    State.SENT,
                    detail,
                    archived=True,
                    data=DataChange(sent_dir=dest, uncertain=None),
                    only_from=GO_SENDING,
                )
                for row, _, detail in rows
            ]
        )
        said = log.bind()  # made once for the batch, not per line (log.py, above setup_logging)
        for row, folder, detail in rows:
            said.info(
                "set_sent",
                set=row.go_name,
                state="sent",
                folder=folder,
                detail=detail,
                duration_ms=round((time.time() - row.updated_at) * 1000),
            )
        self.on_sent([row.go_name for row, _, _ in rows])

    def flush_after_error(self) -> None:
        """Flush on the way out of a failed run; a second failure (a full disk) leaves them in go_sending."""
        pending = len(self.rows)
        try:
            self.flush()
        except Exception as e:
            log.warning(
                "sent_not_recorded",
                sets=pending,
                error=repr(e),
                detail="left in go_sending: recovery checks the server for each GO",
            )


class Channel:
    """One lazily (re)connected transport, owned by one thread."""

    def __init__(self, connect: Callable[[], Transport]) -> None:
        self._connect = connect
        self._transport: Transport | None = None

    def get(self) -> Transport:
        if self._transport is None:
            self._transport = self._connect()
        return self._transport

    def detach(self) -> Transport | None:
        """Give the connection up without closing it (to keep it for the next round)."""
        t, self._transport = self._transport, None
        return t

    def current(self) -> Transport | None:
        """The connection, if one is open."""
        return self._transport

    def reset(self) -> None:
        if self._transport is not None:
            close_quietly(self._transport)
        self._transport = None

    def abort(self) -> None:
        """Give the connection up abortively (a reset: nothing still queued on it is sent)."""
        if self._transport is not None:
            with contextlib.suppress(Exception):
                self._transport.abort()
        self._transport = None
