"""Many uploads in flight on SFTP sessions: asynchronous requests (paramiko_async.py), driven from one thread.

Over a WAN the round trip dominates: a file costs OPEN, WRITEs, FSTAT and CLOSE, four round trips when
done one after the other. Here a file costs two: the OPEN, then its WRITEs, the FSTAT and the CLOSE sent
together (a server handles the requests on one handle in order, so the FSTAT sees every write), and up to
``window`` uploads progress at once, each keeping its own step order (every file of a step closed and
size-checked before the next step's gate runs). Writes are streamed from disk with a bounded number
outstanding per file, so memory stays flat for files of any size.

Several sessions (SSH channels of one connection, ``remote.connections``) are driven by the same thread:
more requests in flight and more server processes working, without threads contending for the interpreter.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import paramiko

from onss_relay.errors import RelayError
from onss_relay.transport.base import IDLE_WAIT, PutFile, Upload, check_size
from onss_relay.transport.paramiko_async import (
    CMD_ATTRS,
    CMD_CLOSE,
    CMD_FSTAT,
    CMD_HANDLE,
    CMD_OPEN,
    CMD_STATUS,
    CMD_WRITE,
    AsyncSftp,
    Reply,
    attrs_size,
    int64,
    open_args,
)

CHUNK = 32768
WRITES_IN_FLIGHT = 32  # per file: 1 MiB outstanding at most
GATE_BATCH = 32  # uploads waiting at a gate are committed together once this many wait, or no reply is ready


class _FileWrite:
    """OPEN; then streamed WRITEs (bounded), FSTAT (size check) and CLOSE without waiting between them; once the
    size is checked and the close answered, tell the upload the file is done."""

    def __init__(self, engine: SftpPipeline, up: Upload, f: PutFile, path: str, on_closed: Callable[[], None]) -> None:
        self.engine = engine
        self.up = up
        self.f = f
        self.path = path
        self.on_closed = on_closed
        self.handle = b""
        self.offset = 0
        self.outstanding = 0
        self.eof = False
        self.closing = False  # FSTAT and CLOSE sent
        self.size_checked = False
        self.closed = False
        self.src = f.open() if f.local is not None else None

    def request(self, callback: Reply, command: int, *args: Any) -> None:
        """Send one request of this file, counted as in flight for its upload until its reply is read."""

        def answered(t: int, msg: paramiko.Message) -> None:
            self.up.reply_read()
            callback(t, msg)

        if self.engine.draining:
            return  # the run is ending: only the replies to what was sent are read
        self.up.request_sent()
        self.engine.request(answered, command, *args)

    def start(self) -> None:
        self.request(self._opened, CMD_OPEN, *open_args(self.path))

    def _opened(self, t: int, msg: paramiko.Message) -> None:
        self.engine.expect(t, msg, CMD_HANDLE, f"opening {self.f.folder}/{self.f.name}")
        self.handle = msg.get_binary()
        self._pump()

    def _next_chunk(self) -> bytes:
        if self.src is not None:
            return self.src.read(CHUNK)
        chunk = self.f.data[self.offset : self.offset + CHUNK]
        return chunk

    def _pump(self) -> None:
        while not self.eof and self.outstanding < WRITES_IN_FLIGHT:
            chunk = self._next_chunk()
            if not chunk:
                self.eof = True
                break
            self.request(self._written, CMD_WRITE, self.handle, int64(self.offset), chunk)
            self.offset += len(chunk)
            self.outstanding += 1
        if self.eof and not self.closing:
            # the last WRITE is sent: FSTAT and CLOSE follow it in the same flight. A write refused, or a size
            # that differs, still fails the file (its reply raises) before its step can complete.
            self.closing = True
            if self.src is not None:
                self.src.close()
            if self.f.local is None and not self.f.data:
                self.size_checked = True  # an empty file (the GO) opened with O_TRUNC: its size proves nothing
            else:
                self.request(self._stat, CMD_FSTAT, self.handle)
            self.request(self._closed, CMD_CLOSE, self.handle)

    def _written(self, t: int, msg: paramiko.Message) -> None:
        self.engine.expect(t, msg, CMD_STATUS, f"writing {self.f.folder}/{self.f.name}")
        self.outstanding -= 1
        self._pump()
        self._done_if_complete()

    def _stat(self, t: int, msg: paramiko.Message) -> None:
        self.engine.expect(t, msg, CMD_ATTRS, f"checking {self.f.folder}/{self.f.name}")
        check_size(self.f, attrs_size(msg))
        self.size_checked = True
        self._done_if_complete()

    def _closed(self, t: int, msg: paramiko.Message) -> None:
        self.engine.expect(t, msg, CMD_STATUS, f"closing {self.f.folder}/{self.f.name}")
        self.closed = True
        self._done_if_complete()

    def _done_if_complete(self) -> None:
        """Tell the upload the file is done once every write, its size check and its close are answered."""
        if self.size_checked and self.closed and self.outstanding == 0:
            self.on_closed()

    def abort(self) -> None:
        if self.src is not None:
            self.src.close()


class _UploadRun:
    """One Upload's progress: step by step, files of a step in parallel."""

    def __init__(self, engine: SftpPipeline, up: Upload) -> None:
        self.engine = engine
        self.up = up
        self.step = -1
        self.pending = 0
        self.files: list[_FileWrite] = []

    def advance(self) -> None:
        self.step += 1
        if self.step == len(self.up.steps):
            self.up.finish()
            self.engine.finished(self)
            return
        if not self.up.enter(self.step):
            self.engine.finished(self)
            return
        self.engine.gated.append(self)  # its files start once the gate is committed (SftpPipeline.open_gates)

    def start_step(self) -> None:
        files = self.up.files(self.step)
        self.pending = len(files)
        self.files = [_FileWrite(self.engine, self.up, f, self.engine.path(f), self._file_closed) for f in files]
        if not files:
            self.advance()
            return
        for fw in self.files:
            fw.start()

    def _file_closed(self) -> None:
        self.pending -= 1
        if self.pending == 0:
            self.advance()

    def abort(self) -> None:
        for fw in self.files:
            fw.abort()


