"""The paramiko internals that the SFTP upload pipeline relies on, wrapped in one place.

paramiko's own file prefetching sends SFTP requests without waiting for their replies, through private
methods of ``SFTPClient``; the pipeline (sftp_pipeline.py) uses the same ones to keep many uploads in
flight from one thread. Everything it needs from paramiko beyond the public API is here, and
tests/test_paramiko_async.py pins each piece against a real sshd, so that a paramiko upgrade that changes
one of them fails that test rather than an upload.
"""

from __future__ import annotations

import struct
import threading
from collections.abc import Callable
from typing import Any

import paramiko
from paramiko.sftp import (
    CMD_ATTRS,
    CMD_CLOSE,
    CMD_FSTAT,
    CMD_HANDLE,
    CMD_OPEN,
    CMD_STATUS,
    CMD_WRITE,
    SFTP_FLAG_CREATE,
    SFTP_FLAG_TRUNC,
    SFTP_FLAG_WRITE,
    int64,
)
from paramiko.sftp_attr import SFTPAttributes

__all__ = [
    "CMD_ATTRS",
    "CMD_CLOSE",
    "CMD_FSTAT",
    "CMD_HANDLE",
    "CMD_OPEN",
    "CMD_STATUS",
    "CMD_WRITE",
    "OPEN_FOR_WRITE",
    "AsyncSftp",
    "Reply",
    "int64",
]

OPEN_FOR_WRITE = SFTP_FLAG_WRITE | SFTP_FLAG_CREATE | SFTP_FLAG_TRUNC

Reply = Callable[[int, paramiko.Message], None]  # called with the reply's type (CMD_…) and message


class _Waiter:
    """What paramiko calls back when the reply to an asynchronous request is read: ``_async_response``."""

    __slots__ = ("callback", "__weakref__")  # weak-referenceable, for paramiko versions that keep weak ones

    def __init__(self, callback: Reply) -> None:
        self.callback = callback

    def _async_response(self, t: int, msg: paramiko.Message, num: int) -> None:
        self.callback(t, msg)


class AsyncSftp:
    """Given a paramiko SFTP session, send requests without waiting and read their replies one at a time.

    Requests made between two reads are sent together, in one write to the channel (one SSH packet, encrypted
    once, while they fit in one), as ``flush`` does: at the next ``read_reply`` or ``flush``, before anything
    waits for a reply. They are numbered and expected in paramiko's table as its own ``_async_request`` does.
    """

    def __init__(self, sftp: paramiko.SFTPClient) -> None:
        self._sftp = sftp
        channel = sftp.get_channel()
        assert channel is not None
        self.channel = channel
        self._waiting: set[_Waiter] = set()  # requests sent, reply not read yet (paramiko may hold them weakly)
        self._out: list[bytes] = []  # requests packed, not written to the channel yet

    def request(self, callback: Reply, command: int, *args: Any) -> None:
        """Queue one request (``command`` with its arguments, as paramiko packs them); ``callback`` gets the
        reply. It is sent at the next ``flush`` or ``read_reply``."""

        def on_reply(t: int, msg: paramiko.Message) -> None:
            self._waiting.discard(waiter)
            callback(t, msg)

        waiter = _Waiter(on_reply)
        self._waiting.add(waiter)
        self._out.append(_packed(self._sftp, waiter, command, args))

    def flush(self) -> None:
        """Send every request queued since the last flush, in one write to the channel."""
        if self._out:
            out = b"".join(self._out)
            self._out = []
            self._sftp._write_all(out)

    @property
    def outstanding(self) -> int:
        """How many requests wait for their reply."""
        return len(self._waiting)

    def read_reply(self) -> None:
        """Send what is queued, then read one reply (blocking) and hand it to its request's callback."""
        self.flush()
        self._sftp._read_response()

    def reply_ready(self) -> bool:
        return bool(self.channel.recv_ready())

    def ended(self) -> bool:
        """Whether the session is closed or the server sent EOF: reading now raises instead of blocking."""
        return bool(self.channel.closed or self.channel.eof_received)

    def wake_on_data(self, event: threading.Event) -> None:
        """Set ``event`` whenever data (or the end) arrives on this session: what ``Channel.fileno()`` does,
        without an OS pipe written for every packet."""
        self.channel.in_buffer.set_event(event)

    def raise_status(self, msg: paramiko.Message) -> None:
        """Given a STATUS reply, return if it says OK; raise paramiko's OSError/EOFError for it otherwise."""
        self._sftp._convert_status(msg)


def _packed(sftp: paramiko.SFTPClient, waiter: _Waiter, command: int, args: tuple[Any, ...]) -> bytes:
    """Given a session, a waiter, a command and its arguments, number the request and expect its reply in
    paramiko's table (as ``SFTPClient._async_request`` does); return its packet (length, type, body) to send."""
    with sftp._lock:
        msg = paramiko.Message()
        msg.add_int(sftp.request_number)
        for item in args:
            if isinstance(item, int64):
                msg.add_int64(item)
            elif isinstance(item, int):
                msg.add_int(item)
            elif isinstance(item, SFTPAttributes):
                item._pack(msg)
            else:
                msg.add_string(item)
        sftp._expecting[sftp.request_number] = waiter
        sftp.request_number += 1
    body: bytes = msg.asbytes()
    return struct.pack(">IB", len(body) + 1, command) + body


def attrs_size(msg: paramiko.Message) -> int | None:
    """Given an ATTRS reply, return the file size it carries."""
    size: int | None = SFTPAttributes._from_msg(msg).st_size
    return size


def open_args(path: str) -> tuple[str, int, SFTPAttributes]:
    """The arguments of an OPEN request that creates or truncates ``path`` for writing."""
    return path, OPEN_FOR_WRITE, SFTPAttributes()


def attrs_mode_size(msg: paramiko.Message) -> tuple[int | None, int]:
    """Given an ATTRS reply, return the file's mode and size (0 when the server leaves it out)."""
    attrs = SFTPAttributes._from_msg(msg)
    return attrs.st_mode, attrs.st_size or 0


def read_args(path: str) -> tuple[str, int, SFTPAttributes]:
    """The arguments of an OPEN request that opens ``path`` for reading only."""
    return path, paramiko.sftp.SFTP_FLAG_READ, SFTPAttributes()
