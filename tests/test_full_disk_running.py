"""A full disk under a running daemon (issue 24 review): a stage's failure is one warning when it starts and one
line when it ends, not a stage_retry/stage_recovered pair many times a second; plain `status` still answers on a
disk with no byte free."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import fi_name
from tests.helpers import Daemon, run_cli, wait_until
from tests.test_full_disk import small  # noqa: F401  (the tmpfs fixture)
from tests.test_single_faults import fill

pytestmark = pytest.mark.slow


def records(log: Path) -> list[dict[str, Any]]:
    """Given a daemon's log, return every JSON line (after its priority prefix, if any) as a dict."""
    found = []
    for line in log.read_text().splitlines():
        try:
            found.append(json.loads(line[line.index("{") :]))
        except ValueError:
            continue
    return found


def events(log: Path) -> list[tuple[str, str]]:
    """Given a daemon's log, return (event, stage) of every JSON line."""
    return [(str(doc.get("event")), str(doc.get("stage"))) for doc in records(log)]


def on_small_disk(relay_dir: Path, small: Path) -> Path:  # noqa: F811
    """Given the test's relay folder and a tmpfs, move the spool onto the tmpfs; return the config."""
    config = relay_dir / "config.toml"
    config.write_text(config.read_text().replace('root = "spool"', f'root = "{small / "spool"}"'))
    (small / "spool" / "outbox").mkdir(parents=True)
    return config


def test_a_disk_that_fills_under_the_running_daemon_is_one_warning_and_one_recovery(
    relay_dir: Path,
    small: Path,  # noqa: F811
) -> None:
    config, log = on_small_disk(relay_dir, small), relay_dir / "daemon.log"
    outbox = small / "spool" / "outbox"
    daemon = Daemon(config, log)
    daemon.spawn()
    try:
        (outbox / fi_name(1)).write_bytes(b"<Dimona>first</Dimona>")
        assert wait_until(lambda: (relay_dir / "remote" / "INTEST" / ("GO" + fi_name(1)[2:-2])).exists(), 30)
        (outbox / ".second").write_bytes(b"<Dimona>second</Dimona>")
        filler = fill(small)
        (outbox / ".second").rename(outbox / fi_name(2))  # dropped on the full disk (a rename needs no room)
        assert wait_until(lambda: ("stage_retry", "watch") in events(log), 30), log.read_text()[-2000:]
        time.sleep(6)  # full a while: the scan is tried again and again, woken by its own reads (no timing asserted)
        r = run_cli("check", "--config", str(config))  # the daemon's trouble is this machine's: exit 4, not 3
        assert r.returncode == 4 and "✗ running daemon: running, disk full" in r.stdout, (r.returncode, r.stdout)
        filler.unlink()
        assert wait_until(lambda: (relay_dir / "remote" / "INTEST" / fi_name(2)).exists(), 30), log.read_text()[-2000:]
    finally:
        assert daemon.stop() == 0
    seen = events(log)
    assert seen.count(("stage_retry", "watch")) == 1, log.read_text()[-3000:]
    assert seen.count(("stage_recovered", "watch")) == 1, log.read_text()[-3000:]


def test_plain_status_answers_on_a_disk_with_no_byte_free(relay_dir: Path, small: Path) -> None:  # noqa: F811
    config, log = on_small_disk(relay_dir, small), relay_dir / "daemon.log"
    (small / "spool" / "outbox" / fi_name(1)).write_bytes(b"<Dimona>first</Dimona>")
    assert run_cli("send", "--once", "--config", str(config)).returncode == 0
    filler = fill(small)
    daemon = Daemon(config, log)
    daemon.spawn()  # it waits for room; its journal's -wal and -shm could not be written
    try:
        assert wait_until(lambda: '"relay_waiting"' in log.read_text(), 30), log.read_text()
        r = run_cli("status", "--config", str(config))
        assert r.returncode == 0 and "GO" + fi_name(1)[2:-2] in r.stdout, r.stdout + r.stderr
        daemon.kill()
        r = run_cli("status", "--json", "--config", str(config))  # the same, left by a killed daemon
        assert r.returncode == 0 and json.loads(r.stdout)["sets"], r.stdout + r.stderr
    finally:
        filler.unlink()
        if daemon.proc is not None and daemon.proc.poll() is None:
            daemon.stop()


def recovered_after(log: Path, stage: str) -> list[int]:
    """Given a daemon's log, return the after_attempts of each stage_recovered line of ``stage``."""
    return [
        int(doc["after_attempts"])
        for doc in records(log)
        if doc.get("event") == "stage_recovered" and doc.get("stage") == stage
    ]


def test_a_full_disk_under_a_settling_file_backs_the_scan_off(relay_dir: Path, small: Path) -> None:  # noqa: F811
    """Issue 24 review 2, item 1: a file refused on the full disk after its settle time is not tried again at
    once and again (the scan backs off as every stage does): the attempts are counted, not timed."""
    config, log = on_small_disk(relay_dir, small), relay_dir / "daemon.log"
    config.write_text(config.read_text().replace('settle = "0s"', 'settle = "4s"'))
    outbox = small / "spool" / "outbox"
    daemon = Daemon(config, log)
    daemon.start()
    try:
        (outbox / ".second").write_bytes(b"<Dimona>second</Dimona>")
        filler = fill(small)
        (outbox / ".second").rename(outbox / fi_name(2))  # its settle deadline passes while the disk is full
        assert wait_until(lambda: ("stage_retry", "watch") in events(log), 30), log.read_text()[-2000:]
        time.sleep(10)  # full ten seconds: at 0.05 s a try that is hundreds of attempts, backed off a handful
        text = run_cli("status", "--config", str(config)).stdout  # the reason that applies is the full disk
        [line] = [line for line in text.splitlines() if line.strip().startswith(fi_name(2))]
        assert "disk full" in line and "settling" not in line, text
        filler.unlink()
        assert wait_until(lambda: recovered_after(log, "watch"), 60), log.read_text()[-2000:]
    finally:
        assert daemon.stop() == 0
    attempts = recovered_after(log, "watch")
    assert len(attempts) == 1 and attempts[0] < 100, log.read_text()[-3000:]
