"""The transport interface: move bytes to and from the remote home (IN*, OUT* folders). Knows nothing of declarations.

Implementations raise TransientRemoteError (retry) or PermanentRemoteError (stop and explain), never library errors.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import hashlib
import io
import socket
import struct
import time
import typing
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, BinaryIO, Protocol

from onss_relay.errors import (
    BadInput,
    LocalError,
    PermanentRemoteError,
    RemoteError,
    RemoteFileGone,
    TransientRemoteError,
    describe_os_error,
)
from onss_relay.names import ALL_FOLDERS

if typing.TYPE_CHECKING:
    from onss_relay.transport.batch import Fetch

COPY_CHUNK = 1 << 20


@dataclasses.dataclass(frozen=True)
class RemoteEntry:
    name: str
    size: int
    kind: str  # "file", "dir", "link" or "other"


class Transport(Protocol):
    """One connection to the remote home. Not thread-safe: use one per thread.

    ``delivers_late``: whether a request sent on this connection can still reach the server after the
    connection was given up (a network path that held it: SFTP, FTP), so that the sets whose requests were
    in flight must wait for a quiet period before anything more of them is put (stages/uncertain.py).
    """

    delivers_late: bool

    def list(self, folder: str) -> list[RemoteEntry]:
        """Given a folder name (IN, OUTTEST, …), return its entries, hostile names included."""
        ...

    def scan(self, folder: str) -> Iterator[RemoteEntry]:
        """Given a folder name, yield its entries as the server sends them (any order, hostile names included),
        without holding the whole listing: what the poller reads an OUT folder of any size with. Consume it
        to the end before any other call on this connection."""
        ...

    def put(self, src: BinaryIO, folder: str, name: str) -> None:
        """Given an open local file, stream it to folder/name (atomically where the protocol allows)."""
        ...

    def put_bytes(self, data: bytes, folder: str, name: str) -> None:
        """Given a small payload (a GO is empty), write it to folder/name."""
        ...

    def get(self, folder: str, name: str, dest: BinaryIO, max_size: int) -> int:
        """Given a remote file, stream it into dest, refusing more than max_size bytes; return the size."""
        ...

    def delete(self, folder: str, name: str) -> None: ...

    def get_many(self, folder: str, fetches: Sequence[Fetch], max_size: int) -> None:
        """Given files of one folder, copy each into its ``dest`` (several in flight where the protocol allows);
        a file's own error is kept on its Fetch (batch.py), a connection's is raised."""
        ...

    def delete_many(self, folder: str, names: Sequence[str]) -> None:
        """Given names in one folder, remove them all (several in flight where the protocol allows); raise the
        first error once every reply is in. A name already gone is fine."""
        ...

    def size(self, folder: str, name: str) -> int | None:
        """Return the remote file's size, or None when it does not exist."""
        ...

    def exists(self, folder: str, name: str) -> bool: ...

    def run_uploads(self, uploads: Iterator[Upload | None], window: int) -> None:
        """Given uploads (pulled lazily), run up to ``window`` at once, each in step order; raise on a remote error.

        A None from ``uploads`` means none is ready yet: carry on with those in flight and ask again later.
        """
        ...

    def alive(self, ask: bool = True) -> bool:
        """Whether this connection is usable: not closed, and (``ask``) the server answers on it now (asked
        before one kept idle carries a set; without ``ask``, local knowledge only, no round trip)."""
        ...

    def prepare_uploads(self) -> None:
        """Open ahead of time what run_uploads will use (SFTP: its extra sessions); nothing for the others."""
        ...

    def close(self) -> None: ...

    def abort(self) -> None:
        """Give the connection up at once: a reset that discards what is still queued to send, not a goodbye
        that waits for it (a transport with nothing to discard closes)."""
        ...


def check_folder(folder: str) -> str:
    """Given a folder name, return it if it is one of the six remote folders; never build other paths."""
    if folder not in ALL_FOLDERS:
        raise ValueError(f"not a transfer-point folder: {folder!r}")
    return folder


def check_remote_name(name: str) -> str:
    """Given a file name for a remote path, return it if it is a plain name; raise ValueError otherwise."""
    if not name or name in (".", "..") or "/" in name or "\\" in name or "\x00" in name or len(name.encode()) > 255:
        raise ValueError(f"not a plain file name: {name!r}")
    return name


class SizeLimitExceeded(RemoteError):
    """A remote file is larger than the configured cap; it is left on the server."""


