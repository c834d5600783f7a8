"""Two relays, one shared spool, one PostgreSQL journal, the real sshd: the standby finishes what the active
one started when it dies (SIGKILL), when it is paused past its lease (SIGSTOP, then SIGCONT: it puts nothing
more and stops its stages), and one relay waits out a restart of PostgreSQL; every set's FI and FS are closed
before its GO and every GO is written exactly once (the sftp-server log)."""

from __future__ import annotations

import datetime as dt
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from onss_relay.config import JournalConfig
from onss_relay.journal.postgres import PostgresJournal
from tests.fixtures.sshd import SshServer
from tests.helpers import Daemon, run_cli, wait_log, wait_until
from tests.test_full_disk_running import records
from tests.test_uploader_sftp import assert_order_and_once, drop_sets

pytestmark = pytest.mark.slow

SETS = 200


@pytest.fixture
def pg_config(sftp_dir: Path, pg_server: Any) -> Path:
    """The SFTP relay folder's config with its journal in a fresh PostgreSQL database and a 3 s lease."""
    config = sftp_dir / "config.toml"
    url = pg_server.new_database()
    config.write_text(f'{config.read_text()}\n[journal]\nurl = "{url}"\nlease = "3s"\n')
    return config


def _journal(config: Path) -> PostgresJournal:
    url = config.read_text().split('url = "', 1)[1].split('"', 1)[0]
    return PostgresJournal(JournalConfig(url=url), "123456", readonly=True)


def _sent(config: Path) -> int:
    journal = _journal(config)
    try:
        return journal.counts().get("sent", 0)
    finally:
        journal.close()


def _assert_all_sent_once(config: Path, sshd: SshServer, gos: list[str]) -> None:
    journal = _journal(config)
    try:
        assert journal.counts() == {"sent": len(gos)}
        for go in gos:
            row = journal.get_set(go)
            assert row is not None and row.archived
            assert_order_and_once(sshd, go, row.parts, list(row.data.fs))
    finally:
        journal.close()


def _pair(sftp_dir: Path, config: Path) -> tuple[Daemon, Daemon]:
    active, standby = Daemon(config, sftp_dir / "a.log"), Daemon(config, sftp_dir / "b.log")
    active.start()
    assert wait_log(sftp_dir / "a.log", "leadership_taken")
    standby.spawn()
    assert wait_log(sftp_dir / "b.log", '"standby"', timeout=30)
    return active, standby


def test_the_standby_finishes_when_the_active_relay_is_killed(sftp_dir: Path, pg_config: Path, sshd: SshServer) -> None:
    active, standby = _pair(sftp_dir, pg_config)
    try:
        gos = drop_sets(sftp_dir / "spool" / "outbox", [(i, "T", 1 + (i % 5 == 0)) for i in range(1, SETS + 1)])
        assert wait_until(lambda: _sent(pg_config) >= 20, 60, 0.05)
        active.kill()
        assert wait_log(sftp_dir / "b.log", "taking_over", timeout=30)
        assert wait_until(lambda: _sent(pg_config) == SETS, 120, 0.5)
    finally:
        active.stop()
        assert standby.stop(30) == 0
    _assert_all_sent_once(pg_config, sshd, gos)


