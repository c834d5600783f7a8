"""`check` and a journal the relay cannot write (issue 24 review): said by `check --local` and by `check` with the
daemon stopped, exit 4 (the relay cannot work) with it running too; and no pid quoted from a stale health.json."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.helpers import Daemon, run_cli, wait_until
from tests.test_backup import _mount_read_only

EXIT_LOCAL = 4


@pytest.mark.slow
def test_check_says_an_unwritable_journal_exit_4_with_the_daemon_stopped_or_running(relay_dir: Path) -> None:
    config = relay_dir / "config.toml"
    assert run_cli("send", "--once", "--config", str(config)).returncode == 0  # the journal exists
    journal = relay_dir / "spool" / "journal.db"
    if not _mount_read_only(journal):
        pytest.skip("needs root and mount to make the journal read-only")
    try:
        for local in (["--local"], []):
            r = run_cli("check", *local, "--config", str(config))
            line = f"✗ journal writable: the journal {journal} is on a read-only filesystem"
            assert r.returncode == EXIT_LOCAL and line in r.stdout, (local, r.returncode, r.stdout, r.stderr)
        daemon = Daemon(config, relay_dir / "daemon.log")
        daemon.start()
        try:
            health = lambda: run_cli("status", "--health", "--config", str(config))  # noqa: E731
            assert wait_until(lambda: "read-only filesystem" in health().stdout, 30), health().stdout
            r = run_cli("check", "--config", str(config))
            assert r.returncode == EXIT_LOCAL and "✗ running daemon" in r.stdout, (r.returncode, r.stdout)
        finally:
            assert daemon.stop() == 0
    finally:
        subprocess.run(["umount", str(journal)], check=True)


@pytest.mark.slow
def test_a_killed_daemons_report_is_not_quoted_as_a_running_daemon(relay_dir: Path) -> None:
    config = relay_dir / "config.toml"
    daemon = Daemon(config, relay_dir / "daemon.log")
    proc = daemon.start()
    health = lambda: run_cli("status", "--health", "--config", str(config))  # noqa: E731
    assert wait_until(lambda: health().returncode == 0, 30), health().stdout
    dead = str(proc.pid)
    daemon.kill()  # its health.json stays, fresh, saying healthy
    h = health()
    assert h.returncode != 0 and "not running" in h.stdout and dead not in h.stdout, h.stdout
    r = run_cli("check", "--config", str(config))
    assert dead not in r.stdout and "not running" in r.stdout, r.stdout
    proc = daemon.start()  # restarted: its own report, never the dead one's
    assert wait_until(lambda: f"pid {proc.pid} reports" in health().stdout, 30), health().stdout
    assert daemon.stop() == 0
