"""Audit of issue 25: `send --once` on a PostgreSQL journal takes the leadership as a daemon does, so after
another relay died or was paused with a set in go_sending, it waits one lease before recovering that set, as a
daemon taking over does (standby.wait_before_recovery): an old leader paused right after its last lease check
may still put that GO, which the recovery then finds on the server instead of putting a second one. It
recovered at once (the GO put 0.2 s after taking the leadership)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.postgres import journal_counts, lease_live
from tests.helpers import run_cli, wait_log, wait_until
from tests.test_uploader_sftp import drop_sets

pytestmark = pytest.mark.slow


def _leave_in_go_sending(config: Path, url: str, remote_go: Path) -> None:
    """Given a config with one set in its outbox, run `send --once` with a folder where its GO goes: its FI and FS
    are put, its go_sending committed, its GO refused; the set is left in go_sending, as by a relay that died
    between that commit and its GO (a crash at the Nth commit did it, but which commit is go_sending's depends on
    the timing of the others: seen in CI)."""
    remote_go.mkdir(parents=True)
    try:
        run_cli("send", "--once", "--config", str(config))
    finally:
        remote_go.rmdir()
    assert journal_counts(url) == {"go_sending": 1}, journal_counts(url)
    assert wait_until(lambda: not lease_live(url), 30)


@pytest.mark.parametrize("command", [["send", "--once"], ["run"]])
def test_a_new_leader_waits_before_recovering_a_set_another_relay_left_in_go_sending(
    relay_dir: Path, pg_server: Any, command: list[str]
) -> None:
    url = pg_server.new_database()
    config = relay_dir / "config.toml"
    config.write_text(f'{config.read_text()}\n[journal]\nurl = "{url}"\nlease = "3s"\n')
    [go] = drop_sets(relay_dir / "spool" / "outbox", [(1, "T", 1)])
    remote_go = relay_dir / "remote" / "INTEST" / go
    _leave_in_go_sending(config, url, remote_go)
    assert not remote_go.exists()
    log = relay_dir / "new-leader.log"
    argv = [sys.executable, "-m", "onss_relay.cli", *command, "--config", str(config)]
    while True:  # send --once is refused while the killed one's lease is live (a daemon waits as a standby)
        with log.open("w") as f:
            proc = subprocess.Popen(argv, stdout=f, stderr=f, env=dict(os.environ))
        assert wait_until(lambda p=proc: p.poll() is not None or "leadership_taken" in log.read_text(), 60)
        if "leadership_taken" in log.read_text():
            break
        assert "refused" in log.read_text(), log.read_text()
    try:
        # the paused old leader runs again and puts the GO it had checked its lease for
        assert wait_log(log, "takeover_wait", timeout=30), log.read_text()
        remote_go.write_bytes(b"")  # a GO is empty
        assert wait_until(lambda: journal_counts(url) == {"sent": 1}, 60), journal_counts(url)
    finally:
        if command == ["run"]:
            proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0, log.read_text()
    text = log.read_text()
    assert "GO already on the server" in text and "GO uploaded" not in text, text
