"""What only the PostgreSQL journal has, on a real server (the pg_server fixture): its schema version, the
leadership lease of one active relay, fencing by epoch, and a server restart under an open journal."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from onss_relay.config import Duration, JournalConfig
from onss_relay.errors import ConfigError, Fenced, JournalError, JournalUnreachable
from onss_relay.journal import DataChange, State
from onss_relay.journal.postgres import PostgresJournal
from onss_relay.journal.postgres_lease import PostgresLease
from onss_relay.journal.postgres_schema import SCHEMA_VERSION
from tests.fixtures.postgres import RELAY_PASSWORD

SENDER = "123456"
GO = "GO.DIMN.123456.20260101.00001.T.1"
FI = "FI.DIMN.123456.20260101.00001.T.1.1"


@pytest.fixture
def settings(pg_server: Any) -> JournalConfig:
    return JournalConfig(url=pg_server.new_database(), lease=Duration(3))


def _sql(cfg: JournalConfig, statement: str) -> None:
    import psycopg

    with psycopg.connect(cfg.url, autocommit=True) as conn:
        conn.execute(statement)


def test_the_schema_carries_its_version_and_a_newer_one_is_refused(settings: JournalConfig) -> None:
    PostgresJournal(settings, SENDER).close()
    _sql(settings, f"UPDATE journal_meta SET value = '{SCHEMA_VERSION + 1}' WHERE key = 'schema_version'")
    with pytest.raises(JournalError, match="newer than this onss-relay"):
        PostgresJournal(settings, SENDER)


def test_a_schema_1_journal_gets_the_worker_index_filled_when_opened(settings: JournalConfig) -> None:
    """A PostgreSQL journal of issue 25 (schema 1: no set_workers) opened by this relay gets the table and the
    status page's indexes, filled from the notifications it recorded, so a search by INSS finds history too."""
    import psycopg

    from onss_relay.journal import AcrfRecord, NotificationRecord, WorkerResult

    journal = PostgresJournal(settings, SENDER)
    journal.add_set(GO, "T", [FI])
    for state in (State.SIGNED, State.UPLOADING, State.GO_SENDING, State.SENT):
        journal.transition(GO, state)
    journal.transition(
        GO, State.ACKNOWLEDGED, ticket="0T1", data=DataChange(acrf=AcrfRecord("1", True, "0T1", "in/ACRF", ()))
    )
    worker = WorkerResult("85073003328", "1", "accepted")
    notification = NotificationRecord("1", True, None, None, "FO.NOTI.1", workers=(worker,))
    journal.transition(GO, State.NOTIFIED, data=DataChange(notifications=(notification,)))
    journal.close()
    _sql(settings, "DROP TABLE set_workers; DROP INDEX sets_day, sets_waiting, sets_outcome")
    _sql(settings, "UPDATE journal_meta SET value = '1' WHERE key = 'schema_version'")
    journal = PostgresJournal(settings, SENDER)
    try:
        assert [(r.go_name, o) for r, o in journal.sets_by_worker("85073003328")] == [(GO, "accepted")]
    finally:
        journal.close()
    with psycopg.connect(settings.url, autocommit=True) as conn:
        indexes = {r[0] for r in conn.execute("SELECT indexname FROM pg_indexes WHERE tablename = 'sets'")}
        version = conn.execute("SELECT value FROM journal_meta WHERE key = 'schema_version'").fetchone()
    assert {"sets_day", "sets_waiting", "sets_outcome"} <= indexes and version == (str(SCHEMA_VERSION),)


def test_one_leader_at_a_time_and_a_standby_takes_over_when_it_lets_go(settings: JournalConfig) -> None:
    a, b = PostgresLease(settings, SENDER), PostgresLease(settings, SENDER)
    b.me = "other-host pid 1"
    try:
        assert a.try_acquire() and a.epoch == 1
        assert not b.try_acquire() and b.holder() == a.me
        a.release()
        assert b.try_acquire() and b.epoch == 2
    finally:
        a.release()
        b.release()


