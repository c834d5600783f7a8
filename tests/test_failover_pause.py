"""Review of issue 25, on the real PostgreSQL and the real sshd: a relay paused (SIGSTOP) inside a journal
transaction, idle or inside a statement, no longer blocks the standby's take-over (a standby blocked by anything
else says so once), a lease that ended is never renewed, a command waiting for the writers' lock gives up in one
sentence, and the stages of a relay that lost its lease stop at once."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from onss_relay.config import Duration, JournalConfig
from onss_relay.journal.postgres_lease import PostgresLease
from onss_relay.journal.postgres_schema import WRITER_LOCK
from onss_relay.leadership import TermStop
from tests.fixtures.sshd import SshServer
from tests.helpers import run_cli, wait_log, wait_until
from tests.test_failover import _pair, pg_config  # noqa: F401  (the fixture)

SENDER = "123456"

PAUSED_IN_TRANSACTION = """
import os, signal, sys
from onss_relay.config import Duration, JournalConfig
from onss_relay.journal.postgres import PostgresJournal
journal = PostgresJournal(JournalConfig(url=sys.argv[1], lease=Duration(3)), "123456", epoch=int(sys.argv[2]))
with journal.atomic():  # the writers' lock is taken, the fence passed: a relay's write about to be made
    print("in transaction", flush=True)
    os.kill(os.getpid(), signal.SIGSTOP)
"""

PAUSED_INSIDE_A_STATEMENT = """
import os, signal, sys
from onss_relay.config import Duration, JournalConfig
from onss_relay.journal.postgres import PostgresJournal
journal = PostgresJournal(JournalConfig(url=sys.argv[1], lease=Duration(3)), "123456", epoch=int(sys.argv[2]))
with journal.atomic():  # the writers' lock taken, the fence passed: the leader's write under way
    pg = journal._conn.pgconn
    if sys.argv[3] == "before_its_sync":  # a statement sent, not yet its Sync: the shape seen in the full suite
        pg.enter_pipeline_mode()
        pg.send_query_params(b"SELECT count(*) FROM sets", None)
    else:  # a result larger than the sockets' buffers, unread: the server blocks sending it
        pg.send_query(b"SELECT repeat('x', 1000) FROM generate_series(1, 100000)")
    pg.flush()
    print("paused", flush=True)
    os.kill(os.getpid(), signal.SIGSTOP)
"""


def _active_session(url: str, name: str) -> tuple[int, str] | None:
    """The pid and wait event of the session named ``name`` inside a statement, if there is one."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT pid, wait_event FROM pg_stat_activity WHERE application_name = %s AND state = 'active'", (name,)
        ).fetchone()
    return (int(row[0]), str(row[1])) if row else None


def _url(config: Path) -> str:
    return config.read_text().split('url = "', 1)[1].split('"', 1)[0]


def _epoch(url: str) -> str:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute("SELECT epoch FROM leadership").fetchone()
    assert row is not None
    return str(row[0])


def _idle_in_transaction(url: str) -> int:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
            " AND state LIKE 'idle in transaction%'"
        ).fetchone()
    return int(row[0]) if row else 0


@pytest.mark.slow
@pytest.mark.parametrize("pause", ["idle_in_transaction", "before_its_sync"])
def test_a_leader_paused_inside_a_transaction_is_taken_over_within_a_lease(
    sftp_dir: Path,
    pg_config: Path,  # noqa: F811
    sshd: SshServer,
    pause: str,
) -> None:
    """The reviewer's stopintx.sh: the active relay paused while its journal connection holds the writers' lock
    in an open transaction, idle (the server ends it after one lease) or inside a statement (the full suite's
    hang: the server never ends it, the standby does). The standby takes over, and the old relay, resumed,
    steps down."""
    url = _url(pg_config)
    active, standby = _pair(sftp_dir, pg_config)
    assert active.proc is not None
    epoch = _epoch(url)
    script, said = (
        (PAUSED_IN_TRANSACTION, b"in transaction\n")
        if pause == "idle_in_transaction"
        else (PAUSED_INSIDE_A_STATEMENT, b"paused\n")
    )
    paused = subprocess.Popen(
        [sys.executable, "-c", script, url, epoch, pause], stdout=subprocess.PIPE, env=os.environ.copy()
    )
    try:
        assert paused.stdout is not None and paused.stdout.readline() == said
        if pause == "idle_in_transaction":
            assert wait_until(lambda: _idle_in_transaction(url) > 0, 10)
        else:
            assert wait_until(lambda: _active_session(url, f"onss-relay {SENDER} epoch {epoch}") is not None, 10)
        os.kill(active.proc.pid, signal.SIGSTOP)
        assert wait_log(sftp_dir / "b.log", "taking_over", timeout=15), (sftp_dir / "b.log").read_text()[-2000:]
        os.kill(active.proc.pid, signal.SIGCONT)
        assert wait_log(sftp_dir / "a.log", "standby_again", timeout=15), (sftp_dir / "a.log").read_text()[-2000:]
    finally:
        os.kill(active.proc.pid, signal.SIGCONT)
        paused.kill()
        paused.wait()
        assert active.stop(30) == 0
        assert standby.stop(30) == 0


