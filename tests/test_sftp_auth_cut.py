"""A connection cut while the key is being checked is a network failure, not a refusal: paramiko says both with
AuthenticationException, and the relay said "authentication refused ... is its public key registered?" (a
permanent error: `send --once` exits 3, the daemon's upload stage pauses) for a reset on the path (rev27)."""

from __future__ import annotations

from pathlib import Path

from onss_relay.config import load_config
from onss_relay.errors import PermanentRemoteError, TransientRemoteError
from onss_relay.transport.sftp import SftpTransport
from tests.conftest import sftp_config_text
from tests.fixtures.sshd import SshServer
from tests.fixtures.tcpproxy import TcpProxy


def test_a_cut_during_authentication_is_transient(
    sshd: SshServer, client_keys: dict[str, Path], relay_dir: Path
) -> None:
    proxy = TcpProxy(sshd.port)
    known = relay_dir / "known_hosts"
    known.write_text(sshd.known_hosts_line().replace(f"]:{sshd.port}", f"]:{proxy.port}"))
    text = sftp_config_text(sshd, client_keys["rsa"], known).replace(f"port = {sshd.port}", f"port = {proxy.port}")
    (relay_dir / "config.toml").write_text(text)
    cfg = load_config(relay_dir / "config.toml", environ={})
    seen: dict[int, str] = {}
    for cut in range(500, 6000, 250):  # client bytes: the key exchange, then the key's check, then SFTP
        proxy.cut_after = cut
        try:
            SftpTransport.connect(cfg.remote).close()
            seen[cut] = "connected"
        except TransientRemoteError:
            seen[cut] = "transient"
        except PermanentRemoteError as e:
            seen[cut] = f"permanent: {e}"
    assert "connected" in seen.values() and "transient" in seen.values(), seen  # the cuts spanned the handshake
    permanent = {cut: what for cut, what in seen.items() if what.startswith("permanent")}
    assert not permanent, permanent
