"""Requests sent without waiting and their replies read, on an SFTP session that paramiko opened: our own small
request/reply layer (sftp_wire.py packs and cuts the packets) over the paramiko channel, which still does the SSH.

paramiko's SFTPClient builds a Message object, takes a lock and fills a weak table for every request, and reads
every reply with two blocking reads of the channel (its length, then the rest). Here a request is packed with
struct and queued; what is queued leaves in one channel write before anything waits for a reply; replies are
taken from the channel in large reads and every whole one is handed to its callback. The session stays
paramiko's: its request numbers are used and advanced, so paramiko's own calls (stat, listdir) work on it
between two runs of this layer. After a run that raised, the session may hold part of a reply: the callers
drop the connection then (the upload aborts it, the poll closes it). tests/test_paramiko_async.py pins this
layer against a real sshd, and what it takes from paramiko beyond the public API.
"""

from __future__ import annotations

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

from onss_relay.transport.sftp_wire import (
    NO_ATTRIBUTES,
    attrs_size,
    pack_request,
    reply_body,
    status_ok,
    whole_reply,
)

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
    "attrs_size",
    "int64",
]

OPEN_FOR_WRITE = SFTP_FLAG_WRITE | SFTP_FLAG_CREATE | SFTP_FLAG_TRUNC

Reply = Callable[[int, paramiko.Message], None]  # gets the reply's type (CMD_…) and the reply read past its number
RECEIVE = 1 << 16  # bytes asked of the channel at once: many replies (a reply is ~30 bytes, a write's 28)


class AsyncSftp:
    """Given a paramiko SFTP session, send requests without waiting and read their replies.

    Requests made between two receives are sent together, in one write to the channel (one SSH packet, encrypted
    once, while they fit in one), at the next ``flush`` or when ``read_reply`` must wait for the channel.
    """

    def __init__(self, sftp: paramiko.SFTPClient) -> None:
        self._sftp = sftp
        channel = sftp.get_channel()
        assert channel is not None
        self.channel = channel
        self._waiting: dict[int, Reply] = {}  # request number → callback: sent (or queued), reply not read yet
        self._out: list[bytes] = []  # requests packed, not written to the channel yet
        self._in = bytearray()  # received, not handed over yet (the start of a reply, or several)
        self.receive_size = RECEIVE

    def request(self, callback: Reply, command: int, *args: Any) -> None:
        """Queue one request (``command`` with its arguments, see ``pack_request``); ``callback`` gets the
        reply. It is sent at the next ``flush``, or before ``read_reply`` waits."""
        number = self._sftp.request_number  # paramiko's numbering: never a number used twice on the session
        self._sftp.request_number = number + 1
        self._waiting[number] = callback
        self._out.append(pack_request(command, number, args))

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
        """Hand every reply received whole to its request's callback, at least one: when none is whole yet, send
        what is queued and wait for the channel (up to its timeout). A callback that raises leaves the replies
        after it for the next call. The channel closing before a whole reply raises SSHException."""
        while (reply := whole_reply(self._in)) is None:
            self.flush()
            self._receive()
        while reply is not None:
            t, number, end = reply
            msg = reply_body(self._in, end)
            del self._in[:end]
            callback = self._waiting.pop(number, None)
            if callback is not None:  # a reply to no request of ours is dropped, as paramiko drops them
                callback(t, msg)
            reply = whole_reply(self._in)

    def _receive(self) -> None:
        data = self.channel.recv(self.receive_size)
        if not data:
            within = f", {len(self._in)} bytes into a reply" if self._in else ""
            raise paramiko.SSHException(f"Server connection dropped: the SFTP session ended{within}")
        self._in += data

    def reply_ready(self) -> bool:
        """Whether ``read_reply`` would not wait: a whole reply received, or data on the channel."""
        return whole_reply(self._in) is not None or bool(self.channel.recv_ready())

    def ended(self) -> bool:
        """Whether the session is closed or the server sent EOF: reading now raises instead of blocking."""
        return bool(self.channel.closed or self.channel.eof_received)

    def wake_on_data(self, event: threading.Event) -> None:
        """Set ``event`` whenever data (or the end) arrives on this session: what ``Channel.fileno()`` does,
        without an OS pipe written for every packet."""
        self.channel.in_buffer.set_event(event)

    def raise_status(self, msg: paramiko.Message) -> None:
        """Given a STATUS reply, return if it says OK; raise paramiko's OSError/EOFError for it otherwise."""
        if not status_ok(msg):  # an OK (most replies) without paramiko's reading of its text
            self._sftp._convert_status(msg)


def open_args(path: str) -> tuple[str, int, object]:
    """The arguments of an OPEN request that creates or truncates ``path`` for writing."""
    return path, OPEN_FOR_WRITE, NO_ATTRIBUTES


def attrs_mode_size(msg: paramiko.Message) -> tuple[int | None, int]:
    """Given an ATTRS reply, return the file's mode and size (0 when the server leaves it out)."""
    attrs = SFTPAttributes._from_msg(msg)
    return attrs.st_mode, attrs.st_size or 0


def read_args(path: str) -> tuple[str, int, object]:
    """The arguments of an OPEN request that opens ``path`` for reading only."""
    return path, paramiko.sftp.SFTP_FLAG_READ, NO_ATTRIBUTES
