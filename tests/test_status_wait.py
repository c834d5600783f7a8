"""Status explains a wait (issue 24 item 7): why sets not sent yet wait (daemon not running, the transfer point
down since when and the next try) and systemd STATUS follows; `status | head` ends quietly with exit 0; local
times with their zone for people, ISO UTC in JSON; `--version` from the installed package's metadata."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from onss_relay.config import load_config
from onss_relay.journal import NewSet, State, open_journal_at
from onss_relay.stages.unclean_stop import InFlightMarker
from tests.conftest import fi_name
from tests.fixtures.sshd import SshServer
from tests.helpers import Daemon, run_cli, start_daemon, wait_log, wait_until


def queue_sets(config: Path, count: int) -> list[str]:
    """Given a config, record ``count`` claimed sets in its journal (as if claimed, nothing sent); return GOs."""
    paths = load_config(config, environ={}).paths
    paths.outbox_dir.mkdir(parents=True, exist_ok=True)
    path = paths.journal_path
    journal = open_journal_at(path)
    gos = ["GO" + fi_name(seq)[2:-2] for seq in range(1, count + 1)]
    try:
        journal.add_sets([NewSet(go, "T", ["FI" + go[2:] + ".1"]) for go in gos])
    finally:
        journal.close()
    return gos


def test_status_piped_into_head_ends_quietly_with_exit_0(relay_dir: Path) -> None:
    config = relay_dir / "config.toml"
    queue_sets(config, 3000)  # far more than a pipe holds
    command = f"set -o pipefail; {sys.executable} -m onss_relay.cli status --limit 5000 --config {config} | head -2"
    r = subprocess.run(["bash", "-c", command], capture_output=True, text=True, env={**os.environ})
    assert r.returncode == 0 and r.stderr == "" and r.stdout.startswith("SET"), (r.returncode, r.stderr)


def test_a_waiting_set_says_the_daemon_is_not_running_and_times_are_local_with_their_zone(relay_dir: Path) -> None:
    config = relay_dir / "config.toml"
    [go] = queue_sets(config, 1)
    r = run_cli("status", "--config", str(config))
    assert "1 set(s) not sent yet wait: the daemon is not running" in r.stdout, r.stdout
    brussels = {"TZ": "Europe/Brussels"}
    detail = run_cli("status", go, "--config", str(config), env=brussels).stdout
    assert "waiting:     the daemon is not running" in detail, detail
    history = detail.split("history:")[1]
    assert (" CET " in history or " CEST " in history) and "+00:00" not in history, history
    doc = json.loads(run_cli("status", "--json", "--config", str(config), env=brussels).stdout)
    assert doc["generated_at"].endswith("+00:00") and doc["waiting"].startswith("the daemon is not running")


def test_version_is_the_installed_packages(tmp_path: Path) -> None:
    dist = tmp_path / "onss_relay-9.9.9.dist-info"  # a package installed at another version than the source's
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: onss-relay\nVersion: 9.9.9\n")
    env = {"PYTHONPATH": f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    r = run_cli("--version", env=env, cwd=tmp_path)  # never a source tree's *.egg-info first on the path
    assert r.stdout.strip() == "onss-relay 9.9.9", r.stdout + r.stderr


@pytest.mark.slow
def test_the_transfer_point_down_is_why_sets_wait_and_systemd_status_says_so(sftp_dir: Path, sshd: SshServer) -> None:
    config, log = sftp_dir / "config.toml", sftp_dir / "daemon.log"
    sock_path = sftp_dir / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(sock_path))
    sock.settimeout(60)
    sshd.stop()
    outbox = sftp_dir / "spool" / "outbox"
    outbox.mkdir(parents=True, exist_ok=True)
    (outbox / fi_name(1)).write_bytes(b"<Dimona/>")
    proc = start_daemon(config, log, {"NOTIFY_SOCKET": str(sock_path)})
    try:
        assert wait_log(log, "relay_started")

        def waiting_status() -> bool:
            message = sock.recv(4096).decode()
            return "STATUS=waiting:" in message and "unreachable" in message or "failing" in message

        assert wait_until(waiting_status, 60)
        status = lambda: run_cli("status", "--config", str(config)).stdout  # noqa: E731
        assert wait_until(lambda: "the transfer point is unreachable since" in status(), 30), status()
        assert "Connection refused" in status()
        # the next try is a time, never "-" (the upload stage retries within its round; it once never said when)
        assert wait_until(lambda: re.search(r"next try at \d{4}-\d\d-\d\d \d\d:\d\d:\d\d", status()), 30), status()
    finally:
        sock.close()
        proc.terminate()
        assert proc.wait(20) == 0


def killed_mid_upload(relay_dir: Path, config: Path) -> str:
    """Given a relay folder, queue one set and leave it as a process killed mid-upload does (uploading, the
    in-flight marker set); return its GO name."""
    [go] = queue_sets(config, 1)
    journal = open_journal_at(relay_dir / "spool" / "journal.db")
    try:
        journal.transition(go, State.SIGNED)
        journal.transition(go, State.UPLOADING)
    finally:
        journal.close()
    InFlightMarker(relay_dir / "spool").set()
    return go


@pytest.mark.slow
def test_an_uncertain_set_and_a_set_waiting_for_parts_say_why_in_status_and_systemd_status(relay_dir: Path) -> None:
    """The two waits `status` did not explain: a set uncertain after a connection given up (its quiet period, until
    when), and an outbox file whose set lacks parts (which)."""
    config, log = relay_dir / "config.toml", relay_dir / "daemon.log"
    env = {"ONSS_RELAY__REMOTE__QUIET_PERIOD": "10m", "TZ": "Europe/Brussels"}
    go = killed_mid_upload(relay_dir, config)
    assert run_cli("send", "--once", "--config", str(config), env=env).returncode == 5
    outbox = relay_dir / "spool" / "outbox"
    (outbox / fi_name(7, total=2, part=1)).write_bytes(b"<Dimona>part one</Dimona>")
    text = run_cli("status", "--config", str(config), env=env).stdout
    [line] = [line for line in text.splitlines() if "uncertain, a request possibly still in flight" in line]
    assert line.startswith("1 set(s) uncertain") and f"{go}: uploading when the relay stopped uncleanly" in line
    assert re.search(r"is sent until \d{4}-\d\d-\d\d \d\d:\d\d:\d\d CES?T", line), line
    [line] = [line for line in text.splitlines() if line.strip().startswith(fi_name(7, total=2, part=1))]
    assert f"waiting for part(s) {fi_name(7, total=2, part=2)}" in line, text
    doc = json.loads(run_cli("status", "--json", "--config", str(config), env=env).stdout)
    assert doc["unclaimed"][0]["waiting"].startswith("waiting for part(s)"), doc["unclaimed"]
    sock_path = relay_dir / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(sock_path))
    sock.settimeout(30)
    proc = start_daemon(config, log, {**env, "NOTIFY_SOCKET": str(sock_path)})
    try:
        assert wait_until(lambda: "STATUS=waiting: 1 set(s) uncertain" in sock.recv(4096).decode(), 30)
    finally:
        sock.close()
        proc.terminate()
        assert proc.wait(20) == 0


def test_outbox_files_with_no_relay_running_say_so(relay_dir: Path) -> None:
    """Issue 24 review 2, item 2: with the daemon stopped an outbox file does not read "settling", and a bad name
    is quarantined when the relay runs, not "at the next scan"."""
    config = relay_dir / "config.toml"
    queue_sets(config, 1)
    outbox = relay_dir / "spool" / "outbox"
    (outbox / fi_name(11, app="DMFA")).write_bytes(b"<DmfA>one</DmfA>")
    (outbox / "payroll.xml").write_bytes(b"<DmfA>two</DmfA>")
    text = run_cli("status", "--config", str(config)).stdout
    [line] = [line for line in text.splitlines() if line.strip().startswith(fi_name(11, app="DMFA"))]
    assert "complete: claimed when the relay runs; no relay is running (not running" in line, text
    [line] = [line for line in text.splitlines() if line.strip().startswith("payroll.xml")]
    assert "quarantined when the relay runs; no relay is running" in line, text
    doc = json.loads(run_cli("status", "--json", "--config", str(config)).stdout)
    assert all("no relay is running" in u["waiting"] for u in doc["unclaimed"]), doc["unclaimed"]


def test_an_uncertain_set_waits_the_configured_quiet_period_when_it_was_raised_since(relay_dir: Path) -> None:
    """Issue 24 review 2, item 5: a set became uncertain with a 10 min quiet period, then remote.quiet_period was
    raised to 60 min; the uploader waits the longer, and status says that, not the recorded 10 min."""
    config = relay_dir / "config.toml"
    killed_mid_upload(relay_dir, config)
    env = {"ONSS_RELAY__REMOTE__QUIET_PERIOD": "10m", "TZ": "UTC"}
    assert run_cli("send", "--once", "--config", str(config), env=env).returncode == 5
    raised = {**env, "ONSS_RELAY__REMOTE__QUIET_PERIOD": "60m"}
    text = run_cli("status", "--config", str(config), env=raised).stdout
    found = re.search(r"is sent until (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)", text)
    assert found, text
    until = dt.datetime.strptime(found.group(1), "%Y-%m-%d %H:%M:%S").replace(tzinfo=dt.UTC)
    assert until - dt.datetime.now(dt.UTC) > dt.timedelta(minutes=30), text


@pytest.mark.slow
def test_a_file_there_before_the_watch_says_it_waits_settle_unknown(relay_dir: Path) -> None:
    """Issue 24 review 2, item 2: with settle = "0s" a file already in the outbox when the daemon started waited
    30 s reading only "settling, or still being written"; it names watch.settle_unknown, the setting that holds it."""
    config, log = relay_dir / "config.toml", relay_dir / "daemon.log"
    config.write_text(config.read_text().replace('settle_unknown = "1s"', 'settle_unknown = "10m"'))
    name = fi_name(11, app="DMFA")
    (relay_dir / "spool" / "outbox").mkdir(parents=True, exist_ok=True)
    (relay_dir / "spool" / "outbox" / name).write_bytes(b"<DmfA>one</DmfA>")
    daemon = Daemon(config, log)
    daemon.start()
    try:
        assert wait_until(lambda: (relay_dir / "spool" / "health.json").exists(), 30)  # its first health report
        text = run_cli("status", "--config", str(config)).stdout
    finally:
        assert daemon.stop() == 0
    [line] = [line for line in text.splitlines() if line.strip().startswith(name)]
    assert "watch.settle_unknown (600 s) when the relay did not see it written" in line, text


def test_a_complete_settled_file_of_a_large_outbox_may_be_waiting_for_its_claim_page_and_status_says_so() -> None:
    """Review rev6: the claim takes a large outbox a page of sets at a time; a complete, settled file behind earlier
    pages read only "settling, or still being written"."""
    from onss_relay.commands.outbox_waits import ClaimBlock, unclaimed_reasons

    name = fi_name(5)
    for block in (ClaimBlock(), ClaimBlock(settle=0.0, settle_unknown=30.0)):
        assert "behind earlier sets (claimed a page at a time)" in unclaimed_reasons([name], block)[name]
