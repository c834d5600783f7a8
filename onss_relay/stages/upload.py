"""The upload stage: send every signed set as FI parts, then FS parts, then the GO, exactly once.

The journal records ``go_sending`` before the GO put and ``sent`` after it. A set interrupted before
``go_sending`` is re-sent from its first file; one interrupted in ``go_sending`` only gets its GO again,
and only when its FI parts are still on the server and the GO is not. Several channels send several sets
at once; each set keeps its own order.
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import dataclasses
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import structlog
import tenacity

from onss_relay.config import Config
from onss_relay.errors import BadInput, RemoteError, TransientRemoteError
from onss_relay.journal import Change, Journal, SetRow, State
from onss_relay.names import Env, upload_folder
from onss_relay.spool import Spool
from onss_relay.transport.base import PutFile, Transport, Upload, UploadAbandoned

log = structlog.get_logger(__name__)

PENDING = (State.SIGNED, State.UPLOADING, State.GO_SENDING)
WINDOW = 64  # sets in flight per SFTP session (remote.connections sessions share a connection)
SENT_BATCH = 16  # sets whose GO is on the server, archived and marked sent together…
SENT_DELAY = 0.25  # …or as soon as the first of them has waited this long (seconds)
IDLE_KEEP = 60.0  # seconds a connection stays open with nothing to send, for the next sets (the daemon)


class ChangedAfterClaim(BadInput):
    """A declaration's size changed after it was claimed and signed; it is quarantined, not sent."""


class _WorkQueue:
    """Names of sets to send, shared by the upload threads; refilled from the journal when it runs dry."""

    def __init__(self, journal: Journal) -> None:
        self.journal = journal
        self._queue: collections.deque[str] = collections.deque()
        self._seen: set[str] = set()
        self._lock = threading.Lock()

    def refill(self) -> int:
        """Add pending sets not seen yet (the signer may have added some); return how many were added."""
        fresh = [r.go_name for r in self.journal.sets_in(*PENDING) if r.go_name not in self._seen]
        self._seen.update(fresh)
        self._queue.extend(fresh)
        return len(fresh)

    def size(self) -> int:
        return len(self._queue)

    def take(self) -> str | None:
        with self._lock:
            if not self._queue:
                self.refill()
            return self._queue.popleft() if self._queue else None

    def put_back(self, go_name: str) -> None:
        with self._lock:
            self._queue.append(go_name)


def _close_quietly(t: Transport) -> None:
    with contextlib.suppress(Exception):
        t.close()


class _Channel:
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

    def reset(self) -> None:
        if self._transport is not None:
            _close_quietly(self._transport)
        self._transport = None


@dataclasses.dataclass
class UploadReport:
    sent: list[str] = dataclasses.field(default_factory=list)
    quarantined: list[str] = dataclasses.field(default_factory=list)
    error: RemoteError | None = None


