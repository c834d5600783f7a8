"""Pins the SFTP request/reply layer (transport/paramiko_async.py) and what it relies on in paramiko beyond its
public API, against a real sshd: a paramiko upgrade that changes one of these fails here, not in an upload."""

from __future__ import annotations

import threading

import paramiko
import pytest

from onss_relay.config import Config
from onss_relay.transport import paramiko_async as pa
from onss_relay.transport.sftp import SftpTransport
from tests.fixtures.sshd import SshServer


@pytest.fixture
def session(sftp_cfg: Config):  # type: ignore[no-untyped-def]
    t = SftpTransport.connect(sftp_cfg.remote)
    yield pa.AsyncSftp(t._sftp), t._sftp
    t.close()


def _wait(s: pa.AsyncSftp, replies: list[tuple[int, paramiko.Message]], n: int) -> None:
    while len(replies) < n:
        s.read_reply()


def test_requests_run_without_waiting_and_replies_reach_their_callbacks(session, sshd: SshServer) -> None:  # type: ignore[no-untyped-def]
    s, _ = session
    path = f"{sshd.home}/INTEST/pinned.bin"
    replies: list[tuple[int, paramiko.Message]] = []
    s.request(lambda t, m: replies.append((t, m)), pa.CMD_OPEN, *pa.open_args(path))
    assert s.outstanding == 1
    _wait(s, replies, 1)
    assert s.outstanding == 0
    t, msg = replies[0]
    assert t == pa.CMD_HANDLE
    handle = msg.get_binary()
    writes: list[tuple[int, paramiko.Message]] = []
    for i in range(3):  # three writes in flight at once, paramiko packs int64 offsets and bytes
        s.request(lambda t, m: writes.append((t, m)), pa.CMD_WRITE, handle, pa.int64(i * 4), b"abcd")
    assert s.outstanding == 3
    _wait(s, writes, 3)
    for t, m in writes:
        assert t == pa.CMD_STATUS
        s.raise_status(m)  # OK: returns
    attrs: list[tuple[int, paramiko.Message]] = []
    s.request(lambda t, m: attrs.append((t, m)), pa.CMD_FSTAT, handle)
    _wait(s, attrs, 1)
    assert attrs[0][0] == pa.CMD_ATTRS and pa.attrs_size(attrs[0][1]) == 12
    closed: list[tuple[int, paramiko.Message]] = []
    s.request(lambda t, m: closed.append((t, m)), pa.CMD_CLOSE, handle)
    _wait(s, closed, 1)
    s.raise_status(closed[0][1])
    assert (sshd.home / "INTEST" / "pinned.bin").read_bytes() == b"abcd" * 3


def test_an_error_status_raises_what_the_pipeline_classifies(session, sshd: SshServer) -> None:  # type: ignore[no-untyped-def]
    s, _ = session
    replies: list[tuple[int, paramiko.Message]] = []
    s.request(lambda t, m: replies.append((t, m)), pa.CMD_OPEN, *pa.open_args(f"{sshd.home}/NOPE/x"))
    _wait(s, replies, 1)
    t, msg = replies[0]
    assert t == pa.CMD_STATUS
    with pytest.raises(OSError) as e:
        s.raise_status(msg)
    assert isinstance(e.value, FileNotFoundError) or e.value.errno is not None


def test_the_wake_event_is_set_when_a_reply_arrives_and_ended_when_closed(session, sshd: SshServer) -> None:  # type: ignore[no-untyped-def]
    s, sftp = session
    wake = threading.Event()
    s.wake_on_data(wake)
    assert not s.reply_ready() and not s.ended()
    replies: list[tuple[int, paramiko.Message]] = []
    s.request(lambda t, m: replies.append((t, m)), pa.CMD_FSTAT, b"no-such-handle")
    s.flush()  # queued until then (sent with the others made before the next read)
    assert wake.wait(10), "paramiko did not set the channel's event when the reply arrived"
    assert s.reply_ready()
    _wait(s, replies, 1)
    sftp.close()
    assert s.ended()


def test_what_the_layer_takes_from_paramiko_beyond_its_public_api(session) -> None:  # type: ignore[no-untyped-def]
    # the session's request numbering, its write loop, its status conversion, the channel's event on data
    s, sftp = session
    assert isinstance(sftp.request_number, int)
    number = sftp.request_number
    s.request(lambda t, m: None, pa.CMD_FSTAT, b"no-such-handle")
    assert sftp.request_number == number + 1  # a sync call of paramiko's after this one takes the next number
    s.flush()
    s.read_reply()
    assert callable(sftp._write_all) and callable(sftp._convert_status)
    assert callable(s.channel.in_buffer.set_event)
    msg = paramiko.Message()
    msg.add_int(number)  # a STATUS reply as it is handed over: read past its request number
    msg.add_int(paramiko.sftp.SFTP_NO_SUCH_FILE)
    msg.add_string("gone")
    msg.rewind()
    msg.get_int()
    with pytest.raises(FileNotFoundError):
        s.raise_status(msg)
    assert sftp.stat(".") is not None  # paramiko's own calls work on the session after the layer's