def copy_capped(src: BinaryIO, dest: BinaryIO, max_size: int, what: str) -> int:
    """Given two file objects, copy src into dest in chunks, raising SizeLimitExceeded past max_size."""
    total = 0
    while chunk := src.read(COPY_CHUNK):
        total += len(chunk)
        if total > max_size:
            raise SizeLimitExceeded(f"{what} is larger than poll.max_size ({max_size} bytes); left on the server")
        dest.write(chunk)
    return total


def classify_os_error(e: OSError, what: str) -> RemoteError:
    """Given an OSError from a remote operation, return the transient or permanent error to raise."""
    if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return PermanentRemoteError(f"{what}: permission denied on the remote side ({e.strerror})")
    if e.errno == errno.ENOENT:
        return RemoteFileGone(f"{what}: no such remote file or folder")
    if e.errno in (errno.ELOOP, errno.EISDIR, errno.ENOTDIR):
        return PermanentRemoteError(f"{what}: not a regular file")
    return TransientRemoteError(f"{what}: {e.strerror or e}")


class ChangedWhileSending(BadInput):
    """The bytes read to be sent are not the bytes that were signed; the upload stops before its GO."""

    def __init__(self, key: str, name: str, detail: str) -> None:
        super().__init__("declaration changed while it was being sent", detail)
        self.key = key
        self.name = name


@dataclasses.dataclass(frozen=True)
class PutFile:
    """One file to write remotely: from a local path (streamed) or from bytes (a GO is empty).

    With ``digest`` ("algorithm:hex", what was signed), every byte read from ``local`` is hashed as it is
    sent and the reader raises ChangedWhileSending at the end when they differ, before the file is closed
    remotely and so before any GO. ``key`` names the upload it belongs to.
    """

    folder: str
    name: str
    local: Path | None = None
    data: bytes = b""
    digest: str | None = None
    key: str = ""

    def size(self) -> int:
        return self.local.stat().st_size if self.local is not None else len(self.data)

    def open(self) -> BinaryIO:
        """The bytes to send, as a stream: the local file (checked against ``digest``), or ``data``."""
        if self.local is None:
            return io.BytesIO(self.data)
        try:
            src = self.local.open("rb")
        except OSError as e:
            raise LocalError(describe_os_error(e, f"reading {self.name} to send it")) from None
        return typing.cast(BinaryIO, _LocalSource(src, self))


class _LocalSource(io.RawIOBase):
    """A local file being sent: read errors are local (LocalError, never taken for a network error), and with
    a digest every byte is hashed; at the end, the digest must be the expected one."""

    def __init__(self, src: BinaryIO, f: PutFile) -> None:
        self.src = src
        self.f = f
        algorithm, _, self.expected = (f.digest or "sha256:").partition(":")
        self.h = hashlib.new(algorithm) if f.digest else None

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        try:
            chunk = self.src.read(size)
        except OSError as e:
            raise LocalError(describe_os_error(e, f"reading {self.f.name} to send it")) from None
        if self.h is None:
            return chunk
        if chunk:
            self.h.update(chunk)
        elif self.h.hexdigest() != self.expected:
            raise ChangedWhileSending(
                self.f.key, self.f.name, f"{self.f.name}: the bytes read to send are not the bytes signed"
            )
        return chunk

    def readinto(self, buffer: Any) -> int:
        chunk = self.read(len(buffer))
        buffer[: len(chunk)] = chunk
        return len(chunk)

    def close(self) -> None:
        self.src.close()
        super().close()


@dataclasses.dataclass(frozen=True)
class Step:
    """One step of an upload (FI and FS, then GO): its files are written, in any order, only once the step before is
    complete and this step's gate is durable."""

    name: str
    files: list[PutFile]


class GateOrderError(AssertionError):
    """A transport asked for a step's files before that step's gate was committed: a bug, never retried."""


class UploadAbandoned(Exception):
    """Raised by a gate to give one upload up (its caller has dealt with it); the others continue."""


