"""The test sshd itself: with the suite in several xdist workers, a port picked free may be taken before sshd
binds it; the server then starts on another port, and never takes another process's listener for its own."""

from __future__ import annotations

import socket
from pathlib import Path

from tests.fixtures.sshd import SshServer


def test_a_port_taken_meanwhile_makes_the_server_start_on_another(tmp_path: Path) -> None:
    server = SshServer(tmp_path / "sshd")
    server.setup()
    with socket.socket() as taken:  # another worker's listener got the port between pick and bind
        taken.bind(("127.0.0.1", server.port))
        taken.listen()
        server.start()
        try:
            assert server.port != taken.getsockname()[1]
            assert server.proc is not None and server.proc.poll() is None
            with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
                assert s.recv(4) == b"SSH-"
            assert f"[127.0.0.1]:{server.port} " in server.known_hosts_line()
        finally:
            server.stop()