def test_a_relay_paused_past_its_lease_puts_nothing_more_when_it_runs_again(
    sftp_dir: Path, pg_config: Path, sshd: SshServer
) -> None:
    active, standby = _pair(sftp_dir, pg_config)
    assert active.proc is not None
    try:
        gos = drop_sets(sftp_dir / "spool" / "outbox", [(i, "T", 1) for i in range(1, SETS + 1)])
        assert wait_until(lambda: _sent(pg_config) >= 20, 60, 0.05)
        os.kill(active.proc.pid, signal.SIGSTOP)
        # a 3 s lease: seconds on a quiet machine; the logs of both relays when it does not come (seen once in a
        # CI rehearsal at 30 s, not reproduced: the standby's side is what to read)
        took_over = wait_log(sftp_dir / "b.log", "taking_over", timeout=60)
        assert took_over, (sftp_dir / "b.log").read_text()[-3000:] + (sftp_dir / "a.log").read_text()[-1500:]
        resumed_at, resumed = len((sftp_dir / "a.log").read_bytes()), time.time()
        os.kill(active.proc.pid, signal.SIGCONT)
        assert wait_log(sftp_dir / "a.log", "stages_stopping", timeout=10)
        assert wait_until(lambda: _sent(pg_config) == SETS, 120, 0.5)
        after = (sftp_dir / "a.log").read_bytes()[resumed_at:].decode()
        # no journal commit of a step begun after SIGCONT. A set_state line follows each commit; a pause between a
        # commit and its line (or during its round trip) prints it after SIGCONT for work done before the pause
        # (seen in CI), so each line's transaction start is read back: the previous state's line plus the time
        # it says the set spent there.
        began = _commits_began(records(sftp_dir / "a.log"), ("sent", "go_sending"))
        assert began and all(t < resumed for _, t in began), [(go, t - resumed) for go, t in began if t >= resumed]
        assert active.proc.poll() is None and "standby_again" in after  # it waits as a standby, not active
    finally:
        os.kill(active.proc.pid, signal.SIGCONT)
        assert active.stop(30) == 0
        assert standby.stop(30) == 0
    _assert_all_sent_once(pg_config, sshd, gos)


def test_a_postgresql_restart_is_waited_out_and_nothing_is_lost_or_doubled(
    sftp_dir: Path, pg_config: Path, sshd: SshServer, pg_server: Any
) -> None:
    relay = Daemon(pg_config, sftp_dir / "a.log")
    relay.start()
    try:
        gos = drop_sets(sftp_dir / "spool" / "outbox", [(i, "T", 1) for i in range(1, 101)])
        assert wait_until(lambda: _sent(pg_config) >= 10, 60, 0.05)
        pg_server.stop()
        assert wait_log(sftp_dir / "a.log", "leadership_lost", timeout=30)
        # the relay says it waits for the database, not for another relay (review of issue 25)
        assert wait_log(sftp_dir / "a.log", "waiting for the journal's database", timeout=30)
        pg_server.start()
        assert wait_log(sftp_dir / "a.log", "taking_over", timeout=30)
        assert wait_until(lambda: _sent(pg_config) == 100, 120, 0.5)
    finally:
        assert relay.stop(30) == 0
    log = (sftp_dir / "a.log").read_text()
    assert '"standby_again"' in log and "cannot be reached" in log
    _assert_all_sent_once(pg_config, sshd, gos)


def test_status_health_and_check_see_the_leader_on_postgresql(sftp_dir: Path, pg_config: Path, sshd: SshServer) -> None:
    """Review of issue 25: with the journal in PostgreSQL no relay.lock is held, and `status --health` (the
    container's HEALTHCHECK) called the running leader "not running"."""
    relay = Daemon(pg_config, sftp_dir / "a.log")
    relay.start()
    try:
        assert wait_log(sftp_dir / "a.log", "leadership_taken")
        assert wait_until(lambda: (sftp_dir / "spool" / "health.json").exists(), 30)
        health = run_cli("status", "--health", "--config", str(pg_config))
        assert health.returncode == 0 and "leader, epoch 1" in health.stdout, health.stdout + health.stderr
        check = run_cli("check", "--config", str(pg_config))
        assert "not running" not in check.stdout, check.stdout
    finally:
        assert relay.stop() == 0


def _commits_began(log: list[dict[str, Any]], states: tuple[str, ...]) -> list[tuple[str, float]]:
    """Given a daemon's log records and some states, return (set, when its transaction began) of each change to
    one of those states: the time of the set's previous set_state line plus the duration this one gives."""
    last: dict[str, float] = {}
    out = []
    for e in log:
        if e.get("event") != "set_state":
            continue
        at = dt.datetime.fromisoformat(e["timestamp"]).timestamp()
        if e.get("state") in states and e["set"] in last:
            out.append((e["set"], last[e["set"]] + e["duration_ms"] / 1000))
        last[e["set"]] = at
    return out
