"""Many downloads and removes in flight on one SFTP session, driven from one thread (the poll's side).

Over a WAN a file fetched one request after the other costs LSTAT, OPEN, READ, READ (end of file) and CLOSE:
five round trips. Here up to ``window`` files progress at once, each keeping its own order (LSTAT checks it is
a regular file before it is opened, its reads run to the end of file, then CLOSE), and a file's reads for its
listed size go out together with the read that finds the end. Removes go out all at once and their replies
are read after. Requests and replies go through paramiko_async.py, as the upload pipeline's do.
"""

from __future__ import annotations

import stat
from collections.abc import Callable, Iterator
from typing import Any

import paramiko
from paramiko.sftp import (
    CMD_ATTRS,
    CMD_CLOSE,
    CMD_DATA,
    CMD_HANDLE,
    CMD_LSTAT,
    CMD_OPEN,
    CMD_READ,
    CMD_REMOVE,
    CMD_STATUS,
    SFTP_EOF,
    int64,
)

from onss_relay.errors import PermanentRemoteError, RemoteError, RemoteFileGone
from onss_relay.transport.base import SizeLimitExceeded
from onss_relay.transport.batch import Fetch
from onss_relay.transport.paramiko_async import AsyncSftp, Reply, attrs_mode_size, read_args

CHUNK = 32768
READS_IN_FLIGHT = 16  # per file: 512 KiB outstanding at most
FILES_IN_FLIGHT = 64
REMOVES_IN_FLIGHT = 256

Classify = Callable[[BaseException, str], RemoteError]


class _Engine:
    """One session's requests and replies: a reply's type is checked here, its meaning by the caller."""

    def __init__(self, session: AsyncSftp, classify: Classify) -> None:
        self.session = session
        self.classify = classify

    def request(self, callback: Reply, command: int, *args: Any) -> None:
        self.session.request(callback, command, *args)

    def status_error(self, msg: paramiko.Message, what: str) -> RemoteError | None:
        """Given a STATUS reply, return None if it says OK, else the classified error (ENOENT: RemoteFileGone)."""
        try:
            self.session.raise_status(msg)
        except (OSError, EOFError) as e:
            return self.classify(e, what)
        return None

    def drain(self) -> None:
        """Read replies until none is awaited."""
        while self.session.outstanding:
            self.session.read_reply()


class _FileFetch:
    """LSTAT (a regular file?), OPEN, READs to the end of file into ``dest``, CLOSE; then ``done()``."""

    def __init__(self, engine: _Engine, fetch: Fetch, path: str, what: str, max_size: int, done: Callable[[], None]):
        self.engine = engine
        self.fetch = fetch
        self.path = path
        self.what = what
        self.max_size = max_size
        self.done = done
        self.handle = b""
        self.planned: list[int] = []  # offsets still to ask for
        self.outstanding = 0
        self.eof_at: int | None = None
        self.shorts: list[tuple[int, int]] = []  # (offset, length) a short read left unasked
        self.end = 0  # highest byte received + 1

    def start(self) -> None:
        self.engine.request(self._stat, CMD_LSTAT, self.path)

    def _fail(self, error: RemoteError) -> None:
        self.fetch.error = error
        if self.handle:
            self.engine.request(lambda t, msg: self.done(), CMD_CLOSE, self.handle)
            self.handle = b""
        else:
            self.done()

    def _stat(self, t: int, msg: paramiko.Message) -> None:
        if t != CMD_ATTRS:
            self._fail(self._unexpected(t, msg, f"checking {self.what}"))
            return
        mode, size = attrs_mode_size(msg)
        if mode is None or not stat.S_ISREG(mode):
            self._fail(PermanentRemoteError(f"{self.what} is not a regular file"))
        elif size > self.max_size:
            self._fail(self._too_large())
        else:
            self.planned = [*range(0, size, CHUNK), size]  # the last read finds the end of file
            self.engine.request(self._opened, CMD_OPEN, *read_args(self.path))

    def _opened(self, t: int, msg: paramiko.Message) -> None:
        if t != CMD_HANDLE:
            self._fail(self._unexpected(t, msg, f"opening {self.what}"))
            return
        self.handle = msg.get_binary()
        self._pump()

    def _pump(self) -> None:
        while self.planned and self.outstanding < READS_IN_FLIGHT:
            self._read(self.planned.pop(0), CHUNK)

    def _read(self, offset: int, length: int) -> None:
        self.outstanding += 1
        self.engine.request(
            lambda t, msg: self._got(offset, length, t, msg), CMD_READ, self.handle, int64(offset), length
        )

    def _got(self, offset: int, length: int, t: int, msg: paramiko.Message) -> None:
        self.outstanding -= 1
        if self.fetch.error is not None:
            self._finish_failed()
            return
        if t == CMD_DATA:
            self._data(offset, length, msg.get_string())
        elif t == CMD_STATUS and _is_eof(msg):
            self.eof_at = offset if self.eof_at is None else min(self.eof_at, offset)
        else:
            self.fetch.error = self._unexpected(t, msg, f"downloading {self.what}")
        if self.fetch.error is not None:
            self._finish_failed()
            return
        self._pump()
        if self.outstanding == 0:
            self._settle()

    def _data(self, offset: int, length: int, data: bytes) -> None:
        if offset + len(data) > self.max_size:
            self.fetch.error = self._too_large()
            return
        self.fetch.dest.seek(offset)
        self.fetch.dest.write(data)
        self.end = max(self.end, offset + len(data))
        if 0 < len(data) < length:
            self.shorts.append((offset + len(data), length - len(data)))

    def _settle(self) -> None:
        """Every read answered: ask again for what short reads left before the end, read on if the file grew,
        or close it when all of it up to the end of file is here."""
        if self.fetch.error is not None:
            self._finish_failed()
            return
        holes = [(o, n) for o, n in self.shorts if self.eof_at is None or o < self.eof_at]
        self.shorts = []
        if holes:
            for o, n in holes:
                self._read(o, n)
        elif self.eof_at is None or self.eof_at < self.end:  # grew since its LSTAT: read on from what we hold
            self.eof_at = None
            self.planned = [self.end]
            self._pump()
        else:
            self.fetch.size = self.eof_at
            self.engine.request(self._closed, CMD_CLOSE, self.handle)
            self.handle = b""

    def _finish_failed(self) -> None:
        if self.outstanding == 0:
            assert self.fetch.error is not None
            self._fail(self.fetch.error)

    def _closed(self, t: int, msg: paramiko.Message) -> None:
        error = self.engine.status_error(msg, f"closing {self.what}") if t == CMD_STATUS else None
        if error is not None:
            self.fetch.error = error
        self.done()

    def _too_large(self) -> SizeLimitExceeded:
        return SizeLimitExceeded(
            f"{self.what} is larger than poll.max_size ({self.max_size} bytes); left on the server"
        )

    def _unexpected(self, t: int, msg: paramiko.Message, what: str) -> RemoteError:
        if t == CMD_STATUS:
            error = self.engine.status_error(msg, what)
            if error is not None:
                return error
        return self.engine.classify(OSError(f"unexpected SFTP reply type {t}"), what)