class Upload:
    """An ordered upload, and the one place where its order is enforced, whatever the transport.

    For each step in turn a transport calls ``enter(i)`` (runs the caller's gate, which records the set's
    state or abandons the upload), ``commit()`` (makes every gate passed so far durable), then takes the
    step's files from ``files(i)`` and writes them, each size-checked; after the last step, ``finish()``.
    ``files(i)`` refuses (GateOrderError) until step i's gate is committed and step i-1 is complete, so a
    transport cannot write a GO before the journal says ``go_sending``. Uploads of one caller may share
    one commit: a transport with several uploads at a gate enters them all, then commits each (the first
    commit records them all, the others find nothing left), then starts their files.
    Transports call these from the thread that called ``run_uploads``.
    """

    def __init__(
        self,
        key: str,
        steps: list[Step],
        gate: Callable[[Step], None],
        done: Callable[[], None],
        commit: Callable[[], None] = lambda: None,
        before_put: Callable[[], None] = lambda: None,
    ) -> None:
        self.key = key
        self._before_put = before_put  # raises when nothing more may be put (the relay's leadership lapsed)
        self.steps = steps
        self._gate = gate
        self._done = done
        self._commit = commit
        self._entered = -1  # the last step whose gate ran
        self._committed = -1  # the last step whose gate is durable
        self.in_flight = 0  # requests of this upload sent on the connection and not answered yet

    def request_sent(self) -> None:
        """Count a request of this upload sent on the connection (transports call it for every write)."""
        self.in_flight += 1

    def reply_read(self) -> None:
        """Count the answer to one of this upload's requests."""
        self.in_flight -= 1

    def step_in_flight(self) -> str | None:
        """The name of the step ("FI and FS", GO) with requests in flight, or None when every request was answered:
        if the connection is given up now, that step's requests may still reach the server."""
        return self.steps[self._entered].name if self.in_flight > 0 and self._entered >= 0 else None

    def enter(self, i: int) -> bool:
        """Run step i's gate; return False when the caller abandoned the upload (nothing more to do)."""
        if i != self._entered + 1 or self._committed != self._entered:
            raise GateOrderError(
                f"{self.key}: step {i} entered after step {self._entered} (committed {self._committed})"
            )
        try:
            self._gate(self.steps[i])
        except UploadAbandoned:
            return False
        self._entered = i
        return True

    def commit(self) -> None:
        """Make the gates entered so far durable (the caller's commit, shared by its uploads)."""
        self._commit()
        self._committed = self._entered

    def files(self, i: int) -> list[PutFile]:
        """Step i's files, once its gate is committed."""
        if i > self._committed or i != self._entered:
            raise GateOrderError(
                f"{self.key}: files of step {self.steps[i].name} asked for before its gate was committed"
            )
        self._before_put()  # the last check before a step's files are opened (a GO above all)
        return self.steps[i].files

    def before_next_file(self) -> None:
        """The check again before each further file of a step put one after the other (FTP, local): a long FI
        must not let its FS go after the relay's lease lapsed."""
        self._before_put()

    def finish(self) -> None:
        """Tell the caller the last step is complete."""
        if self._committed != len(self.steps) - 1:
            raise GateOrderError(f"{self.key}: finished after step {self._committed} of {len(self.steps)}")
        self._done()


IDLE_WAIT = 0.01  # seconds to wait before asking again when no upload is ready and none is in flight


def run_uploads_sequentially(t: Transport, uploads: Iterator[Upload | None]) -> None:
    """Given a transport and uploads, run them one file at a time with a size check after each put."""
    for up in uploads:
        if up is None:
            time.sleep(IDLE_WAIT)
            continue
        for i in range(len(up.steps)):
            if not up.enter(i):
                break
            up.commit()
            for n, f in enumerate(up.files(i)):
                if n:
                    up.before_next_file()
                put_counted(t, up, f)
                check_size(f, t.size(f.folder, f.name))
        else:
            up.finish()


def put_counted(t: Transport, up: Upload, f: PutFile) -> None:
    """Given a connection, an upload and one of its files, put the file, counted as in flight for the upload
    until the server answers (its reply, or an error that is its reply); an error without a reply leaves it
    counted: the put may still reach the server."""
    up.request_sent()
    try:
        if f.local is not None:
            with f.open() as src:
                t.put(src, f.folder, f.name)
        else:
            t.put_bytes(f.data, f.folder, f.name)
    except RemoteError as e:
        if e.answered:
            up.reply_read()
        raise
    up.reply_read()


def abort_socket(sock: socket.socket | None) -> None:
    """Given a connected socket, make its close a reset (SO_LINGER 0): what is still queued to send is
    discarded, and the peer learns at once that the connection is gone."""
    if sock is None:
        return
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


def check_size(f: PutFile, remote: int | None) -> None:
    """Given a file just put and the size the server reports, raise TransientRemoteError when they differ."""
    local = f.size()
    if remote != local:
        raise TransientRemoteError(f"{f.folder}/{f.name}: {remote} bytes on the server after upload, {local} locally")
