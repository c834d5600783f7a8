"""Issue 27: the connection's window of sets in flight is shared by the SFTP sessions open now. The sessions open
one after another (round trips each); the first used to carry only its quarter of the window meanwhile, so at
20 ms each way the relay ran a quarter as many sets at once for its first half second. The whole window is never
exceeded: it bounds how many sets a cut connection leaves in doubt."""

from __future__ import annotations

from pathlib import Path

import pytest

from onss_relay.config import load_config
from onss_relay.transport.base import PutFile, Step, Upload
from onss_relay.transport.sftp import SftpTransport
from tests.conftest import sftp_config_text
from tests.fixtures.sshd import SshServer


@pytest.fixture
def one_session_sshd(tmp_path: Path, client_keys: dict[str, Path]):  # type: ignore[no-untyped-def]
    """A real sshd allowing one session per connection: the relay's three other sessions are refused, so the
    first is the only one for the whole run (as for the first ones at 20 ms each way)."""
    server = SshServer(tmp_path / "sshd")
    server.setup()
    config = server.root / "sshd_config"  # sshd takes a keyword's first value: the fixture's own is replaced
    config.write_text(config.read_text().replace("MaxSessions 100\n", "MaxSessions 1\n"))
    server.authorize(Path(str(client_keys["rsa"]) + ".pub"))
    server.start()
    yield server
    server.stop()


def _uploads(tmp_path: Path, count: int) -> tuple[list[Upload], list[int]]:
    """Given a folder and a count, return that many one-part uploads and [the most of them in flight at once]."""
    in_flight: set[str] = set()
    most = [0]

    def upload(n: int) -> Upload:
        name = f".{n:03d}"
        fi = tmp_path / f"fi{n}"
        fi.write_bytes(b"<DmfA/>")
        steps = [
            Step("FI", [PutFile("INTEST", f"FI{name}", local=fi, key=name)]),
            Step("FS", [PutFile("INTEST", f"FS{name}", data=b"signature", key=name)]),
            Step("GO", [PutFile("INTEST", f"GO{name}", key=name)]),
        ]

        def gate(step: Step) -> None:
            if step.name == "FI":
                in_flight.add(name)
                most[0] = max(most[0], len(in_flight))

        return Upload(name, steps, gate=gate, done=lambda: in_flight.discard(name))

    return [upload(n) for n in range(count)], most


def _connect(server: SshServer, key: Path, relay_dir: Path) -> SftpTransport:
    known = relay_dir / "known_hosts"
    known.write_text(server.known_hosts_line())
    (relay_dir / "config.toml").write_text(sftp_config_text(server, key, known))
    cfg = load_config(relay_dir / "config.toml", environ={})
    assert cfg.remote.connections == 4
    return SftpTransport.connect(cfg.remote)


def _run(server: SshServer, key: Path, relay_dir: Path, uploads: list[Upload]) -> SftpTransport:
    """Given a server, a key, a relay folder and uploads, run them on a new connection with a window of 8; return
    the connection, closed once its session opener ended."""
    t = _connect(server, key, relay_dir)
    try:
        t.run_uploads(iter(uploads), window=8)
        assert t._opener is not None
        t._opener.join(10)
    finally:
        t.close()
    return t


def test_the_first_session_carries_the_whole_window(
    one_session_sshd: SshServer, client_keys: dict[str, Path], relay_dir: Path, tmp_path: Path
) -> None:
    uploads, most = _uploads(tmp_path, 40)
    t = _run(one_session_sshd, client_keys["rsa"], relay_dir, uploads)
    assert t.sessions == 1  # the server refused the others
    assert len(list((one_session_sshd.home / "INTEST").glob("GO.*"))) == 40
    assert most[0] == 8, most  # the whole window on the one session (its quarter was 2)


def test_sessions_opening_later_never_take_the_connection_past_its_window(
    sshd: SshServer, client_keys: dict[str, Path], relay_dir: Path, tmp_path: Path
) -> None:
    uploads, most = _uploads(tmp_path, 400)
    t = _run(sshd, client_keys["rsa"], relay_dir, uploads)
    assert len(t._upload_sessions) == 4  # the others opened while the first carried the window
    assert len(list((sshd.home / "INTEST").glob("GO.*"))) == 400
    assert most[0] == 8, most  # the window, never more: a session opening later waits for room
