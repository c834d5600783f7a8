"""Issue 27 (sftp27): the SFTP request/reply layer of our own (transport/sftp_wire.py, paramiko_async.AsyncSftp)
against a real sshd: replies split across channel reads, several in one read, a batch larger than one channel
write, a refused OPEN, a WRITE answered with an error, the session closed in the middle of a reply. Each
failure fails the set as paramiko's reader did: the upload raises the classified error, nothing of the next
step (and no GO) is put, and the step in flight is known (the set is uncertain)."""

from __future__ import annotations

import hashlib
import os
import struct
import sys
from pathlib import Path

import paramiko
import pytest

from onss_relay.config import Config
from onss_relay.errors import PermanentRemoteError, TransientRemoteError
from onss_relay.transport import paramiko_async as pa
from onss_relay.transport.base import PutFile, Step, Upload
from onss_relay.transport.sftp import SftpTransport
from onss_relay.transport.sftp_wire import GarbledReply, pack_request, whole_reply
from tests.fixtures.sshd import SshServer

# -- packets, without a server -----------------------------------------------------------------------------


def _reply(t: int, number: int, body: bytes) -> bytes:
    return struct.pack(">IBI", len(body) + 5, t, number) + body


def test_a_reply_is_whole_only_once_every_byte_of_it_is_there() -> None:
    two = _reply(pa.CMD_STATUS, 7, b"\0\0\0\0" + b"\0\0\0\2OK" + b"\0\0\0\0") + _reply(pa.CMD_HANDLE, 8, b"\0\0\0\1h")
    first_end = len(two) - 14
    for cut in range(first_end):
        assert whole_reply(two[:cut]) is None, cut
    assert whole_reply(two[:first_end]) == (pa.CMD_STATUS, 7, first_end)
    assert whole_reply(two) == (pa.CMD_STATUS, 7, first_end)  # the first of several
    assert whole_reply(two[first_end:]) == (pa.CMD_HANDLE, 8, 14)


@pytest.mark.parametrize("size", [0, 4, 1 << 24, 0xFFFFFFFF])
def test_a_length_no_sftp_reply_has_is_a_garbled_session(size: int) -> None:
    with pytest.raises(GarbledReply):
        whole_reply(struct.pack(">I", size) + b"\0" * 9)


def test_a_request_argument_of_another_type_is_refused() -> None:
    with pytest.raises(TypeError):
        pack_request(pa.CMD_CLOSE, 1, (1.5,))


# -- the layer against a real sshd -------------------------------------------------------------------------


@pytest.fixture
def transport(sftp_cfg: Config):  # type: ignore[no-untyped-def]
    t = SftpTransport.connect(sftp_cfg.remote)
    yield t
    t.close()


def _counting_recv(channel: paramiko.Channel) -> list[int]:
    """Count the channel reads (their sizes) the layer makes."""
    sizes: list[int] = []
    real = channel.recv

    def recv(n: int) -> bytes:
        data = real(n)
        sizes.append(len(data))
        return data

    channel.recv = recv  # type: ignore[method-assign]
    return sizes


def test_replies_split_across_channel_reads_reach_their_callbacks(transport: SftpTransport, sshd: SshServer) -> None:
    s = pa.AsyncSftp(transport._sftp)
    s.receive_size = 3  # every reply arrives in pieces: its length itself across two reads
    reads = _counting_recv(s.channel)
    replies: list[tuple[int, paramiko.Message]] = []
    s.request(lambda t, m: replies.append((t, m)), pa.CMD_OPEN, *pa.open_args(f"{sshd.home}/INTEST/split.bin"))
    s.read_reply()
    handle = replies[0][1].get_binary()
    s.request(lambda t, m: replies.append((t, m)), pa.CMD_WRITE, handle, pa.int64(0), b"abc")
    s.request(lambda t, m: replies.append((t, m)), pa.CMD_FSTAT, handle)
    s.request(lambda t, m: replies.append((t, m)), pa.CMD_CLOSE, handle)
    while s.outstanding:
        s.read_reply()
    assert [t for t, _ in replies] == [pa.CMD_HANDLE, pa.CMD_STATUS, pa.CMD_ATTRS, pa.CMD_STATUS]
    assert pa.attrs_size(replies[2][1]) == 3 and (sshd.home / "INTEST" / "split.bin").read_bytes() == b"abc"
    assert max(reads) <= 3 and len(reads) > 4 * 3, reads


