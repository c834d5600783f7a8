"""A standby serves /metrics and /healthz while it waits (issue 25, remaining): Prometheus sees it up, not the
leader, since when it waits and the active relay's epoch; /healthz says "standby" with 200. Killed, the active
relay's standby takes over and its /metrics flips to the leader. Two real daemons each time: on one PostgreSQL
journal (two machines' configs, each its own listen address) and on one SQLite spool (one machine)."""

from __future__ import annotations

import re
import socket
import time
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.sshd import SshServer, free_port
from tests.helpers import Daemon, wait_log, wait_until
from tests.test_daemon import http_get

pytestmark = pytest.mark.slow


def _metric(text: str, name: str) -> float:
    found = re.search(rf"^{name} (\S+)$", text, re.M)
    assert found is not None, f"{name} missing from:\n{text}"
    return float(found.group(1))


def _two_configs(sftp_dir: Path, journal: str) -> tuple[Path, Path, int, int]:
    """Given the SFTP relay folder and a [journal] section, return two configs on its spool that differ only in
    their listen address (as two machines' would), and the two ports."""
    base = (sftp_dir / "config.toml").read_text() + journal
    ports = free_port(), free_port()
    configs = []
    for name, port in zip("ab", ports, strict=True):
        config = sftp_dir / f"{name}.toml"
        config.write_text(f'{base}\n[metrics]\nlisten = "127.0.0.1:{port}"\n')
        configs.append(config)
    return configs[0], configs[1], ports[0], ports[1]


def _standby_serves_then_leads(sftp_dir: Path, journal: str, leader_event: str, epochs: tuple[int, int]) -> None:
    """Given a [journal] section, start an active relay and a standby on one spool; the standby's /metrics and
    /healthz say standby (with the active relay's epoch); kill the active one: the standby's /metrics says leader."""
    config_a, config_b, _, port_b = _two_configs(sftp_dir, journal)
    active, standby = Daemon(config_a, sftp_dir / "a.log"), Daemon(config_b, sftp_dir / "b.log")
    active.start()
    assert wait_log(sftp_dir / "a.log", leader_event)
    waiting_from = time.time()
    standby.spawn()
    try:
        assert wait_log(sftp_dir / "b.log", '"standby"', timeout=30)
        url = f"http://127.0.0.1:{port_b}"
        assert wait_until(lambda: http_get(f"{url}/metrics")[0] == 200, 20)
        text = http_get(f"{url}/metrics")[1]
        assert _metric(text, "onss_relay_is_leader") == 0
        assert _metric(text, "onss_relay_leader_epoch") == epochs[0]
        assert waiting_from - 5 < _metric(text, "onss_relay_standby_since_timestamp_seconds") <= time.time()
        assert _metric(text, "onss_relay_healthy") == 1
        code, body = http_get(f"{url}/healthz")
        assert code == 200 and body.startswith("standby: active relay"), (code, body)
        assert active.proc is not None and f"active relay {socket.gethostname()} pid {active.proc.pid}" in body, body
        active.kill()
        assert wait_log(sftp_dir / "b.log", '"relay_started"', timeout=30)

        def leads() -> bool:
            code, text = http_get(f"{url}/metrics")
            return code == 200 and _metric(text, "onss_relay_is_leader") == 1

        assert wait_until(leads, 20)
        text = http_get(f"{url}/metrics")[1]
        assert _metric(text, "onss_relay_standby_since_timestamp_seconds") == 0
        assert _metric(text, "onss_relay_leader_epoch") == epochs[1]
        assert "onss_relay_queue_depth" in text  # the active relay's whole collector now
    finally:
        active.stop()
        assert standby.stop(30) == 0


def test_a_standby_on_postgresql_serves_metrics_and_healthz(sftp_dir: Path, sshd: SshServer, pg_server: Any) -> None:
    journal = f'\n[journal]\nurl = "{pg_server.new_database()}"\nlease = "3s"\n'
    _standby_serves_then_leads(sftp_dir, journal, "leadership_taken", (1, 2))


def test_a_standby_on_one_machine_serves_metrics_and_healthz(sftp_dir: Path, sshd: SshServer) -> None:
    _standby_serves_then_leads(sftp_dir, "", "relay_started", (0, 0))
