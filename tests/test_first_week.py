"""A sysadmin's first week: the health a service manager and a monitor see must be the truth, at start, in
an outage, after a reload and after a stop (issue: a sysadmin's first week)."""

from __future__ import annotations

import json
import os
import signal
import socket
from pathlib import Path

import pytest

from onss_relay.journal import State
from tests.conftest import fi_name
from tests.fixtures.sshd import SshServer, free_port
from tests.helpers import run_cli, start_daemon, state_of, wait_log, wait_until
from tests.test_daemon import http_get

pytestmark = pytest.mark.slow


def with_metrics(config: Path) -> int:
    port = free_port()
    config.write_text(config.read_text() + f'[metrics]\nlisten = "127.0.0.1:{port}"\n')
    return port


def test_an_outage_shows_within_a_minute_and_its_end_is_logged(sftp_dir: Path, sshd: SshServer) -> None:
    config, log = sftp_dir / "config.toml", sftp_dir / "daemon.log"
    config.write_text(config.read_text().replace('interval = "1s"', 'interval = "5m"'))  # the default poll interval
    port = with_metrics(config)
    healthz = f"http://127.0.0.1:{port}/healthz"
    proc = start_daemon(config, log)
    try:
        assert wait_until(lambda: http_get(healthz)[0] == 200, 20)
        sshd.stop()  # the transfer point goes away
        outbox = sftp_dir / "spool" / "outbox"
        (outbox / fi_name(1)).write_bytes(b"<DmfA/>")
        assert wait_until(lambda: http_get(healthz)[0] == 503, 60), log.read_text()[-2000:]
        code, reason = http_get(healthz)
        assert "upload failing" in reason or "stage upload failing" in reason, reason
        failures = http_get(f"http://127.0.0.1:{port}/metrics")[1]
        assert 'onss_relay_stage_failures_total{stage="upload"} 0.0' not in failures
        retry = next(json.loads(ln) for ln in log.read_text().splitlines() if '"upload_retry"' in ln)
        assert retry["retry_in_s"] is not None and retry["sets_waiting"] >= 0 and retry["error"]
        assert wait_until(lambda: "failing" in run_cli("status", "--health", "--config", str(config)).stdout, 10)
        sshd.start()  # back
        go = "GO" + fi_name(1)[2:-2]
        assert wait_until(lambda: state_of(config, go) == State.SENT, 90), log.read_text()[-2000:]
        assert wait_log(log, "stage_recovered")
        assert wait_until(lambda: http_get(healthz)[0] == 200, 30)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0


def test_a_standby_tells_systemd_it_is_ready(relay_dir: Path) -> None:
    config = relay_dir / "config.toml"
    first = start_daemon(config, relay_dir / "a.log")
    sock_path = relay_dir / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(sock_path))
    sock.settimeout(20)
    try:
        assert wait_log(relay_dir / "a.log", "relay_started")
        second = start_daemon(config, relay_dir / "b.log", {"NOTIFY_SOCKET": str(sock_path)})
        try:
            message = sock.recv(4096).decode()
            assert "READY=1" in message and "STATUS=standby" in message, message
        finally:
            second.send_signal(signal.SIGTERM)
            assert second.wait(20) == 0
    finally:
        sock.close()
        first.send_signal(signal.SIGTERM)
        assert first.wait(20) == 0


def test_a_reload_applies_a_shorter_poll_interval_at_once_and_says_what_changed(relay_dir: Path) -> None:
    config, log = relay_dir / "config.toml", relay_dir / "daemon.log"
    config.write_text(config.read_text().replace('interval = "1s"', 'interval = "1h"'))
    port = with_metrics(config)
    proc = start_daemon(config, log)
    try:
        assert wait_until(lambda: http_get(f"http://127.0.0.1:{port}/healthz")[0] == 200, 20)
        answer = relay_dir / "remote" / "OUTTEST" / "FO.ACRF.999999.20261124.00001.T"
        answer.write_bytes(b"<ACRF/>")
        (answer.parent / ("GO" + answer.name[2:])).write_bytes(b"")
        config.write_text(config.read_text().replace('interval = "1h"', 'interval = "2s"'))
        proc.send_signal(signal.SIGHUP)
        assert wait_log(log, '"reloaded"')
        line = next(json.loads(ln) for ln in log.read_text().splitlines() if '"reloaded"' in ln)
        assert line["applied"] == ["poll.interval"]
        assert wait_until(lambda: not answer.exists(), 10), "the new interval waited for the old one"
        assert http_get(f"http://127.0.0.1:{port}/healthz")[0] == 200  # the health window counts from the reload
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0


