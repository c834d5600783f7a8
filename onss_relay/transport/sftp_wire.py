"""SFTP packets as bytes (protocol version 3, what OpenSSH speaks): requests packed with struct, replies found whole
in a byte stream. Pure functions, no I/O: paramiko_async.py sends and receives them over a paramiko channel.

A packet is uint32 length, byte type, uint32 request number, then the arguments; a string is a uint32 length and
its bytes. paramiko's own Message objects cost several times more per request and reply than these.
"""

from __future__ import annotations

import struct
from typing import Any

import paramiko
from paramiko.sftp import SFTP_OK, int64
from paramiko.sftp_attr import SFTPAttributes

_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")
_HEAD = struct.Struct(">IB")  # length, type
_TYPE_NUMBER = struct.Struct(">BI")  # a reply's type and request number, after its length
MAX_REPLY = 1 << 24  # as paramiko: a length with its high byte set is not SFTP (most servers send under 256 KiB)


class _NoAttributes:
    """Attributes with no field set (flags 0), as an OPEN that creates a file sends them."""


NO_ATTRIBUTES = _NoAttributes()


class GarbledReply(paramiko.SSHException):  # type: ignore[misc]  # paramiko is untyped
    """The server's byte stream is not SFTP packets: the session is unusable (a network error, retried)."""


def pack_request(command: int, number: int, args: tuple[Any, ...]) -> bytes:
    """Given a command (CMD_…), its request number and arguments (bytes or str: a string; int64: uint64; int:
    uint32; SFTPAttributes or NO_ATTRIBUTES), return the packet, byte for byte what paramiko's ``_async_request`` sends."""
    parts = [b"", _U32.pack(number)]
    for item in args:
        kind = type(item)
        if kind is bytes:
            parts += (_U32.pack(len(item)), item)
        elif kind is str:
            raw = item.encode("utf-8")
            parts += (_U32.pack(len(raw)), raw)
        elif kind is int64:
            parts.append(_U64.pack(item))
        elif kind is int:
            parts.append(_U32.pack(item))
        elif kind is _NoAttributes:
            parts.append(b"\0\0\0\0")
        elif kind is SFTPAttributes:
            parts.append(_packed_attrs(item))
        else:
            raise TypeError(f"an SFTP request argument of type {kind.__name__}")
    parts[0] = _HEAD.pack(sum(map(len, parts)) + 1, command)
    return b"".join(parts)


def _packed_attrs(attrs: SFTPAttributes) -> bytes:
    msg = paramiko.Message()
    attrs._pack(msg)
    packed: bytes = msg.asbytes()
    return packed


def whole_reply(buf: bytes | bytearray) -> tuple[int, int, int] | None:
    """Given bytes received (a reply starts at 0), return the first reply's (type, request number, end) when it
    is whole, or None while more of it is to come. Raise GarbledReply for a length no SFTP reply has."""
    if len(buf) < 4:
        return None
    (size,) = _U32.unpack_from(buf, 0)
    if not 5 <= size < MAX_REPLY:
        raise GarbledReply(f"the SFTP server sent a packet of {size} bytes: not an SFTP reply")
    end = 4 + size
    if len(buf) < end:
        return None
    t, number = _TYPE_NUMBER.unpack_from(buf, 4)
    return t, number, end


def reply_body(buf: bytes | bytearray, end: int) -> paramiko.Message:
    """Given bytes received and the end of their first (whole) reply, return it as paramiko hands a reply over:
    a Message of the request number and what follows, read past the number (a rewind finds the number first)."""
    msg = paramiko.Message(bytes(buf[5:end]))
    msg.get_int()
    return msg


def status_ok(msg: paramiko.Message) -> bool:
    """Given a STATUS reply (past its request number), say whether it is OK; otherwise leave it to be read again
    from its code (paramiko's status conversion reads the code, then the text)."""
    if msg.get_int() == SFTP_OK:
        return True
    msg.rewind()
    msg.get_int()  # the request number
    return False


def attrs_size(msg: paramiko.Message) -> int | None:
    """Given an ATTRS reply (past its request number), return the file size it carries, if any."""
    flags = msg.get_int()
    return msg.get_int64() if flags & SFTPAttributes.FLAG_SIZE else None