def test_several_replies_in_one_channel_read_are_all_handed_over(transport: SftpTransport) -> None:
    s = pa.AsyncSftp(transport._sftp)
    reads = _counting_recv(s.channel)
    replies: list[int] = []
    for _ in range(20):
        s.request(lambda t, m: replies.append(t), pa.CMD_FSTAT, b"no-such-handle")
    s.flush()
    while len(s.channel.in_buffer) < 20 * 28:  # every STATUS reply arrived (OpenSSH's "Failure": 28 bytes or more)
        assert s.channel.in_buffer.read_ready() or not s.ended()
        os.sched_yield()
    s.read_reply()
    assert replies == [pa.CMD_STATUS] * 20 and s.outstanding == 0
    assert len(reads) == 1, reads


def test_a_batch_larger_than_one_channel_write_is_sent_whole(transport: SftpTransport, sshd: SshServer) -> None:
    """A flush of ~100 KB: the channel takes at most one SSH packet (32 KB) per send; every byte goes out."""
    s = pa.AsyncSftp(transport._sftp)
    opened: list[paramiko.Message] = []
    s.request(lambda t, m: opened.append(m), pa.CMD_OPEN, *pa.open_args(f"{sshd.home}/INTEST/big.bin"))
    s.read_reply()
    handle = opened[0].get_binary()
    sends: list[int] = []
    real_send = s.channel.send
    s.channel.send = lambda data: sends.append(n := real_send(data)) or n  # type: ignore[method-assign]
    chunks = [bytes([i]) * 32768 for i in range(3)]
    statuses: list[int] = []
    for i, chunk in enumerate(chunks):
        s.request(lambda t, m: statuses.append(t), pa.CMD_WRITE, handle, pa.int64(i * 32768), chunk)
    s.request(lambda t, m: statuses.append(t), pa.CMD_CLOSE, handle)
    while s.outstanding:
        s.read_reply()
    assert statuses == [pa.CMD_STATUS] * 4
    assert len(sends) > 1 and sum(sends) > 3 * 32768, sends  # short writes of the channel, looped over
    assert (sshd.home / "INTEST" / "big.bin").read_bytes() == b"".join(chunks)


# -- a set's upload fails as before ------------------------------------------------------------------------


def _one_set(fi: Path, name: str) -> tuple[Upload, list[str]]:
    """One set's upload (FI from ``fi``, FS, GO) with gates that record each step; return it and the record."""
    steps_seen: list[str] = []
    digest = "sha256:" + hashlib.sha256(fi.read_bytes()).hexdigest()
    steps = [
        Step("FI", [PutFile("INTEST", f"FI{name}", local=fi, digest=digest, key=name)]),
        Step("FS", [PutFile("INTEST", f"FS{name}", data=b"signature", key=name)]),
        Step("GO", [PutFile("INTEST", f"GO{name}", key=name)]),
    ]
    up = Upload(name, steps, gate=lambda step: steps_seen.append(step.name), done=lambda: steps_seen.append("done"))
    return up, steps_seen


def _remote(sshd: SshServer) -> list[str]:
    return sorted(p.name for p in (sshd.home / "INTEST").iterdir())


def test_a_set_uploads_whole_when_every_reply_comes_in_pieces(
    transport: SftpTransport, sshd: SshServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pa, "RECEIVE", 5)
    fi = tmp_path / "fi"
    fi.write_bytes(b"<DmfA/>" * 10000)  # 70 KB: three WRITEs
    up, seen = _one_set(fi, ".A")
    transport.run_uploads(iter([up]))
    assert seen == ["FI", "FS", "GO", "done"]
    assert _remote(sshd) == ["FI.A", "FS.A", "GO.A"]
    assert (sshd.home / "INTEST" / "FI.A").read_bytes() == fi.read_bytes()


