"""Who may read the status page, with the real daemon (issue 26): off loopback the relay refuses to start
without a secret (exit 2, one sentence); with one, a request without it gets 401 and nothing of a
declaration, while /metrics and /healthz stay open for Prometheus and probes."""

from __future__ import annotations

import base64
import socket
import struct
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from onss_relay.journal import State
from tests.conftest import fi_name
from tests.fixtures.sshd import free_port
from tests.helpers import Daemon, run_cli, state_of, wait_until

GO = "GO" + fi_name(21)[2:-2]


def fetch(url: str, authorization: str | None = None) -> tuple[int, str, dict[str, str]]:
    request = urllib.request.Request(url, headers={"Authorization": authorization} if authorization else {})
    try:
        with urllib.request.urlopen(request, timeout=10) as r:
            return r.status, r.read().decode(), dict(r.headers)
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(), dict(e.headers)
    except (urllib.error.URLError, OSError):
        return 0, "not listening yet", {}


def hang_up_mid_answer(port: int, authorization: str) -> None:
    """Ask for the overview and reset the connection at once, before reading the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.sendall(f"GET / HTTP/1.1\r\nHost: x\r\nAuthorization: {authorization}\r\n\r\n".encode())
        s.recv(1)  # the answer has begun: the rest is being written when the reset comes


def test_off_loopback_without_a_secret_the_relay_refuses_to_start(relay_dir: Path) -> None:
    config = relay_dir / "config.toml"
    config.write_text(config.read_text() + f'[metrics]\nlisten = "0.0.0.0:{free_port()}"\n')
    r = run_cli("run", "--config", str(config), timeout=60)
    assert r.returncode == 2, r.stderr
    assert "metrics.listen" in r.stderr and "metrics.password_file" in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr


@pytest.mark.slow
def test_off_loopback_a_request_without_the_secret_gets_401_and_nothing_of_a_declaration(relay_dir: Path) -> None:
    config, log = relay_dir / "config.toml", relay_dir / "daemon.log"
    port = free_port()
    (relay_dir / "page.pass").write_text("Pa55-for-the-page\n")
    (relay_dir / "page.token").write_text("token-for-the-page\n")
    config.write_text(
        config.read_text()
        + f'[metrics]\nlisten = "0.0.0.0:{port}"\npassword_file = "page.pass"\nuser = "hr"\n'
        + 'token_file = "page.token"\n'
    )
    daemon = Daemon(config, log)
    daemon.start()
    try:
        (relay_dir / "spool" / "outbox" / fi_name(21)).write_bytes(b"<Dimona><INSS>85073003328</INSS></Dimona>")
        assert wait_until(lambda: state_of(config, GO) == State.SENT, 60), log.read_text()[-2000:]
        base = f"http://127.0.0.1:{port}"  # the listener is on every address; this test only talks to loopback
        assert wait_until(lambda: fetch(base + "/healthz")[0] in (200, 503), 20)
        for path in ("/", f"/set/{GO}", "/search?q=85073003328", "/style.css"):
            for wrong in (None, "Basic " + base64.b64encode(b"hr:wrong").decode(), "Bearer nope"):
                status, body, headers = fetch(base + path, wrong)
                assert status == 401, (path, wrong, status)
                assert GO not in body and "DIMN" not in body and "85073003328" not in body
                assert "WWW-Authenticate" in headers
        good = "Basic " + base64.b64encode(b"hr:Pa55-for-the-page").decode()
        status, body, headers = fetch(f"{base}/set/{GO}", good)
        assert status == 200 and GO in body
        assert "default-src 'none'" in headers["Content-Security-Policy"]
        assert fetch(base + "/", "Bearer token-for-the-page")[0] == 200
        assert fetch(base + "/metrics")[0] == 200  # open: Prometheus scrapes it without the page's secret
        for method in ("POST", "PUT", "DELETE"):  # read-only: nothing but GET and HEAD is answered
            request = urllib.request.Request(f"{base}/set/{GO}", data=b"x", method=method)
            request.add_header("Authorization", "Bearer token-for-the-page")
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(request, timeout=10)
            assert refused.value.code == 501 and GO not in refused.value.read().decode(), method
        for _ in range(5):  # a browser that goes away mid-page: nothing to say, above all no traceback
            hang_up_mid_answer(port, "Bearer token-for-the-page")
        assert fetch(base + "/", "Bearer token-for-the-page")[0] == 200
        assert "Traceback" not in log.read_text()
    finally:
        assert daemon.stop() == 0


@pytest.mark.slow
def test_the_page_is_served_on_ipv6_loopback_as_the_readme_says(relay_dir: Path) -> None:
    """Found by audit26: `listen = "[::1]:9464"` (the README's loopback example) passed `check` and then stopped
    the relay (exit 2, "cannot listen there (Address family for hostname not supported)"): the listener was
    IPv4 only. It serves the page, open, on [::1]."""
    config, log = relay_dir / "config.toml", relay_dir / "daemon.log"
    port = free_port()
    config.write_text(config.read_text() + f'[metrics]\nlisten = "[::1]:{port}"\n')
    daemon = Daemon(config, log)
    proc = daemon.start()
    try:
        assert proc.poll() is None, log.read_text()[-2000:]
        assert wait_until(lambda: fetch(f"http://[::1]:{port}/healthz")[0] in (200, 503), 20), log.read_text()[-2000:]
        status, body, _ = fetch(f"http://[::1]:{port}/")
        assert status == 200 and "onss-relay" in body
    finally:
        assert daemon.stop() == 0


@pytest.mark.parametrize(
    ("secret", "said"),
    [('password_file = "missing.pass"', "cannot read"), ('token_file = "blank.tok"', "the file is empty")],
)
def test_check_and_the_start_refuse_a_page_secret_that_is_missing_or_empty(
    relay_dir: Path, secret: str, said: str
) -> None:
    """Found by audit26: `check` said nothing of metrics.password_file / token_file (exit 0 with the file missing
    or empty), and `run` refused it (exit 2) only after its watcher had started. Both refuse it first, naming
    the setting, in one sentence."""
    (relay_dir / "blank.tok").write_text("\n")
    config = relay_dir / "config.toml"
    config.write_text(config.read_text() + f'[metrics]\nlisten = "0.0.0.0:{free_port()}"\n{secret}\n')
    checked = run_cli("check", "--local", "--config", str(config), timeout=60)
    assert checked.returncode == 2 and said in checked.stdout, checked.stdout + checked.stderr
    started = run_cli("run", "--config", str(config), timeout=60)
    assert started.returncode == 2 and said in started.stderr, started.stderr
    assert "watching" not in started.stderr and len(started.stderr.strip().splitlines()) == 1, started.stderr