class SftpPipeline:
    """Given a paramiko SFTP session and a path builder, keep up to ``window`` uploads in flight on it."""

    def __init__(
        self,
        sftp: paramiko.SFTPClient,
        path: Callable[[PutFile], str],
        classify: Callable[[BaseException, str], Exception],
        window: int = 64,
    ) -> None:
        self.session = AsyncSftp(sftp)
        self._path = path
        self.classify = classify
        self.window = window
        self.active: set[_UploadRun] = set()
        self.gated: list[_UploadRun] = []  # past their gate, waiting for the commit
        self.draining = False  # ending after an error: no new request, replies still read

    def path(self, f: PutFile) -> str:
        return self._path(f)

    def request(self, callback: Reply, command: int, *args: Any) -> None:
        self.session.request(callback, command, *args)

    @property
    def outstanding(self) -> int:
        return self.session.outstanding

    def expect(self, t: int, msg: paramiko.Message, wanted: int, what: str) -> None:
        """Given a reply, return if it is of the wanted type; raise the classified error otherwise."""
        if t == wanted and wanted != CMD_STATUS:
            return
        if t == CMD_STATUS:
            try:
                self.session.raise_status(msg)
            except (OSError, EOFError) as e:
                raise self.classify(e, what) from None
            if wanted == CMD_STATUS:
                return
        raise self.classify(OSError(f"unexpected SFTP reply type {t}"), what)

    def finished(self, run: _UploadRun) -> None:
        self.active.discard(run)

    def fill(self, take: Callable[[], Upload | None], room: Callable[[], int]) -> None:
        """Start uploads taken from ``take`` while fewer than ``window`` are active on this session and the
        connection has ``room()`` for more."""
        while len(self.active) < self.window and room() > 0:
            up = take()
            if up is None:
                return
            run = _UploadRun(self, up)
            self.active.add(run)
            run.advance()

    def gates_due(self) -> bool:
        """Whether the uploads waiting at a gate should go now: enough of them, or no reply left to read first."""
        return bool(self.gated) and (len(self.gated) >= GATE_BATCH or self.outstanding == 0 or not self.reply_ready())

    def open_gates(self) -> None:
        """Commit the gates of every upload waiting at one, then start their files.

        Uploads of one caller share a commit: the first call records them all, the others find nothing left.
        """
        gated, self.gated = self.gated, []
        for run in gated:
            run.up.commit()
        for run in gated:
            run.start_step()

    def reply_ready(self) -> bool:
        return self.session.reply_ready()

    def read_reply(self) -> None:
        self.session.read_reply()

    def abort(self) -> None:
        for run in list(self.active):
            run.abort()


