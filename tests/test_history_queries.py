"""A year of history (issue 29, item 3): what a person runs and what a relay does at start-up reads the journal
through indexes, never by scanning every set, answer or history line (EXPLAIN QUERY PLAN of every statement
they send), and `status` finds a set by its ticket and says how many sets it does not show."""

from __future__ import annotations

import io
import re
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import generate_latest

from onss_relay.commands.requeue import requeue
from onss_relay.commands.status import set_detail, status_json, status_table
from onss_relay.config import Config, PollConfig
from onss_relay.health import HealthSnapshot
from onss_relay.journal import State, open_journal, open_journal_at
from onss_relay.metrics import RelayCollector, registry_for
from onss_relay.pipeline import Relay
from onss_relay.spool import Spool
from onss_relay.views.overview import overview
from onss_relay.views.sources import Sources
from tests.conftest import fi_name
from tests.helpers import run_cli

PATH = (State.QUEUED, State.SIGNED, State.UPLOADING, State.GO_SENDING, State.SENT, State.ACKNOWLEDGED)
FULL_SCAN = re.compile(r"\bSCAN (sets|history|responses|set_keys)\b(?! USING)")


def history(cfg: Config, n: int) -> None:
    """Given a configuration, record n answered sets, each with a ticket."""
    journal = open_journal(cfg)
    try:
        for i in range(1, n + 1):
            go = "GO." + fi_name(i, date="20250101")[3:-2]
            journal.add_set(go, "T", [fi_name(i, date="20250101")])
            for state in PATH[1:]:
                journal.transition(go, state, ticket=f"0TICKET{i:06d}" if state == State.ACKNOWLEDGED else None)
            journal.add_keys(go, [("ticket", f"0TICKET{i:06d}")])
            journal.transition(go, State.NOTIFIED)
    finally:
        journal.close()


@pytest.fixture
def statements(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[Path, str]]]:
    """Every SQL statement sent to a journal by this process from now on, with the database it went to."""
    sent: list[tuple[Path, str]] = []
    connect = sqlite3.connect

    def traced(path: object, *args: object, **kwargs: object) -> sqlite3.Connection:
        db = connect(path, *args, **kwargs)  # type: ignore[arg-type]
        where = Path(str(path).removeprefix("file:").split("?")[0])
        db.set_trace_callback(lambda sql: sent.append((where, sql)))
        return db

    monkeypatch.setattr(sqlite3, "connect", traced)
    yield sent


def full_scans(sent: list[tuple[Path, str]]) -> list[str]:
    """Given statements, return each read whose plan scans a whole table of the journal, with that plan."""
    out = []
    for where, sql in sent:
        if not sql.lstrip().upper().startswith(("SELECT", "WITH")) or where.name != "journal.db":
            continue
        db = sqlite3.connect(f"file:{where}?mode=ro", uri=True)
        try:
            plan = " | ".join(r[3] for r in db.execute(f"EXPLAIN QUERY PLAN {sql}"))
        finally:
            db.close()
        if FULL_SCAN.search(plan):
            out.append(f"{plan}  <=  {sql[:160]}")
    return out


def test_commands_and_start_up_never_scan_the_history(cfg: Config, statements: list[tuple[Path, str]]) -> None:
    history(cfg, 60)
    journal = open_journal_at(cfg.paths.journal_path, readonly=True)
    try:
        table = status_table(journal, limit=10)
        assert "the newest 10 of 60 sets" in table
        assert set_detail(journal, fi_name(7, date="20250101")) is not None
        assert (set_detail(journal, "0TICKET000042") or "").startswith("set:         GO.DIMN.")
        status_json(journal, limit=10)
    finally:
        journal.close()
    relay = Relay(cfg)  # a start-up: recovery, results, archive look-ups
    try:
        relay.uploader.upload_pending()
        (relay.spool.outbox / fi_name(99)).write_bytes(b"<Dimona/>")  # a claim looks for the sequence's use
        (relay.spool.outbox / fi_name(98, sender="654321")).write_bytes(b"<Dimona/>")  # quarantined
        assert relay.claim() == ["GO." + fi_name(99)[3:-2]]
        relay.warn_overdue()
        relay.results.catch_up()
    finally:
        relay.close()
    assert requeue(cfg, fi_name(98, sender="654321"), io.StringIO()) == 0
    assert statements, "no statement traced"
    assert full_scans(statements) == []


def test_status_finds_a_set_by_its_ticket(cfg: Config) -> None:
    history(cfg, 3)
    Spool(cfg.paths).create()
    r = run_cli("status", "0TICKET000002", "--config", str(cfg.source))
    assert r.returncode == 0 and "GO." + fi_name(2, date="20250101")[3:-2] in r.stdout, r.stderr


UNLINKED, DAMAGED = 5_000, 10


def unlinked_answers(cfg: Config) -> None:
    """Given a configuration, record UNLINKED answers linked to no set, DAMAGED of them malformed, the newest
    last (a year of another application's notifications mirrored from the shared folders)."""
    journal = open_journal(cfg)
    try:
        journal.add_responses("OUT", [(f"ANSWER.{i:05d}", 100, f"inbox/OUT/ANSWER.{i:05d}") for i in range(UNLINKED)])
    finally:
        journal.close()
    db = sqlite3.connect(cfg.paths.journal_path)
    with db:
        db.execute("UPDATE responses SET kind = 'notification', at = CAST(substr(name, 8) AS REAL)")
        db.execute(f"UPDATE responses SET kind = 'malformed', detail = 'not XML' WHERE at < {DAMAGED}")
    db.close()


def test_status_counts_answers_linked_to_no_set_and_lists_the_newest(
    cfg: Config, statements: list[tuple[Path, str]]
) -> None:
    """5,000 answers linked to no set: `status`, `status --json`, /metrics and the page count them in SQL (no
    full scan) and list only the newest, saying how many more."""
    unlinked_answers(cfg)
    Spool(cfg.paths).create()
    statements.clear()
    journal = open_journal_at(cfg.paths.journal_path, readonly=True)
    try:
        table = status_table(journal, limit=10)
        doc = status_json(journal, limit=10)
        metrics = generate_latest(
            registry_for(RelayCollector(journal, lambda: HealthSnapshot(True, "ok", ()), lambda: 30))
        )
        page = overview(
            Sources(journal, Spool(cfg.paths), PollConfig, lambda: HealthSnapshot(True, "ok", ()), lambda: 30)
        )
    finally:
        journal.close()
    others = UNLINKED - DAMAGED
    assert f"answers that match no set we sent ({others})" in table and f"… and {others - 10} more" in table
    assert f"answers that could not be read ({DAMAGED}), kept" in table
    assert len(table.splitlines()) < 40 and f"OUT/ANSWER.{UNLINKED - 1:05d}" in table  # the newest shown
    assert doc["unlinked_response_count"] == UNLINKED and len(doc["unlinked_responses"]) == 10
    assert doc["unlinked_responses"][-1]["name"] == f"ANSWER.{UNLINKED - 1:05d}"
    assert f"onss_relay_unlinked_responses {UNLINKED}.0" in metrics.decode()
    assert page.unlinked_count == UNLINKED and len(page.unlinked) == 50
    assert any("GROUP BY kind" in sql for _, sql in statements)  # counted by the database
    assert full_scans(statements) == []
