"""The upload stage: send every signed set as FI parts, then FS parts, then the GO, exactly once.

The journal records ``go_sending`` before the GO put and ``sent`` after it. A set interrupted before
``go_sending`` is re-sent from its first file; one interrupted in ``go_sending`` only gets its GO again,
and only when its FI parts are still on the server and the GO is not. Several channels send several sets
at once; each set keeps its own order.
"""

from __future__ import annotations

import contextlib
import dataclasses
import queue
import threading
from collections.abc import Callable
from pathlib import Path

import structlog
import tenacity

from onss_relay.config import Config
from onss_relay.errors import BadInput, RemoteError, TransientRemoteError
from onss_relay.journal import Journal, SetRow, State
from onss_relay.names import Env, upload_folder
from onss_relay.spool import Spool
from onss_relay.transport.base import Transport

log = structlog.get_logger(__name__)

PENDING = (State.SIGNED, State.UPLOADING, State.GO_SENDING)


class ChangedAfterClaim(BadInput):
    """A declaration's size changed after it was claimed and signed; it is quarantined, not sent."""


class _Channel:
    """One lazily (re)connected transport, owned by one thread."""

    def __init__(self, connect: Callable[[], Transport]) -> None:
        self._connect = connect
        self._transport: Transport | None = None

    def get(self) -> Transport:
        if self._transport is None:
            self._transport = self._connect()
        return self._transport

    def reset(self) -> None:
        if self._transport is not None:
            with contextlib.suppress(Exception):
                self._transport.close()
        self._transport = None


@dataclasses.dataclass
class UploadReport:
    sent: list[str] = dataclasses.field(default_factory=list)
    quarantined: list[str] = dataclasses.field(default_factory=list)
    error: RemoteError | None = None


class Uploader:
    """Given the configuration, journal, spool and a transport factory, send pending sets."""

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
        self._report_lock = threading.Lock()

    def upload_pending(self) -> UploadReport:
        """Send every set in signed/uploading/go_sending, over up to remote.connections channels."""
        self.archive_finished()
        rows = self.journal.sets_in(*PENDING)
        report = UploadReport()
        if not rows:
            return report
        work: queue.SimpleQueue[SetRow] = queue.SimpleQueue()
        for row in rows:
            work.put(row)
        abort = threading.Event()
        n = min(self.cfg.remote.connections, len(rows))
        threads = [threading.Thread(target=self._worker, args=(work, report, abort), name=f"upload-{i}", daemon=True)
                   for i in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return report

    def _worker(self, work: queue.SimpleQueue[SetRow], report: UploadReport, abort: threading.Event) -> None:
        channel = _Channel(self.connect)
        try:
            while not abort.is_set() and not self.stop.is_set():
                try:
                    row = work.get_nowait()
                except queue.Empty:
                    return
                try:
                    self._send_with_retry(channel, row.go_name)
                    with self._report_lock:
                        report.sent.append(row.go_name)
                except ChangedAfterClaim as e:
                    self._quarantine(row.go_name, e)
                    with self._report_lock:
                        report.quarantined.append(row.go_name)
                except RemoteError as e:
                    log.error("upload_stopped", set=row.go_name, error=str(e))
                    with self._report_lock:
                        report.error = report.error or e
                    abort.set()
        finally:
            channel.reset()

    def _send_with_retry(self, channel: _Channel, go_name: str) -> None:
        stop = tenacity.stop_after_attempt(self.max_attempts) if self.max_attempts else tenacity.stop_never
        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception_type(TransientRemoteError),
            wait=tenacity.wait_random_exponential(multiplier=0.5, max=self.max_wait),
            stop=stop | tenacity.stop_when_event_set(self.stop),
            before_sleep=lambda rs: self._before_retry(channel, go_name, rs),
            reraise=True,
        )
        retrying(self._send_set, channel, go_name)

    def _before_retry(self, channel: _Channel, go_name: str, rs: tenacity.RetryCallState) -> None:
        log.warning("upload_retry", set=go_name, attempt=rs.attempt_number,
                    error=str(rs.outcome.exception()) if rs.outcome else None)
        channel.reset()

    def _send_set(self, channel: _Channel, go_name: str) -> None:
        row = self.journal.get_set(go_name)
        assert row is not None
        if row.state in (State.SIGNED, State.UPLOADING):
            self._send_files(channel.get(), row)
        row = self.journal.get_set(go_name)
        assert row is not None
        if row.state == State.GO_SENDING:
            self._finish_go(channel.get(), row)
        self.archive(go_name)

    def _send_files(self, t: Transport, row: SetRow) -> None:
        folder = upload_folder(Env(row.env))
        self.journal.transition(row.go_name, State.UPLOADING)
        for fi in row.parts:
            self._put_checked(t, self.spool.outbox / fi, folder, expected=row.data["sizes"][fi])
        for fs in row.data.get("fs", []):
            self._put_checked(t, self.spool.work_dir_for(row.go_name) / fs, folder)
        self.journal.transition(row.go_name, State.GO_SENDING)

    def _put_checked(self, t: Transport, local: Path, folder: str, expected: int | None = None) -> None:
        size = local.stat().st_size
        if expected is not None and size != expected:
            raise ChangedAfterClaim("declaration changed after it was claimed",
                                    f"{local.name}: {expected} bytes when claimed, {size} bytes now")
        t.put(local, folder, local.name)
        remote = t.size(folder, local.name)
        if remote != size:
            raise TransientRemoteError(f"{folder}/{local.name}: {remote} bytes on the server after upload, {size} locally")
        log.debug("file_uploaded", file=local.name, folder=folder, size=size)

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

    def archive(self, go_name: str) -> None:
        """Given a sent set, move its FI, FS and a GO into sent/YYYY-MM-DD/ and mark it archived."""
        row = self.journal.get_set(go_name)
        assert row is not None
        work = self.spool.work_dir_for(go_name)
        files = [self.spool.outbox / n for n in [*row.parts, *row.data.get("extras", [])]]
        files += [work / n for n in row.data.get("fs", [])]
        dest = self.spool.archive(files, go_name)
        with contextlib.suppress(OSError):
            work.rmdir()
        self.journal.update_data(go_name, sent_dir=str(dest))
        self.journal.mark_archived(go_name)

    def archive_finished(self) -> None:
        """Complete the archiving of sets that were sent before a crash."""
        for row in self.journal.unarchived_done():
            self.archive(row.go_name)

    def _quarantine(self, go_name: str, e: BadInput) -> None:
        row = self.journal.get_set(go_name)
        assert row is not None
        files = [self.spool.outbox / n for n in [*row.parts, *row.data.get("extras", [])]]
        self.spool.quarantine(files, e.reason, e.detail, set=go_name)
        self.journal.transition(go_name, State.FAILED, detail=e.detail, reason=f"{e.reason}: {e.detail}")


