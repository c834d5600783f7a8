"""The real `onss-relay run` process: signals, sd_notify, standby takeover, health and metrics, packaging files."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from onss_relay.journal import State
from tests.conftest import fi_name
from tests.fixtures.sshd import SshServer, free_port
from tests.helpers import start_daemon, state_of, wait_log, wait_until

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]


start = start_daemon


def test_sigterm_during_a_large_upload_exits_0_and_the_set_completes(sftp_dir: Path, sshd: SshServer) -> None:
    config, log = sftp_dir / "config.toml", sftp_dir / "daemon.log"
    outbox = sftp_dir / "spool" / "outbox"
    outbox.mkdir(parents=True, exist_ok=True)
    name = fi_name(1)
    with (outbox / name).open("wb") as f:
        for _ in range(150):
            f.write(os.urandom(1 << 20))
    proc = start(config, log)
    go = "GO" + name[2:-2]
    assert wait_until(lambda: (sshd.home / "INTEST" / name).exists(), 60)
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(45) == 0
    # a liveness bound, not a speed figure: well inside systemd's 90 s stop timeout, far below the time to send
    # the 150 MB, so the stop did not wait for the upload (CI under 4 xdist workers took 12 s)
    assert time.monotonic() - t0 < 30
    assert "relay_stopped" in log.read_text()
    proc = start(config, log)
    try:
        assert wait_log(log, "relay_started", count=2)
        assert wait_until(lambda: state_of(config, go) == State.SENT, 60)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
    assert (sshd.home / "INTEST" / name).stat().st_size == 150 << 20
    assert sshd.writes_of(go) == 1


def test_the_daemon_keeps_its_upload_connection_between_sets(sftp_dir: Path, sshd: SshServer) -> None:
    """Sets arriving one by one go over the same SSH connection (kept for remote.keep_open)."""
    config, log = sftp_dir / "config.toml", sftp_dir / "daemon.log"
    outbox = sftp_dir / "spool" / "outbox"
    outbox.mkdir(parents=True, exist_ok=True)
    proc = start(config, log, {"ONSS_RELAY__WATCH__SETTLE": "0", "ONSS_RELAY__POLL__INTERVAL": '"1h"'})
    try:
        assert wait_log(log, "relay_started")
        assert wait_until(lambda: sshd.ssh_logins() == 1, 10)  # the poll stage, once at start
        logins_before = sshd.ssh_logins()
        for seq in (1, 2, 3):
            (outbox / f".{fi_name(seq)}").write_bytes(b"<x/>")
            os.rename(outbox / f".{fi_name(seq)}", outbox / fi_name(seq))
            go = "GO" + fi_name(seq)[2:-2]
            assert wait_until(lambda go=go: state_of(config, go) == State.SENT, 20), go
            time.sleep(0.5)
        assert sshd.ssh_logins() - logins_before == 1
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0


def test_sd_notify_ready_watchdog_stopping(relay_dir: Path) -> None:
    sock_path = relay_dir / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(sock_path))
    sock.settimeout(20)
    proc = start(
        relay_dir / "config.toml",
        relay_dir / "daemon.log",
        {"NOTIFY_SOCKET": str(sock_path), "WATCHDOG_USEC": "1000000"},
    )
    messages: list[str] = []
    try:
        while not any("READY=1" in m for m in messages):
            messages.append(sock.recv(4096).decode())
        while sum("WATCHDOG=1" in m for m in messages) < 2:
            messages.append(sock.recv(4096).decode())
        proc.send_signal(signal.SIGTERM)
        while not any("STOPPING=1" in m for m in messages):
            messages.append(sock.recv(4096).decode())
        assert proc.wait(15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        sock.close()
    ready = next(i for i, m in enumerate(messages) if "READY=1" in m)
    first_watchdog = next(i for i, m in enumerate(messages) if "WATCHDOG=1" in m)
    stopping = next(i for i, m in enumerate(messages) if "STOPPING=1" in m)
    assert ready < first_watchdog < stopping


def test_standby_takes_over_and_once_commands_refuse(relay_dir: Path) -> None:
    config = relay_dir / "config.toml"
    first = start(config, relay_dir / "a.log")
    assert wait_log(relay_dir / "a.log", "relay_started")
    second = start(config, relay_dir / "b.log")
    try:
        assert wait_log(relay_dir / "b.log", "standby")
        r = subprocess.run(
            [sys.executable, "-m", "onss_relay.cli", "send", "--once", "--config", str(config)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert r.returncode == 1 and "a relay (pid" in r.stderr and "is running on this spool" in r.stderr
        os.kill(first.pid, signal.SIGKILL)
        first.wait()
        t0 = time.monotonic()
        assert wait_log(relay_dir / "b.log", "relay_started", timeout=15)
        assert time.monotonic() - t0 < 5
        (relay_dir / "spool" / "outbox" / fi_name(1)).write_bytes(b"<after-takeover/>")
        assert wait_until(lambda: state_of(config, "GO" + fi_name(1)[2:-2]) == State.SENT, 20)
    finally:
        for p in (first, second):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                p.wait(15)


def test_sighup_reloads_what_it_can_and_says_what_needs_a_restart(relay_dir: Path) -> None:
    config, log = relay_dir / "config.toml", relay_dir / "daemon.log"
    proc = start(config, log)
    try:
        assert wait_log(log, "relay_started")
        config.write_text(config.read_text().replace('settle = "0s"', 'settle = "3s"'))
        proc.send_signal(signal.SIGHUP)
        assert wait_log(log, '"reloaded"')
        config.write_text(config.read_text().replace("connections = 2", "connections = 3"))
        proc.send_signal(signal.SIGHUP)
        assert wait_log(log, "reload_partial") and "needs_restart" in log.read_text()
        config.write_text("this is [not toml")
        proc.send_signal(signal.SIGHUP)
        assert wait_log(log, "reload_refused")
        assert proc.poll() is None
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0


def http_get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
    except (urllib.error.URLError, OSError):
        return 0, "not listening yet"


def test_metrics_and_healthz_follow_the_remote(sftp_dir: Path, sshd: SshServer) -> None:
    port = free_port()
    config, log = sftp_dir / "config.toml", sftp_dir / "daemon.log"
    config.write_text(config.read_text() + f'[metrics]\nlisten = "127.0.0.1:{port}"\n')
    proc = start(config, log)
    try:
        assert wait_until(lambda: http_get(f"http://127.0.0.1:{port}/healthz")[0] == 200, 20)
        code, text = http_get(f"http://127.0.0.1:{port}/metrics")
        assert code == 200
        for metric in (
            "onss_relay_queue_depth",
            "onss_relay_oldest_unsent_seconds",
            'onss_relay_sets{state="sent"}',
            "onss_relay_stage_failures_total",
            "onss_relay_last_successful_poll_timestamp_seconds",
            "onss_relay_certificate_days_left",
            "onss_relay_outbox_unclaimed_files 0.0",
            "onss_relay_quarantined_files 0.0",
            "onss_relay_healthy 1.0",
        ):
            assert metric in text, metric
        assert float(re.search(r"^onss_relay_certificate_days_left (\S+)", text, re.M).group(1)) > 300  # type: ignore[union-attr]
        health = subprocess.run(
            [sys.executable, "-m", "onss_relay.cli", "status", "--health", "--config", str(config)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert wait_until(lambda: (sftp_dir / "spool" / "health.json").exists(), 5)
        sshd.stop()  # the remote goes away
        assert wait_until(lambda: http_get(f"http://127.0.0.1:{port}/healthz")[0] == 503, 20)
        code, reason = http_get(f"http://127.0.0.1:{port}/healthz")
        assert "poll" in reason
        assert "onss_relay_healthy 0.0" in http_get(f"http://127.0.0.1:{port}/metrics")[1]
        assert wait_until(
            lambda: (
                subprocess.run(
                    [sys.executable, "-m", "onss_relay.cli", "status", "--health", "--config", str(config)],
                    capture_output=True,
                    timeout=60,
                ).returncode
                == 1
            ),
            10,
        )
        del health
        check = subprocess.run(
            [sys.executable, "-m", "onss_relay.cli", "check", "--config", str(config)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert check.returncode == 3 and re.search(r"✗ running daemon: \S+ pid \d+", check.stdout), check.stdout
        assert "poll" in check.stdout
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0


@pytest.mark.skipif(
    shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed (.ci/run installs it)"
)
def test_systemd_unit_is_hardened_and_valid(tmp_path: Path) -> None:
    unit = REPO / "systemd" / "onss-relay.service"
    r = subprocess.run(["systemd-analyze", "security", "--offline=yes", str(unit)], capture_output=True, text=True)
    level = float(re.search(r"Overall exposure level for \S+: ([0-9.]+)", r.stdout + r.stderr).group(1))  # type: ignore[union-attr]
    assert level <= 2.0, r.stdout[-2000:]
    # the console script of the interpreter running the tests (the README's .venv), not whichever one PATH has:
    # on a fresh machine PATH has none until test_readme_debian installs one, so the order of tests decided
    beside = Path(sys.executable).parent / "onss-relay"
    installed = str(beside) if beside.exists() else shutil.which("onss-relay")
    assert installed, f"no onss-relay console script beside {sys.executable} or on PATH"
    copy = tmp_path / "onss-relay.service"
    copy.write_text(unit.read_text().replace("/usr/local/bin/onss-relay", installed))
    v = subprocess.run(["systemd-analyze", "verify", str(copy)], capture_output=True, text=True)
    assert v.returncode == 0 and not v.stderr.strip(), v.stderr
    text = unit.read_text()
    for key in (
        "Type=notify",
        "WatchdogSec=",
        "User=onss-relay",
        "StateDirectory=onss-relay",
        "ConfigurationDirectory=onss-relay",
        "LogsDirectory=onss-relay",
        "ExecReload=",
    ):
        assert key in text


def test_dockerfile_runs_as_non_root_with_a_healthcheck_and_no_secrets() -> None:
    text = (REPO / "Dockerfile").read_text()
    logical = re.sub(r"\\\n", " ", "\n".join(ln for ln in text.splitlines() if not ln.lstrip().startswith("#")))
    instructions = [ln.strip().split(None, 1) for ln in logical.splitlines() if ln.strip()]
    froms = [rest for op, rest in instructions if op == "FROM"]
    assert len(froms) >= 2 and all(f.startswith("${BASE}") for f in froms), "multi-stage on one BASE"
    base = next(rest for op, rest in instructions if op == "ARG" and rest.startswith("BASE="))
    assert "slim" in base, "a slim default base"
    ignored = (REPO / ".dockerignore").read_text().split()
    assert {"*.p12", "*.pass", "id_rsa*", "secrets"} <= set(ignored), "keys never enter the build context"
    users = [rest.strip() for op, rest in instructions if op == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    assert any(op == "HEALTHCHECK" and "status" in rest and "--health" in rest for op, rest in instructions)
    assert any(op == "VOLUME" and "/var/lib/onss-relay" in rest for op, rest in instructions)
    lowered = text.lower()
    for secret_like in ("password=", "passphrase=", "begin rsa", "begin private", "begin openssh", ".p12 ", "id_rsa "):
        assert secret_like not in lowered
    for op, rest in instructions:
        if op in ("COPY", "ADD"):
            assert not re.search(r"\.(p12|pfx|key|pem|pass)\b|id_rsa|secrets", rest), rest
    compose = (REPO / "docker-compose.example.yml").read_text()
    assert "/run/secrets" in compose and "ONSS_RELAY__" in compose


def test_no_secret_in_debug_output_of_a_run_with_every_secret(
    sftp_dir: Path, sshd: SshServer, client_keys: dict[str, Path]
) -> None:
    from tests.conftest import SECRETS, sftp_config_text

    text = sftp_config_text(
        sshd,
        client_keys["rsa-encrypted"],
        sftp_dir / "known_hosts",
        f'passphrase_file = "{client_keys["passphrase"]}"\n',
    )
    (sftp_dir / "config.toml").write_text(text)
    (sftp_dir / "spool" / "outbox").mkdir(parents=True, exist_ok=True)
    (sftp_dir / "spool" / "outbox" / fi_name(1)).write_bytes(b"<x/>")
    outputs = []
    for args in (["send", "--once"], ["poll", "--once"], ["check"], ["status"]):
        r = subprocess.run(
            [sys.executable, "-m", "onss_relay.cli", *args, "--config", str(sftp_dir / "config.toml"), "--debug"],
            capture_output=True,
            text=True,
            timeout=120,
        )
        outputs.append(r.stdout + r.stderr)
    assert "set_sent" in outputs[0]
    for out in outputs:
        for secret in SECRETS:
            assert secret not in out