@pytest.mark.slow
def test_during_a_postgresql_outage_status_says_the_relays_wait_for_it(
    sftp_dir: Path,
    pg_config: Path,  # noqa: F811
    sshd: SshServer,
    pg_server: Any,
) -> None:
    """Both relays run and wait for the database: `status --health` said "not running: the last daemon stopped"
    (the leader's report on stepping down), and the standby logged nothing when the database went away."""
    active, standby = _pair(sftp_dir, pg_config)

    def health() -> str:
        r = run_cli("status", "--health", "--config", str(pg_config))
        return r.stdout + r.stderr

    try:
        pg_server.stop()
        try:
            assert wait_log(sftp_dir / "b.log", "journal_database_unreachable", timeout=30)
            assert wait_log(sftp_dir / "a.log", "standby_again", timeout=30)
            assert wait_until(lambda: "waiting for the journal's database" in health(), 30, 1.0), health()
            said = health()
            assert "not running" not in said and f"{socket.gethostname()} pid" in said, said
        finally:
            pg_server.start()
        log_b = (sftp_dir / "b.log").read_text()
        assert log_b.count("journal_database_unreachable") == 1, log_b[-3000:]
    finally:
        assert active.stop(30) == 0
        assert standby.stop(30) == 0


def test_a_standby_shows_no_old_epoch_once_the_database_is_gone(settings: JournalConfig, pg_server: Any) -> None:
    """A standby's /metrics showed the epoch it last read after PostgreSQL had stopped: it knows none then."""
    leader, waiting = PostgresLease(settings, SENDER), PostgresLease(settings, SENDER)
    waiting.me = "the other machine pid 1"  # one process plays both relays
    try:
        assert leader.try_acquire() and not waiting.try_acquire()
        assert waiting.describe()["leader_epoch"] == 1
        pg_server.stop()
        try:
            assert not waiting.try_acquire() and waiting.unreachable
            assert waiting.describe()["leader_epoch"] is None
        finally:
            pg_server.start()
    finally:
        leader.release()
        waiting.release()


@pytest.fixture
def settings(pg_server: Any) -> JournalConfig:
    return JournalConfig(url=pg_server.new_database(), lease=Duration(3))


def test_a_lease_that_ended_is_not_renewed(settings: JournalConfig) -> None:
    """A relay paused past its lease must not renew it when it runs again (a standby may be taking it over)."""
    import psycopg

    lease = PostgresLease(settings, SENDER)
    try:
        assert lease.try_acquire()
        with psycopg.connect(settings.url, autocommit=True) as conn:  # the lease ran out while it was paused
            conn.execute("UPDATE leadership SET expires_at = now() - interval '1 second'")
        assert wait_until(lambda: lease.lost() is not None, 5), "the ended lease was renewed"
    finally:
        lease.release()


def test_the_term_stops_the_moment_the_lease_is_lost(settings: JournalConfig) -> None:
    """The stages' stop event reads the leadership: nobody needs to set it for every is_set() to say stop."""
    import psycopg

    lease = PostgresLease(settings, SENDER)
    stop = TermStop(lease)
    try:
        assert lease.try_acquire()
        assert not stop.is_set()
        with psycopg.connect(settings.url, autocommit=True) as conn:  # a standby took over
            conn.execute("UPDATE leadership SET epoch = epoch + 1, holder = 'other pid 1'")
        assert wait_until(stop.is_set, 5)
    finally:
        lease.release()


def test_submit_gives_up_in_one_sentence_when_the_journal_stays_locked(
    relay_dir: Path, settings: JournalConfig, tmp_path: Path
) -> None:
    """A session holding the writers' lock in an open transaction (a paused process): `submit` fails after a
    bound, saying so, instead of hanging."""
    import psycopg

    config = relay_dir / "config.toml"
    config.write_text(f'{config.read_text()}\n[journal]\nurl = "{settings.url}"\nlease = "3s"\n')
    decl = tmp_path / "decl.xml"
    decl.write_bytes(b"<Dimona/>")
    assert run_cli("check", "--config", str(config)).returncode in (0, 1)  # the journal's schema is made
    with psycopg.connect(settings.url, autocommit=True) as holder:
        holder.execute("BEGIN")
        holder.execute(f"SELECT pg_advisory_xact_lock({WRITER_LOCK})")
        r = run_cli("submit", str(decl), "--app", "DIMN", "--env", "T", "--config", str(config), timeout=60)
        holder.execute("ROLLBACK")
    assert r.returncode != 0 and "locked by another process" in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr


@pytest.mark.parametrize(("where", "waiting_on"), [("before_its_sync", "ClientRead"), ("mid_result", "ClientWrite")])
def test_a_standby_ends_the_sessions_of_a_leader_that_lapsed_inside_a_statement(
    settings: JournalConfig, where: str, waiting_on: str
) -> None:
    """The full suite's hang (test_failover's paused leader, twice in six runs): the leader stopped inside a
    statement, its backend `active` (waiting for the rest of the statement, or to send a large result), which
    idle_in_transaction_session_timeout never ends: it held the writers' lock for ever and the standby's take
    failed on it every second, silently. Once the lease has ended, the standby ends that epoch's sessions,
    says so once with their pids, and takes over; while the lease is live it ends nothing."""
    from structlog.testing import capture_logs

    leader, standby = PostgresLease(settings, SENDER), PostgresLease(settings, SENDER)
    standby.me = "the other machine pid 1"  # one process plays both relays; the paused one is a child
    paused: subprocess.Popen[bytes] | None = None
    try:
        assert leader.try_acquire() and leader.epoch == 1
        paused = subprocess.Popen(
            [sys.executable, "-c", PAUSED_INSIDE_A_STATEMENT, settings.url, "1", where], stdout=subprocess.PIPE
        )
        assert paused.stdout is not None and paused.stdout.readline() == b"paused\n"
        name = "onss-relay 123456 epoch 1"
        assert wait_until(lambda: (_active_session(settings.url, name) or (0, ""))[1] == waiting_on, 10)
        session = _active_session(settings.url, name)
        assert session is not None
        assert not standby.try_acquire() and _active_session(settings.url, name) == session  # a live lease
        with capture_logs() as logs:
            leader.release()  # its lease ends (the leader itself is the paused child's stand-in)
            assert wait_until(standby.try_acquire, 20, 0.5), [e["event"] for e in logs]
        assert standby.epoch == 2 and _active_session(settings.url, name) is None
        ended = [e for e in logs if e["event"] == "lapsed_leader_sessions_ended"]
        assert [(e["pids"], e["epoch"]) for e in ended] == [([session[0]], 1)], logs
    finally:
        if paused is not None:
            paused.kill()
            paused.wait()
        leader.release()
        standby.release()


def test_a_standby_blocked_by_a_session_it_may_not_end_says_so_once(settings: JournalConfig) -> None:
    """A session holding the writers' lock that is not the lapsed leader's (a command's, here an open
    transaction of another program) is never ended: the standby says once that it is blocked and by whom, not
    at every try, and once more when it is free."""
    import psycopg
    from structlog.testing import capture_logs

    leader, standby = PostgresLease(settings, SENDER), PostgresLease(settings, SENDER)
    standby.me = "the other machine pid 1"
    try:
        assert leader.try_acquire()
        leader.release()
        with psycopg.connect(settings.url, autocommit=True) as holder, capture_logs() as logs:
            holder.execute("BEGIN")
            holder.execute(f"SELECT pg_advisory_xact_lock({WRITER_LOCK})")
            pid = holder.execute("SELECT pg_backend_pid()").fetchone()
            assert not any(standby.try_acquire() for _ in range(3))
            holder.execute("ROLLBACK")
            assert standby.try_acquire()
        events = [e["event"] for e in logs]
        assert events == ["standby_blocked", "standby_unblocked", "leadership_taken"], logs
        assert pid is not None and f"pid {pid[0]} (" in logs[0]["holders"], logs[0]
    finally:
        standby.release()


def test_a_standby_not_allowed_to_end_a_lapsed_leaders_sessions_says_why(settings: JournalConfig) -> None:
    """Relays logged in as different database users: the standby may not end the lapsed leader's sessions
    (PostgreSQL refuses it), so it stays blocked; its one standby_blocked line says why and what holds the lock."""
    import psycopg
    from structlog.testing import capture_logs

    leader = PostgresLease(settings, SENDER)
    paused: subprocess.Popen[bytes] | None = None
    role = f"standby_{os.getpid()}"
    try:
        assert leader.try_acquire()
        with psycopg.connect(settings.url, autocommit=True) as conn:  # a user of its own, not a superuser
            conn.execute(f"CREATE ROLE {role} LOGIN")
            conn.execute(f"GRANT ALL ON SCHEMA public TO {role}; GRANT ALL ON ALL TABLES IN SCHEMA public TO {role}")
        standby = PostgresLease(
            JournalConfig(url=settings.url.replace("postgres@", f"{role}@"), lease=Duration(3)), SENDER
        )
        standby.me = "the other machine pid 1"
        paused = subprocess.Popen(
            [sys.executable, "-c", PAUSED_INSIDE_A_STATEMENT, settings.url, "1", "before_its_sync"],
            stdout=subprocess.PIPE,
        )
        assert paused.stdout is not None and paused.stdout.readline() == b"paused\n"
        assert wait_until(lambda: _active_session(settings.url, "onss-relay 123456 epoch 1") is not None, 10)
        with capture_logs() as logs:
            leader.release()
            assert not any(standby.try_acquire() for _ in range(3))
        assert [e["event"] for e in logs] == ["standby_blocked"], logs
        assert "could not be ended: " in logs[0]["detail"] and "to terminate" in logs[0]["detail"], logs[0]
        assert "onss-relay 123456 epoch 1" in logs[0]["holders"], logs[0]
        standby.release()
    finally:
        if paused is not None:
            paused.kill()
            paused.wait()
        leader.release()