class Uploader:
    """Given the configuration, journal, spool and a transport factory, send pending sets.

    Threads each hold one connection and pull sets from a shared queue: ``remote.connections`` of them for
    FTP and local folders; one for SFTP, whose connection carries ``remote.connections`` sessions with many
    sets in flight on each (pipelined requests). After a transient error a thread
    puts its unfinished sets back in the queue, reconnects with backoff and carries on.
    """

    def __init__(self, cfg: Config, journal: Journal, spool: Spool, connect: Callable[[], Transport],
                 *, stop: threading.Event | None = None, max_attempts: int | None = 5,
                 max_wait: float = 60.0) -> None:
        self.cfg = cfg
        self.journal = journal
        self.spool = spool
        self.connect = connect
        self.stop = stop or threading.Event()
        self.max_attempts = max_attempts
        self.max_wait = max_wait
        self._lock = threading.Lock()
        self._warm: concurrent.futures.Future[Transport] | None = None
        self._idle: list[tuple[Transport, float]] = []  # connections kept between rounds, and since when

    def warm_up(self) -> None:
        """Start connecting in the background, so that the first upload finds its connection ready."""
        with self._lock:
            if self._warm is not None:
                return
            future = self._warm = concurrent.futures.Future()

        def connect() -> None:
            try:
                t = self.connect()
                try:
                    t.prepare_uploads()
                except BaseException:
                    t.close()
                    raise
                future.set_result(t)
            except BaseException as e:  # handed to whoever takes the connection
                future.set_exception(e)

        threading.Thread(target=connect, name="upload-connect", daemon=True).start()

    def _take_connection(self) -> Transport:
        """A connection: the one warming up, one kept from the last round if still up, or a new one."""
        with self._lock:
            future, self._warm = self._warm, None
            kept = self._idle.pop()[0] if self._idle and future is None else None
        if future is not None:
            with contextlib.suppress(Exception):  # connect again below, where failures are retried and reported
                return future.result()
        if kept is not None:
            if kept.alive():
                return kept
            _close_quietly(kept)
        return self.connect()

    def _keep(self, t: Transport) -> None:
        with self._lock:
            self._idle.append((t, time.monotonic()))

    def close_idle(self, older_than: float = 0.0) -> None:
        """Close the connections kept with nothing to send for ``older_than`` seconds (all: 0, and the one
        warming up)."""
        now = time.monotonic()
        with self._lock:
            stale = [t for t, since in self._idle if now - since >= older_than]
            self._idle = [(t, since) for t, since in self._idle if now - since < older_than]
            future, self._warm = (self._warm, None) if older_than <= 0 else (None, self._warm)
        if future is not None:
            with contextlib.suppress(Exception):
                stale.append(future.result())
        for t in stale:
            _close_quietly(t)

    def upload_pending(self, more: Callable[[], bool] | None = None) -> UploadReport:
        """Send every set in signed/uploading/go_sending, over up to remote.connections connections.

        Sets signed while this runs are picked up too: the queue refills from the journal when it runs dry.
        With ``more`` (true while sets may still be signed), a dry queue keeps the connections open and
        waits for them instead of returning.
        """
        self.archive_finished()
        report = UploadReport()
        work = _WorkQueue(self.journal)
        if not work.refill() and not (more and more()):
            return report
        abort = threading.Event()
        # SFTP runs its remote.connections sessions over one SSH connection from one thread (sftp_pipeline.py):
        # threads would only contend for the interpreter. FTP and local folders use a connection per thread.
        n = max(1, min(1 if self.cfg.remote.transport == "sftp" else self.cfg.remote.connections, work.size()))
        threads = [threading.Thread(target=self._worker, args=(work, report, abort, more), name=f"upload-{i}",
                                    daemon=True) for i in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return report

    def _worker(self, work: _WorkQueue, report: UploadReport, abort: threading.Event,
                more: Callable[[], bool] | None) -> None:
        channel = _Channel(self._take_connection)
        failures = [0]  # consecutive attempts without progress
        # sets in flight on this connection; halved after each attempt without progress
        window = [WINDOW * self.cfg.remote.connections]

        def give_up(rs: tenacity.RetryCallState) -> bool:
            return self.stop.is_set() or abort.is_set() or (
                self.max_attempts is not None and failures[0] >= self.max_attempts)

        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception_type(TransientRemoteError),
            wait=tenacity.wait_random_exponential(multiplier=0.5, max=self.max_wait),
            stop=give_up,
            sleep=self._sleep,
            before_sleep=lambda rs: log.warning("upload_retry", attempt=failures[0],
                                                error=str(rs.outcome.exception()) if rs.outcome else None),
            reraise=True,
        )
        try:
            retrying(self._drain, channel, work, report, abort, failures, window, more)
        except RemoteError as e:
            log.error("upload_stopped", error=str(e))
            with self._lock:
                report.error = report.error or e
            abort.set()
        except Exception as e:  # a bug: say so loudly, keep the sets queued, let the caller retry later
            log.exception("upload_crashed", error=repr(e))
            with self._lock:
                report.error = report.error or TransientRemoteError(f"internal error while uploading: {e!r}")
            abort.set()
        else:
            kept = channel.detach()  # it worked: keep it open for the next sets (close_idle ends it)
            if kept is not None:
                self._keep(kept)
        finally:
            channel.reset()

    def _sleep(self, seconds: float) -> None:
        self.stop.wait(seconds)  # a stop request ends the backoff at once

    def _drain(self, channel: _Channel, work: _WorkQueue, report: UploadReport,
               abort: threading.Event, failures: list[int], window: list[int], more: Callable[[], bool] | None) -> None:
        """Feed this thread's connection from the queue until it is empty; on error, requeue what was in flight.

        A link that keeps dropping before any set completes gets fewer sets in flight each time (down to
        one), so that some always get through.
        """
        inflight: dict[str, bool] = {}
        finished = _Finished(self, report, inflight)
        gates = _Gates(self.journal)
        sent_before = len(report.sent)
        try:
            t = channel.get()
            t.run_uploads(self._feed(t, work, report, abort, inflight, finished, gates, more), window[0])
            finished.flush()
        except BaseException:
            finished.flush_after_error()
            progressed = len(report.sent) > sent_before
            failures[0] = 0 if progressed else failures[0] + 1
            window[0] = window[0] if progressed else max(1, window[0] // 2)
            for go_name in inflight:
                work.put_back(go_name)
            channel.reset()
            raise

    def _feed(self, t: Transport, work: _WorkQueue, report: UploadReport, abort: threading.Event,
              inflight: dict[str, bool], finished: _Finished, gates: _Gates,
              more: Callable[[], bool] | None) -> Iterator[Upload | None]:
        """Yield an Upload per pending set; None when the queue is dry but ``more`` says sets are coming."""
        while not abort.is_set() and not self.stop.is_set():
            coming = more is not None and more()  # asked before the refill: nothing signed in between is missed
            go_name = work.take()
            if go_name is None:
                if coming:
                    yield None
                    continue
                return
            inflight[go_name] = True
            row = self.journal.get_set(go_name)
            assert row is not None
            if row.state == State.GO_SENDING:  # interrupted after go_sending: never re-send FI or FS
                self._finish_go(t, row)
                self._sent(row, report, inflight)
            elif row.state in (State.SIGNED, State.UPLOADING):
                yield self._upload_for(row, report, inflight, finished, gates)
            else:
                inflight.pop(go_name)

    def _upload_for(self, row: SetRow, report: UploadReport, inflight: dict[str, bool], finished: _Finished,
                    gates: _Gates) -> Upload:
        folder = upload_folder(Env(row.env))
        fis = [PutFile(folder, n, self.spool.outbox / n) for n in row.parts]
        fss = [PutFile(folder, n, self.spool.work / n) for n in row.data.fs]
        go = [PutFile(folder, row.go_name)]

        def gate(step: int) -> None:
            if step == 0:
                try:
                    self._check_unchanged(row)
                except ChangedAfterClaim as e:
                    self.spool.quarantine_claimed(self.journal, row, e.reason, e.detail)
                    with self._lock:
                        report.quarantined.append(row.go_name)
                    inflight.pop(row.go_name, None)
                    raise UploadAbandoned from None
                gates.add(Change(row.go_name, State.UPLOADING))
            elif step == 2:
                gates.add(Change(row.go_name, State.GO_SENDING))  # committed before the GO is opened

        def done() -> None:
            finished.add(row, folder)

        return Upload(row.go_name, [fis, fss, go], gate, done, gates.commit)

    def _sent(self, row: SetRow, report: UploadReport, inflight: dict[str, bool]) -> None:
        self.archive([row])
        inflight.pop(row.go_name, None)
        self.report_sent(report, [row.go_name])

    def report_sent(self, report: UploadReport, go_names: list[str]) -> None:
        with self._lock:  # the report is shared by the upload threads
            report.sent += go_names

    def _check_unchanged(self, row: SetRow) -> None:
        """Given a set about to be sent, raise ChangedAfterClaim if an FI was rewritten since it was claimed."""
        for fi in row.parts:
            st = (self.spool.outbox / fi).stat()
            expected = row.data.sizes[fi]
            if st.st_size != expected:
                raise ChangedAfterClaim("declaration changed after it was claimed",
                                        f"{fi}: {expected} bytes when claimed, {st.st_size} bytes now")
            claimed_mtime = row.data.mtimes.get(fi)
            if claimed_mtime is not None and st.st_mtime_ns != claimed_mtime:
                raise ChangedAfterClaim("declaration changed after it was claimed",
                                        f"{fi}: rewritten after it was claimed and signed (same size, new content?)")

    def _finish_go(self, t: Transport, row: SetRow) -> None:
        """Put the GO unless the server has it already or has consumed the set; then mark the set sent."""
        folder = upload_folder(Env(row.env))
        if t.exists(folder, row.go_name):
            detail = "GO already on the server"
        elif all(t.exists(folder, fi) for fi in row.parts):
            t.put_bytes(b"", folder, row.go_name)
            detail = "GO uploaded"
        else:
            detail = "set already consumed by the transfer point"
        self.journal.transition(row.go_name, State.SENT, detail=detail)
        log.info("set_sent", set=row.go_name, state="sent", folder=folder, detail=detail)

    def archive(self, rows: list[SetRow]) -> None:
        """Given sent sets, move their FI, FS and a GO into sent/YYYY-MM-DD/ and mark them archived."""
        if rows:
            dest = str(self.spool.archive({r.go_name: self.local_files(r) for r in rows}))
            self.journal.mark_archived({r.go_name: dest for r in rows})

    def local_files(self, row: SetRow) -> list[Path]:
        """Given a set, return its files here: FI parts and what came with them in the outbox, FS in work/."""
        return self.spool.outbox_files(row) + [self.spool.work / n for n in row.data.fs]

    def archive_finished(self) -> None:
        """Complete the archiving of sets that were sent before a crash."""
        self.archive(self.journal.unarchived_done())


class _Gates:
    """State changes at upload gates (uploading, go_sending), committed together when the transport asks."""

    def __init__(self, journal: Journal) -> None:
        self.journal = journal
        self.changes: list[Change] = []

    def add(self, change: Change) -> None:
        self.changes.append(change)

    def commit(self) -> None:
        changes, self.changes = self.changes, []
        self.journal.transition_many(changes)


class _Finished:
    """Sets whose GO is on the server, recorded together: files moved to sent/ with one fsync per folder,
    then one journal commit marking them sent and archived.

    A crash before that commit leaves them in go_sending, whose recovery finds each GO on the server
    (or the set consumed) and never re-sends an FI or FS.
    """

    def __init__(self, uploader: Uploader, report: UploadReport, inflight: dict[str, bool]) -> None:
        self.uploader = uploader
        self.report = report
        self.inflight = inflight
        self.rows: list[tuple[SetRow, str]] = []
        self.first_at = 0.0

    def add(self, row: SetRow, folder: str) -> None:
        if not self.rows:
            self.first_at = time.monotonic()
        self.rows.append((row, folder))
        if len(self.rows) >= SENT_BATCH or time.monotonic() - self.first_at > SENT_DELAY:
            self.flush()

    def flush(self) -> None:
        if not self.rows:
            return
        rows, self.rows = self.rows, []
        u = self.uploader
        dest = str(u.spool.archive({row.go_name: u.local_files(row) for row, _ in rows}))
        u.journal.transition_many([Change(row.go_name, State.SENT, "GO uploaded", archived=True, data={"sent_dir": dest})
                                   for row, _ in rows])
        for row, folder in rows:
            log.info("set_sent", set=row.go_name, state="sent", folder=folder, detail="GO uploaded",
                     duration_ms=round((time.time() - row.updated_at) * 1000))
            self.inflight.pop(row.go_name, None)
        u.report_sent(self.report, [row.go_name for row, _ in rows])

    def flush_after_error(self) -> None:
        """Flush on the way out of a failed run; a second failure (a full disk) leaves them in go_sending."""
        pending = len(self.rows)
        try:
            self.flush()
        except Exception as e:
            log.warning("sent_not_recorded", sets=pending, error=repr(e),
                        detail="left in go_sending: recovery checks the server for each GO")
