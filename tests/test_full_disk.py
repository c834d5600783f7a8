"""A full disk under the spool (issue 24 item 2): at start the daemon waits and says why, once; while running,
`status --health` and systemd STATUS say "disk full"; one warning when it starts, one line when it ends."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import Daemon, run_cli, wait_until
from tests.test_daemon import http_get
from tests.test_first_week import with_metrics
from tests.test_single_faults import fill

pytestmark = pytest.mark.slow


@pytest.fixture
def small(tmp_path: Path) -> Iterator[Path]:
    """A 2 MB tmpfs (root only)."""
    mount = tmp_path / "small"
    mount.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {r.stderr.strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def statuses(sock: socket.socket, count: int) -> list[str]:
    """Given the notify socket, return the next ``count`` STATUS= values sent to it."""
    found: list[str] = []
    while len(found) < count:
        message = sock.recv(4096).decode()
        found += [line[7:] for line in message.splitlines() if line.startswith("STATUS=")]
    return found


def test_a_full_disk_at_start_waits_and_while_running_health_says_disk_full(relay_dir: Path, small: Path) -> None:
    config, log = relay_dir / "config.toml", relay_dir / "daemon.log"
    config.write_text(config.read_text().replace('root = "spool"', f'root = "{small / "spool"}"'))
    (small / "spool").mkdir()
    healthz = f"http://127.0.0.1:{with_metrics(config)}/healthz"
    filler = fill(small)
    sock_path = relay_dir / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(sock_path))
    sock.settimeout(30)
    daemon = Daemon(config, log, {"NOTIFY_SOCKET": str(sock_path)})
    proc = daemon.spawn()
    health = lambda: run_cli("status", "--health", "--config", str(config))  # noqa: E731
    try:
        waiting = statuses(sock, 3)  # three attempts at least
        assert all("disk full" in s for s in waiting), waiting
        assert proc.poll() is None  # it waits, never exits
        h = health()
        assert h.returncode == 1 and "disk full" in h.stdout and "not running" not in h.stdout, h.stdout
        assert log.read_text().count('"relay_waiting"') == 1, log.read_text()  # one warning, not one per attempt
        filler.unlink()
        assert wait_until(lambda: "relay_started" in log.read_text(), 30), log.read_text()[-2000:]
        assert log.read_text().count('"relay_waited"') == 1
        assert wait_until(lambda: health().returncode == 0, 30), health().stdout

        filler = fill(small)  # full again while running
        assert wait_until(lambda: "disk full" in health().stdout, 30), health().stdout
        assert health().returncode == 1
        code, reason = http_get(healthz)
        assert code == 503 and "disk full" in reason, reason
        assert wait_until(lambda: "disk full" in statuses(sock, 1)[0], 30)  # systemd STATUS follows
        time.sleep(3)  # full a while longer: still one warning (no timing asserted)
        filler.unlink()
        assert wait_until(lambda: health().returncode == 0, 30), health().stdout
        assert wait_until(lambda: '"disk_space_back"' in log.read_text(), 10)
        text = log.read_text()
        assert text.count('"disk_full"') == 1 and text.count('"disk_space_back"') == 1, text[-3000:]
        assert text.count('"health_unwritable"') <= 1 and text.count('"results_unwritable"') <= 1
    finally:
        sock.close()
        assert daemon.stop() == 0


def test_a_full_disk_while_polling_names_the_file_it_was_writing(relay_dir: Path, small: Path) -> None:
    """Issue 29 review: `poll --once` on a spool whose disk fills while answers download exits 4 with a sentence
    naming the file it was writing (a write to an open file says no name of itself), never a bare "disk full"."""
    from onss_relay.simulator import Verdict, acrf_xml
    from tests.conftest import SENDER, TODAY

    config = relay_dir / "config.toml"
    config.write_text(config.read_text().replace('root = "spool"', f'root = "{small / "spool"}"'))
    (small / "spool").mkdir()
    assert run_cli("poll", "--once", "--config", str(config)).returncode == 0  # the spool and journal made
    out = relay_dir / "remote" / "OUTTEST"
    for i in range(1, 41):  # 4 MB of answers for a 2 MB filesystem
        base = f"ACRF.999999.{TODAY}.{i:05X}.T"
        verdict = Verdict(f"GO.DIMN.{SENDER}.{TODAY}.{i:05d}.T.1", "INTEST", (), f"0TICKET{i:06d}")
        fo = acrf_xml(verdict) + b"<!--" + b"x" * 100_000 + b"-->"
        for prefix, data in (("FO", fo), ("FS", b"MIIB" * 20), ("GO", b"")):
            (out / f"{prefix}.{base}").write_bytes(data)
    r = run_cli("poll", "--once", "--config", str(config))
    assert r.returncode == 4, (r.stdout, r.stderr)
    assert "disk full" in r.stderr and f"{small}/spool/" in r.stderr, r.stderr