def test_after_a_clean_stop_health_and_check_say_it_is_not_running(relay_dir: Path) -> None:
    config, log = relay_dir / "config.toml", relay_dir / "daemon.log"
    proc = start_daemon(config, log)
    assert wait_log(log, "relay_started")
    assert wait_until(lambda: run_cli("status", "--health", "--config", str(config)).returncode == 0, 20)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(20) == 0
    health = run_cli("status", "--health", "--config", str(config))
    assert health.returncode == 1 and "stopped" in health.stdout
    check = run_cli("check", "--config", str(config))
    assert "not running" in check.stdout


def test_results_exist_from_a_sets_first_state_for_sent_and_locally_refused_sets(relay_dir: Path) -> None:
    config = relay_dir / "config.toml"
    outbox = relay_dir / "spool" / "outbox"
    outbox.mkdir(parents=True, exist_ok=True)
    (outbox / fi_name(1)).write_bytes(b"<DmfA/>")
    (outbox / fi_name(2, sender="654321")).write_bytes(b"<DmfA/>")  # refused here: not our sender number
    assert run_cli("send", "--once", "--config", str(config)).returncode == 1
    results = relay_dir / "spool" / "results"
    sent = json.loads((results / ("GO" + fi_name(1)[2:-2] + ".json")).read_text())
    refused = json.loads((results / ("GO" + fi_name(2, sender="654321")[2:-2] + ".json")).read_text())
    assert sent["state"] == "sent" and sent["sent_dir"]
    assert refused["state"] == "failed" and "sender" in refused["reason"]


def test_requeue_puts_a_quarantined_multi_part_set_back_whole(relay_dir: Path) -> None:
    config = relay_dir / "config.toml"
    outbox = relay_dir / "spool" / "outbox"
    outbox.mkdir(parents=True, exist_ok=True)
    parts = [fi_name(1, env="S", total=3, part=i) for i in (1, 2, 3)]
    for name in parts:
        (outbox / name).write_bytes(b"<DmfA/>")
    only_t = {"ONSS_RELAY__WATCH__ENVIRONMENTS": '["T"]'}
    assert run_cli("send", "--once", "--config", str(config), env=only_t).returncode == 1
    failed = relay_dir / "spool" / "failed"
    assert sorted(p.name for p in failed.iterdir() if not p.name.endswith(".json")) == parts
    r = run_cli("requeue", parts[1], "--config", str(config))
    assert r.returncode == 0 and "requeued GO" in r.stdout, r.stderr
    assert sorted(p.name for p in outbox.iterdir()) == parts and list(failed.iterdir()) == []
    r = run_cli("send", "--once", "--config", str(config))  # the sysadmin fixed watch.environments
    assert r.returncode == 0 and "sent 1 set(s)" in r.stdout, r.stdout + r.stderr
    go = "GO" + parts[0][2:-2]
    assert state_of(config, go) == State.SENT
    bad = run_cli("requeue", "FI.DMFA.123456.20260101.00009.T.1.1", "--config", str(config))
    assert bad.returncode == 2 and "nothing of set" in bad.stderr