def _is_eof(msg: paramiko.Message) -> bool:
    """Given a STATUS reply, say whether it is end of file, leaving it to be read again (past its request id)."""
    code = msg.get_int()
    msg.rewind()
    msg.get_int()  # the request id, which paramiko had read before handing the reply over
    return bool(code == SFTP_EOF)


def fetch_many(session: AsyncSftp, classify: Classify, fetches: list[tuple[Fetch, str, str]], max_size: int) -> None:
    """Given a session, the error classifier and (fetch, remote path, "FOLDER/name") triples, copy each file into
    its fetch's dest with up to FILES_IN_FLIGHT at once; a file's own error is kept on its Fetch. Raise only what
    a connection raises (the caller classifies it)."""
    engine = _Engine(session, classify)
    waiting: Iterator[tuple[Fetch, str, str]] = iter(fetches)

    def start_next() -> None:
        item = next(waiting, None)
        if item is not None:
            _FileFetch(engine, item[0], item[1], item[2], max_size, start_next).start()

    for _ in range(FILES_IN_FLIGHT):
        start_next()
    engine.drain()
    for f, _, _ in fetches:  # a RemoteFileGone for a file that vanished is its own; a transient error is not
        if f.error is not None and not isinstance(f.error, SizeLimitExceeded | PermanentRemoteError):
            raise f.error


def remove_many(session: AsyncSftp, classify: Classify, paths: list[tuple[str, str]]) -> None:
    """Given a session, the error classifier and (remote path, "FOLDER/name") pairs, send the removes with up to
    REMOVES_IN_FLIGHT awaiting their reply; once all are answered raise the first error (a file already gone
    is fine)."""
    engine = _Engine(session, classify)
    errors: list[RemoteError] = []
    waiting = iter(paths)

    def send_next() -> None:
        item = next(waiting, None)
        if item is not None:
            engine.request(lambda t, msg: removed(item[1], t, msg), CMD_REMOVE, item[0])

    def removed(what: str, t: int, msg: paramiko.Message) -> None:
        error = engine.status_error(msg, f"deleting {what}") if t == CMD_STATUS else None
        if error is not None and not isinstance(error, RemoteFileGone):
            errors.append(error)
        send_next()

    for _ in range(REMOVES_IN_FLIGHT):
        send_next()
    engine.drain()
    if errors:
        raise errors[0]
