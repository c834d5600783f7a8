"""The daemon's upload connection between sets (issue 27): kept open past the old 60 s close, proven alive before
a set's first request goes on it, and replaced ahead of need when it died idle, with no set left uncertain."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from onss_relay.journal import State
from tests.conftest import fi_name
from tests.fixtures.sshd import SshServer
from tests.fixtures.tcpproxy import TcpProxy
from tests.helpers import start_daemon, state_of, wait_log, wait_until

pytestmark = pytest.mark.slow

QUIET = {"ONSS_RELAY__WATCH__SETTLE": "0", "ONSS_RELAY__POLL__INTERVAL": '"1h"'}


def drop(outbox: Path, seq: int) -> str:
    """Given the outbox, rename one declaration into it; return its GO name."""
    outbox.mkdir(parents=True, exist_ok=True)
    (outbox / f".{fi_name(seq)}").write_bytes(b"<x/>")
    os.rename(outbox / f".{fi_name(seq)}", outbox / fi_name(seq))
    return "GO" + fi_name(seq)[2:-2]


def connection_processes(sshd: SshServer) -> list[int]:
    """The sshd processes serving a connection: the listener's children."""
    assert sshd.proc is not None
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(sshd.proc.pid)], capture_output=True, text=True)
    return [int(p) for p in out.stdout.split()]


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(15) == 0


def test_a_connection_killed_while_idle_is_replaced_before_the_next_set(sftp_dir: Path, sshd: SshServer) -> None:
    config, log = sftp_dir / "config.toml", sftp_dir / "daemon.log"
    outbox = sftp_dir / "spool" / "outbox"
    proc = start_daemon(config, log, {**QUIET, "ONSS_RELAY__REMOTE__KEEPALIVE": '"1s"'})
    try:
        assert wait_log(log, "relay_started")
        first = drop(outbox, 1)
        assert wait_until(lambda: state_of(config, first) == State.SENT, 20)
        assert wait_until(lambda: len(connection_processes(sshd)) == 1, 10)  # the poll's closed: the upload's kept
        logins = sshd.ssh_logins()
        for pid in connection_processes(sshd):
            os.kill(pid, signal.SIGKILL)  # the server side of the idle connection dies
        # replaced ahead of need: a new login with no set waiting
        assert wait_until(lambda: sshd.ssh_logins() == logins + 1, 20)
        second = drop(outbox, 2)
        assert wait_until(lambda: state_of(config, second) == State.SENT, 20)
        assert sshd.ssh_logins() == logins + 1  # the second set went on the replacement
    finally:
        stop(proc)
    assert "set_uncertain" not in log.read_text()
    assert sshd.writes_of(second) == 1


def test_a_connection_dead_in_silence_is_proven_dead_before_a_set_goes_on_it(sftp_dir: Path, sshd: SshServer) -> None:
    """A path that holds every byte (a NAT entry gone) looks alive to the client: the daemon asks before the
    set's first request, so the set never goes on it and is not left uncertain."""
    config, log = sftp_dir / "config.toml", sftp_dir / "daemon.log"
    proxy = TcpProxy(sshd.port)
    config.write_text(config.read_text().replace(f"port = {sshd.port}", f"port = {proxy.port}"))
    known = sftp_dir / "known_hosts"
    known.write_text(sshd.known_hosts_line().replace(f":{sshd.port}", f":{proxy.port}"))
    env = {**QUIET, "ONSS_RELAY__REMOTE__TIMEOUT": '"2s"', "ONSS_RELAY__REMOTE__QUIET_PERIOD": '"30s"'}
    proc = start_daemon(config, log, env)
    try:
        assert wait_log(log, "relay_started")
        first = drop(outbox := sftp_dir / "spool" / "outbox", 1)
        assert wait_until(lambda: state_of(config, first) == State.SENT, 20)
        proxy.stall(6.0)  # the path dies in silence…
        time.sleep(1.5)  # …for longer than PROVEN_FRESH: the last answer on the kept connection is older
        second = drop(outbox, 2)
        assert wait_until(lambda: state_of(config, second) == State.SENT, 28)  # inside the 30 s quiet period
    finally:
        stop(proc)
        proxy.close()
    text = log.read_text()
    assert "idle_connection_replaced" in text
    assert "set_uncertain" not in text
    assert sshd.writes_of(second) == 1


def test_the_connection_outlives_the_old_60_s_idle_close(sftp_dir: Path, sshd: SshServer) -> None:
    """Idle past the 60 s after which the daemon used to close its connection, the next set logs in no more."""
    config, log = sftp_dir / "config.toml", sftp_dir / "daemon.log"
    outbox = sftp_dir / "spool" / "outbox"
    proc = start_daemon(config, log, QUIET)
    try:
        assert wait_log(log, "relay_started")
        first = drop(outbox, 1)
        assert wait_until(lambda: state_of(config, first) == State.SENT, 20)
        assert wait_until(lambda: len(connection_processes(sshd)) == 1, 10)
        logins = sshd.ssh_logins()
        time.sleep(66)  # past the old close (60 s) and the upload stage's next look at its idle connections
        second = drop(outbox, 2)
        assert wait_until(lambda: state_of(config, second) == State.SENT, 20)
        assert sshd.ssh_logins() == logins
    finally:
        stop(proc)


def test_the_set_s_own_reads_wake_no_claim_scan_while_it_goes_out(sftp_dir: Path, sshd: SshServer) -> None:
    """Through the 20 ms each-way proxy. The relay reads a claimed declaration while signing it and at its upload's
    gates; each read's close woke a claim scan, which took the interpreter from the upload it raced (after an idle
    period, right as the connection was proven: nothing paced those scans). The scan that claims the set is now
    the last one until its GO is sent (the full rescan is an hour away)."""
    config, log = sftp_dir / "config.toml", sftp_dir / "daemon.log"
    proxy = TcpProxy(sshd.port, delay=0.020)
    config.write_text(config.read_text().replace(f"port = {sshd.port}", f"port = {proxy.port}"))
    (sftp_dir / "known_hosts").write_text(sshd.known_hosts_line().replace(f":{sshd.port}", f":{proxy.port}"))
    proc = start_daemon(config, log, {**QUIET, "ONSS_RELAY__WATCH__RESCAN": '"1h"'})
    try:
        assert wait_log(log, "relay_started")
        go = drop(sftp_dir / "spool" / "outbox", 1)
        assert wait_until(lambda: state_of(config, go) == State.SENT, 20)
    finally:
        stop(proc)
        proxy.close()
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    events = [e["event"] + (f" {e['state']}" if e["event"] == "set_state" else "") for e in lines]
    sending = events[events.index("set_state uploading") : events.index("set_sent")]  # the gates' reads in it
    assert "set_state go_sending" in sending
    assert "outbox_scanned" not in sending
