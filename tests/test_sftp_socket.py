"""The SSH connection's TCP socket (transport/sftp.py PromptSocket): no write held back by Nagle's algorithm, and
what arrives acknowledged at once, also after the connection has turned into a conversation (when Linux would
otherwise delay acknowledgements and hold OpenSSH's next reply up to 40 ms). Linux (TCP_QUICKACK), as the relay's
machines and CI are."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from onss_relay.config import Config
from onss_relay.transport.sftp import SftpTransport, prompt_socket


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    with socket.create_server(("127.0.0.1", 0)) as server:
        client = prompt_socket(socket.create_connection(server.getsockname(), timeout=5))
        peer, _ = server.accept()
    yield client, peer
    client.close()
    peer.close()


def _conversation(client: socket.socket, peer: socket.socket, turns: int) -> None:
    """A few small requests and replies: the pattern after which Linux delays acknowledgements."""
    for _ in range(turns):
        client.sendall(b"ping")
        assert peer.recv(16) == b"ping"
        peer.sendall(b"pong")
        assert client.recv(16) == b"pong"


def test_a_plain_socket_delays_its_acknowledgements_after_a_conversation() -> None:
    """What PromptSocket is for, seen on this kernel: without it, quick acknowledgement ends after two turns."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        client = socket.create_connection(server.getsockname(), timeout=5)
        peer, _ = server.accept()
    with client, peer:
        _conversation(client, peer, 5)
        assert client.getsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK) == 0


def test_the_prompt_socket_acknowledges_at_once_after_every_read(pair: tuple[socket.socket, socket.socket]) -> None:
    client, peer = pair
    _conversation(client, peer, 5)
    assert client.getsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK) == 1
    assert client.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
    assert client.gettimeout() == 5  # create_connection's timeout kept


def test_the_ssh_connection_to_sshd_holds_no_write_and_acknowledges_at_once(sftp_cfg: Config) -> None:
    """After connecting, authenticating and opening SFTP (a dozen turns) and a listing, on the transport's own
    socket, the one paramiko reads and writes."""
    t = SftpTransport.connect(sftp_cfg.remote)
    try:
        t.list("INTEST")
        sock = t._transport.sock
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK) == 1
    finally:
        t.close()