def test_a_reply_is_handed_over_as_paramiko_hands_it(session) -> None:  # type: ignore[no-untyped-def]
    """Read past its request number, which a rewind finds first (sftp_fetch's end-of-file look rewinds)."""
    s, sftp = session
    replies: list[paramiko.Message] = []
    number = sftp.request_number
    s.request(lambda t, m: replies.append(m), pa.CMD_FSTAT, b"no-such-handle")
    s.read_reply()
    code = replies[0].get_int()
    assert code != paramiko.sftp.SFTP_OK and replies[0].get_text()
    replies[0].rewind()
    assert replies[0].get_int() == number and replies[0].get_int() == code


def test_requests_made_between_two_reads_leave_in_one_write_as_paramiko_would_pack_them(
    session, sshd: SshServer, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    """Issue 27: the WRITEs, FSTAT and CLOSE of a file queued together go to the channel in one write (one SSH
    packet to encrypt, not one per request), each packed byte for byte as paramiko's own _async_request packs it
    (sftp_wire.pack_request)."""
    s, sftp = session
    path = f"{sshd.home}/INTEST/coalesced.bin"
    opened: list[tuple[int, paramiko.Message]] = []
    s.request(lambda t, m: opened.append((t, m)), pa.CMD_OPEN, *pa.open_args(path))
    _wait(s, opened, 1)
    handle = opened[0][1].get_binary()
    writes: list[bytes] = []
    real_write_all = sftp._write_all
    monkeypatch.setattr(sftp, "_write_all", lambda out: (writes.append(out), real_write_all(out)))
    replies: list[tuple[int, paramiko.Message]] = []
    first = sftp.request_number
    for i in range(3):
        s.request(lambda t, m: replies.append((t, m)), pa.CMD_WRITE, handle, pa.int64(i * 4), b"abcd")
    s.request(lambda t, m: replies.append((t, m)), pa.CMD_FSTAT, handle)
    s.request(lambda t, m: replies.append((t, m)), pa.CMD_CLOSE, handle)
    _wait(s, replies, 5)
    assert len(writes) == 1, writes
    assert [t for t, _ in replies] == [pa.CMD_STATUS] * 3 + [pa.CMD_ATTRS, pa.CMD_STATUS]
    assert pa.attrs_size(replies[3][1]) == 12 and (sshd.home / "INTEST" / "coalesced.bin").read_bytes() == b"abcd" * 3
    # the same requests through paramiko's own packing, numbered alike: the same bytes
    packed: list[bytes] = []
    monkeypatch.setattr(sftp, "_write_all", packed.append)
    number, sftp.request_number = sftp.request_number, first
    waiter = _Waiter()
    for i in range(3):
        sftp._async_request(waiter, pa.CMD_WRITE, handle, pa.int64(i * 4), b"abcd")
    sftp._async_request(waiter, pa.CMD_FSTAT, handle)
    sftp._async_request(waiter, pa.CMD_CLOSE, handle)
    for n in range(first, first + 5):
        sftp._expecting.pop(n, None)
    sftp.request_number = number
    assert b"".join(packed) == writes[0]


class _Waiter:
    """What paramiko's _async_request takes as the file object its reply goes to (held weakly)."""

    def _async_response(self, t: int, msg: paramiko.Message, num: int) -> None:
        pass


def test_every_request_the_relay_makes_is_packed_as_paramiko_packs_it(session) -> None:  # type: ignore[no-untyped-def]
    """OPEN for writing and for reading (attributes with no field: NO_ATTRIBUTES, as paramiko packs an empty
    SFTPAttributes), WRITE, FSTAT, CLOSE, LSTAT, READ, REMOVE: pack_request gives paramiko's bytes."""
    from paramiko.sftp import CMD_LSTAT, CMD_READ, CMD_REMOVE
    from paramiko.sftp_attr import SFTPAttributes

    from onss_relay.transport.sftp_wire import pack_request

    _, sftp = session
    requests = [
        (pa.CMD_OPEN, pa.open_args("INTEST/é.bin"), ("INTEST/é.bin", pa.OPEN_FOR_WRITE, SFTPAttributes())),
        (pa.CMD_OPEN, pa.read_args("OUT/x"), ("OUT/x", paramiko.sftp.SFTP_FLAG_READ, SFTPAttributes())),
        (pa.CMD_WRITE, (b"h1", pa.int64(1 << 40), b"data"), None),
        (pa.CMD_FSTAT, (b"h1",), None),
        (pa.CMD_CLOSE, (b"h1",), None),
        (CMD_LSTAT, ("OUT/x",), None),
        (CMD_READ, (b"h1", pa.int64(32768), 32768), None),
        (CMD_REMOVE, ("OUT/x",), None),
    ]
    packed: list[bytes] = []
    real_write_all = sftp._write_all
    sftp._write_all = packed.append
    try:
        waiter = _Waiter()
        for command, ours, theirs in requests:
            number = sftp._async_request(waiter, command, *(theirs or ours))
            sftp._expecting.pop(number, None)
            assert pack_request(command, number, ours) == packed[-1], command
    finally:
        sftp._write_all = real_write_all