class _Driver:
    """The loop of ``run_pipelines``: sessions, the uploads source, and the event paramiko sets on data."""

    def __init__(
        self,
        new_pipelines: Callable[[], list[SftpPipeline]],
        uploads: Iterator[Upload | None],
        timeout: float | None,
        window: int,
    ) -> None:
        self.new_pipelines = new_pipelines
        self.source = iter(uploads)
        self.timeout = timeout
        self.window = window  # uploads in flight on the connection, all sessions together
        self.exhausted = False
        self.wake = threading.Event()  # set by paramiko when data (or the end) arrives on any of the sessions
        self.pipelines: list[SftpPipeline] = []

    def add_sessions(self) -> None:
        """Take the sessions opened since the last turn and share the connection's window among the sessions
        open now: the first session alone may carry the whole window until the others open (in the
        background, round trips each: at 20 ms each way 0.4-0.5 s after the first, which had a quarter of the
        window meanwhile); a session above its new share takes no more until under."""
        fresh = self.new_pipelines()
        for p in fresh:
            p.session.wake_on_data(self.wake)
            self.pipelines.append(p)
        if fresh:
            for p in self.pipelines:
                p.window = -(-self.window // len(self.pipelines))

    def room(self) -> int:
        """How many more uploads the connection's window takes now."""
        return self.window - sum(len(p.active) for p in self.pipelines)

    def take(self) -> Upload | None:
        if self.exhausted:
            return None
        try:
            return next(self.source)  # None: none ready yet
        except StopIteration:
            self.exhausted = True
            return None

    def turn(self) -> bool:
        """One turn: start uploads, open due gates or read ready replies; False once everything is finished."""
        self.add_sessions()
        for p in self.pipelines:
            p.fill(self.take, self.room)
        due = [p for p in self.pipelines if p.gates_due()]
        for p in due:
            p.open_gates()
        if due:
            return True
        waiting = [p for p in self.pipelines if p.outstanding]
        if not waiting:
            if any(p.active for p in self.pipelines):
                return True
            if self.exhausted:
                return False
            time.sleep(IDLE_WAIT)  # nothing in flight and none ready yet
            return True
        for p in self.ready(waiting):
            p.read_reply()
        return True

    def ready(self, waiting: list[SftpPipeline]) -> list[SftpPipeline]:
        """The sessions with a reply to read, waiting up to the timeout for one."""
        ready = [p for p in waiting if p.reply_ready()]
        if ready:
            return ready
        for p in self.pipelines:
            p.session.flush()  # what the replies read so far asked for goes out before waiting
        self.wake.clear()  # then look again: a reply landing in between sets it, and wait() returns at once
        ready = [p for p in waiting if p.reply_ready() or p.session.ended()]
        if not ready and not self.wake.wait(self.timeout):
            raise TimeoutError(f"no reply from the SFTP server in {self.timeout} s")
        return ready or [p for p in waiting if p.reply_ready() or p.session.ended()]

    def drain(self) -> None:
        """After an error the server answered (a refusal, a size that differs, a local problem), read the replies
        to every request still in flight, sending none, so that the connection is given up with nothing on its
        way; a connection that stops answering meanwhile is left as it is (those requests stay in doubt)."""
        for p in self.pipelines:
            p.draining = True
        try:
            while waiting := [p for p in self.pipelines if p.outstanding]:
                for p in self.ready(waiting):
                    with contextlib.suppress(RelayError):  # a reply that is an error: answered all the same
                        p.read_reply()
        except (OSError, EOFError, paramiko.SSHException):
            return


def run_pipelines(
    new_pipelines: Callable[[], list[SftpPipeline]],
    uploads: Iterator[Upload | None],
    timeout: float | None,
    window: int,
) -> None:
    """Given a source of SFTP sessions (one SSH connection may carry several, opening while this runs),
    uploads and how many may be in flight on the connection, run the uploads
    spread over the sessions from this one thread, until every upload is finished.

    Uploads reaching a gate wait while more replies are ready to be read, so that one commit lets many of
    them through. No reply on any busy session for ``timeout`` seconds raises TimeoutError.
    """
    driver = _Driver(new_pipelines, uploads, timeout, window)
    try:
        while driver.turn():
            pass
    except BaseException as e:
        if isinstance(e, RelayError):  # raised by us on a reply or a local problem: the connection still works
            driver.drain()
        for p in driver.pipelines:
            p.abort()
        raise