def test_status_shows_what_waits_in_the_outbox_and_what_was_quarantined(relay_dir: Path) -> None:
    config = relay_dir / "config.toml"
    outbox = relay_dir / "spool" / "outbox"
    outbox.mkdir(parents=True, exist_ok=True)
    (outbox / fi_name(1, total=2, part=1)).write_bytes(b"<DmfA/>")  # its part 2 has not come yet
    (outbox / "payroll-export.xml").write_bytes(b"<DmfA/>")  # not a declaration name: quarantined
    assert run_cli("send", "--once", "--config", str(config)).returncode == 1
    status = run_cli("status", "--config", str(config)).stdout
    assert "outbox files not claimed yet (1)" in status and fi_name(1, total=2, part=1) in status
    assert "quarantined in failed/ (1 file(s))" in status and "payroll-export.xml" in status
    doc = json.loads(run_cli("status", "--json", "--config", str(config)).stdout)
    assert [u["file"] for u in doc["unclaimed"]] == [fi_name(1, total=2, part=1)]
    assert doc["quarantined"][0]["reason"] == "not a valid declaration file name"


def host_key_line() -> str:
    """A known_hosts line for the example's transfer point, as `ssh-keyscan -p 8022` would print it."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    public = ed25519.Ed25519PrivateKey.generate().public_key()
    line = public.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
    return f"[sftp.socialsecurity.be]:8022 {line}\n"


def test_the_readmes_install_walk_through_works_as_written(tmp_path: Path, identity_dir: Path) -> None:
    """The README's install block, run line by line with its system paths moved under a temporary root; then
    the unit it installs passes `systemd-analyze verify` with the symlink it makes."""
    import re
    import shutil
    import subprocess
    import sys

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    block = readme.split("### With pip, in a virtual environment", 1)[1].split("```sh", 1)[1].split("```", 1)[0]
    root = tmp_path / "root"
    for d in ("opt", "etc", "usr/local/bin", "var/lib"):
        (root / d).mkdir(parents=True)
    env = {
        **os.environ,
        "PATH": f"{root}/usr/local/bin:{os.environ['PATH']}",
        "ONSS_RELAY__PATHS__ROOT": f"{root}/var/lib/onss-relay",
    }
    venv_python = sys.executable  # the README's python3, made explicit
    for line in block.strip().splitlines():
        command = re.sub(r"\s+#.*$", "", line).strip()
        command = command.replace("python3 ", f"{venv_python} ", 1)
        for path in ("/opt/", "/etc/", "/usr/local/bin/"):
            command = command.replace(path, f"{root}{path}")
        if command.startswith("onss-relay run"):
            continue  # the daemon itself is tested elsewhere
        if command.startswith("onss-relay check"):
            for name in ("signer.p12", "signer.pass"):  # step 1 of init's next steps
                shutil.copy(identity_dir / name, root / "etc" / "onss-relay" / name)
                (root / "etc" / "onss-relay" / name).chmod(0o600)  # secrets: their owner's alone (check)
            (root / "etc" / "onss-relay" / "known_hosts").write_text(host_key_line())  # step 3
            command = command.replace("check", "check --local", 1)  # no transfer point here
        if "-m venv" in command:  # no PyPI round trip: the venv sees the libraries the tests already have
            command = command.replace("-m venv", "-m venv --system-site-packages")
        if " pip install ." in command:
            command += " --no-deps --no-build-isolation -q"
        r = subprocess.run(
            command,
            shell=True,
            cwd=Path(__file__).resolve().parents[1],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert r.returncode == 0, f"{line}\n{r.stdout[-2000:]}{r.stderr[-2000:]}"
    assert (root / "usr/local/bin/onss-relay").resolve() == (root / "opt/onss-relay/bin/onss-relay").resolve()
    unit = (Path(__file__).resolve().parents[1] / "systemd" / "onss-relay.service").read_text()
    if shutil.which("systemd-analyze"):
        copy = tmp_path / "onss-relay.service"
        copy.write_text(unit.replace("/usr/local/bin/onss-relay", str(root / "usr/local/bin/onss-relay")))
        v = subprocess.run(["systemd-analyze", "verify", str(copy)], capture_output=True, text=True)
        assert v.returncode == 0 and not v.stderr.strip(), v.stderr
