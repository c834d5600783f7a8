"""The SSH handshake on a path that fails (rev27 review): paramiko says a connection lost, or silent, while the key
is checked with AuthenticationException, as it says a refusal; the relay said "authentication refused ... is its
public key registered?" (permanent: `send --once` exits 3, the daemon's upload stage pauses) for a reset on the
path, and for a path holding packets after paramiko's own 30 s, whatever remote.timeout. A path holding packets
while the SFTP session opened hung the connect for ever (paramiko waits for the subsystem's reply without a
timeout)."""

from __future__ import annotations

import socket
import threading
from pathlib import Path

from onss_relay.config import RemoteConfig, load_config
from onss_relay.errors import PermanentRemoteError, TransientRemoteError
from onss_relay.transport.sftp import SftpTransport
from tests.conftest import sftp_config_text
from tests.fixtures.sshd import SshServer
from tests.fixtures.tcpproxy import TcpProxy


class HoldingProxy(TcpProxy):
    """A proxy forwarding each new connection's first ``cut_after`` client bytes, then holding the rest: a path
    that goes silent (no reset), as a congested or flapping WAN does."""

    def _pump(self, src: socket.socket, dst: socket.socket, limit: int | None) -> None:
        sent = 0
        try:
            while data := src.recv(65536):
                if limit is not None and sent + len(data) > limit:
                    self._stop.wait(120)  # held until the test ends
                    break
                sent += len(data)
                dst.sendall(data)
        except OSError:
            pass
        self._close(src, dst)


def _remote_through(proxy: TcpProxy, sshd: SshServer, key: Path, relay_dir: Path, timeout: str) -> RemoteConfig:
    known = relay_dir / "known_hosts"
    known.write_text(sshd.known_hosts_line().replace(f"]:{sshd.port}", f"]:{proxy.port}"))
    text = sftp_config_text(sshd, key, known).replace(f"port = {sshd.port}", f"port = {proxy.port}")
    (relay_dir / "config.toml").write_text(text.replace('timeout = "10s"', f'timeout = "{timeout}"'))
    return load_config(relay_dir / "config.toml", environ={}).remote


def _connect_outcome(remote: RemoteConfig, hang: float) -> str:
    """Given a remote, connect in a thread: "connected", "transient", "permanent: <words>", or "hung" when
    the connect did not end within ``hang`` seconds (it is left behind, its proxy held)."""
    out: list[str] = []

    def connect() -> None:
        try:
            SftpTransport.connect(remote).close()
            out.append("connected")
        except TransientRemoteError:
            out.append("transient")
        except PermanentRemoteError as e:
            out.append(f"permanent: {e}")

    thread = threading.Thread(target=connect, daemon=True)
    thread.start()
    thread.join(hang)
    return out[0] if out else "hung"


def test_a_cut_during_authentication_is_transient(
    sshd: SshServer, client_keys: dict[str, Path], relay_dir: Path
) -> None:
    proxy = TcpProxy(sshd.port)
    remote = _remote_through(proxy, sshd, client_keys["rsa"], relay_dir, "10s")
    seen: dict[int, str] = {}
    for cut in range(500, 6000, 250):  # client bytes: the key exchange, then the key's check, then SFTP
        proxy.cut_after = cut
        seen[cut] = _connect_outcome(remote, 60)
    assert "connected" in seen.values() and "transient" in seen.values(), seen  # the cuts spanned the handshake
    wrong = {cut: what for cut, what in seen.items() if what not in ("connected", "transient")}
    assert not wrong, wrong
    proxy.close()


def test_a_path_going_silent_during_the_handshake_is_transient_within_the_timeout(
    sshd: SshServer, client_keys: dict[str, Path], relay_dir: Path
) -> None:
    """Held from each point of the handshake in turn (remote.timeout 2 s): every connect ends, none says the key
    was refused. Without the fix: "authentication refused" after 30 s, and a connect hung in the SFTP open."""
    proxy = HoldingProxy(sshd.port)
    remote = _remote_through(proxy, sshd, client_keys["rsa"], relay_dir, "2s")
    seen: dict[int, str] = {}
    for held in range(1000, 3000, 125):
        proxy.cut_after = held
        seen[held] = _connect_outcome(remote, 20)  # a few timeouts at most; paramiko's own were 30 s and never
        if seen[held] == "connected":
            break
    assert "transient" in seen.values() and list(seen.values())[-1] == "connected", seen
    wrong = {held: what for held, what in seen.items() if what not in ("connected", "transient")}
    assert not wrong, wrong
    proxy.close()