def _one_set_failing(
    sftp_cfg: Config, tmp_path: Path, suffix: str, error: type[Exception], match: str
) -> tuple[Upload, list[str]]:
    """Given the server's settings, upload one set that must fail with ``error`` (its text matching); return the
    upload and the steps it reached."""
    t = SftpTransport.connect(sftp_cfg.remote)
    fi = tmp_path / "fi"
    fi.write_bytes(b"<DmfA/>")
    up, seen = _one_set(fi, suffix)
    try:
        with pytest.raises(error, match=match):
            t.run_uploads(iter([up]))
    finally:
        t.close()
    return up, seen


def test_a_refused_open_fails_the_set_before_its_next_step(sftp_cfg: Config, sshd: SshServer, tmp_path: Path) -> None:
    (sshd.root / "readonly").write_text("")  # the server refuses every write: OPEN answered "permission denied"
    up, seen = _one_set_failing(sftp_cfg, tmp_path, ".B", PermanentRemoteError, "permission denied")
    assert seen == ["FI"] and _remote(sshd) == [] and up.step_in_flight() is None  # answered: nothing in doubt


def test_a_write_answered_with_an_error_fails_the_set_before_its_next_step(
    transport: SftpTransport, sshd: SshServer, tmp_path: Path
) -> None:
    (sshd.home / "INTEST" / "FI.C").symlink_to("/dev/full")  # OPEN succeeds, every WRITE fails (ENOSPC)
    fi = tmp_path / "fi"
    fi.write_bytes(b"<DmfA/>")
    up, seen = _one_set(fi, ".C")
    with pytest.raises(TransientRemoteError, match="writing INTEST/FI.C"):
        transport.run_uploads(iter([up]))
    assert seen == ["FI"] and _remote(sshd) == ["FI.C"] and up.step_in_flight() is None


CUTTER = """
import os, struct, subprocess, sys
# the real sftp-server, its replies passed through whole until KEEP of them (after VERSION) went; then half of
# the next, and the session ends: the client sees the server stop in the middle of a reply
server = subprocess.Popen([{server!r}, "-e", "-d", {home!r}], stdout=subprocess.PIPE)
out = sys.stdout.buffer
for n in range({keep} + 2):
    head = server.stdout.read(4)
    body = server.stdout.read(struct.unpack(">I", head)[0])
    packet = head + body
    out.write(packet if n <= {keep} else packet[: len(packet) // 2])
    out.flush()
os._exit(0)
"""


def _cut_after(sshd: SshServer, keep: int) -> None:
    """From the next session on, sshd's SFTP sessions end in the middle of reply ``keep`` + 1."""
    from tests.fixtures.sshd import SFTP_SERVER_CANDIDATES, find_binary

    script = sshd.root / "cutter.py"
    script.write_text(
        CUTTER.format(server=find_binary(SFTP_SERVER_CANDIDATES, "sftp-server"), home=str(sshd.home), keep=keep)
    )
    (sshd.root / "sftp-wrapper").write_text(f"#!/bin/sh\nexec {sys.executable} {script}\n")


def test_a_session_closed_in_the_middle_of_a_reply_fails_the_set_in_doubt(
    sftp_cfg: Config, sshd: SshServer, tmp_path: Path
) -> None:
    _cut_after(sshd, keep=1)  # the FI's OPEN answered; its WRITE's reply cut in half
    up, seen = _one_set_failing(sftp_cfg, tmp_path, ".D", TransientRemoteError, "into a reply")
    assert seen == ["FI"] and "FS.D" not in _remote(sshd) and "GO.D" not in _remote(sshd)
    assert up.step_in_flight() == "FI"  # its FSTAT and CLOSE unanswered: the set is uncertain, never sent again blind