def test_a_relay_of_the_same_host_name_and_pid_does_not_take_a_live_lease(settings: JournalConfig) -> None:
    """Audit of issue 25: the lease's holder is "HOST pid N"; two containers run the relay as pid 1, and with the
    host's network (or a `hostname:` in compose, or two VMs cloned with one name) they share the host name, so
    the second took the first's live lease as its own: two leaders, each new take fencing the other."""
    a, b = PostgresLease(settings, SENDER), PostgresLease(settings, SENDER)
    assert a.me == b.me  # one process here: the same name, as pid 1 of two containers would have
    try:
        assert a.try_acquire() and a.epoch == 1
        assert not b.try_acquire() and b.epoch is None and b.holder() == a.me
        _sql(settings, "UPDATE leadership SET expires_at = now() + interval '1 minute'")  # a live lease, not renewed
        a._stop.set()  # its renewal stopped: it still holds the lease, its connection open
        assert not b.try_acquire()
        a.release()
        assert b.try_acquire() and b.epoch == 2
    finally:
        a.release()
        b.release()


def test_an_old_leaders_writes_are_refused_once_a_newer_one_exists(settings: JournalConfig) -> None:
    old, new = PostgresLease(settings, SENDER), PostgresLease(settings, SENDER)
    new.me = "other-host pid 1"
    try:
        assert old.try_acquire()
        journal = PostgresJournal(settings, SENDER, epoch=old.epoch)
        journal.add_set(GO, "T", [FI])
        _sql(settings, "UPDATE leadership SET expires_at = now() - interval '1 second'")  # its lease ran out
        assert new.try_acquire() and new.epoch == 2
        with pytest.raises(Fenced, match="epoch 2"):
            journal.transition(GO, State.SIGNED)
        assert journal.get_set(GO).state == State.QUEUED  # type: ignore[union-attr]  # reads still work
        successor = PostgresJournal(settings, SENDER, epoch=new.epoch)
        successor.transition(GO, State.SIGNED)
        journal.close()
        successor.close()
    finally:
        old.release()
        new.release()


def test_a_leader_that_cannot_renew_in_time_sends_no_go(settings: JournalConfig) -> None:
    lease = PostgresLease(settings, SENDER)
    try:
        assert lease.try_acquire()
        lease.check()
        with lease._io:  # the renewal cannot run, as in a relay paused by SIGSTOP or cut off from the database
            done = threading.Event()
            done.wait(settings.lease * 0.7)
            assert lease.lost() is not None
            with pytest.raises(Fenced, match="no GO sent"):
                lease.check()
    finally:
        lease.release()


def test_the_journal_waits_out_a_server_restart_and_loses_nothing(pg_server: Any, settings: JournalConfig) -> None:
    journal = PostgresJournal(settings, SENDER)
    journal.add_set(GO, "T", [FI])
    pg_server.restart()
    deadline = time.monotonic() + 30
    while True:  # the stages retry JournalUnreachable: the first statement on the dead connection says so
        try:
            journal.transition(GO, State.SIGNED)
            break
        except JournalUnreachable:
            assert time.monotonic() < deadline
            time.sleep(0.2)
    assert [h[1] for h in journal.history(GO)] == ["queued", "signed"]
    journal.close()


def test_the_password_comes_from_its_file_and_a_wrong_one_names_that_file(pg_server: Any, tmp_path: Any) -> None:
    url = pg_server.new_database().replace("postgres@", "relay@")
    with pytest.raises(ConfigError, match="journal.password_file"):
        PostgresJournal(JournalConfig(url=url), SENDER)
    secret = tmp_path / "pw"
    secret.write_text(f"{RELAY_PASSWORD}\n")
    journal = PostgresJournal(JournalConfig(url=url, password_file=secret), SENDER)
    journal.add_set(GO, "T", [FI])
    assert RELAY_PASSWORD not in str(journal.path)
    journal.close()
