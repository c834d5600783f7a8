"""The status page (issue 26): hostile values shown as text, every worker of a notification found by INSS,
the route table and its guard (tests/test_status_page_browser.py runs it in a real browser)."""

from __future__ import annotations

import base64
import io
from pathlib import Path

from onss_relay.config import Config, MetricsConfig, PollConfig
from onss_relay.journal import (
    AcrfRecord,
    AnomalyRecord,
    CodeMeaning,
    DataChange,
    Journal,
    NotificationRecord,
    State,
    WorkerResult,
    open_journal_at,
)
from onss_relay.metrics import HealthSnapshot, StageFigures
from onss_relay.responses.notification import DETAILED
from onss_relay.spool import Spool
from onss_relay.status_page.auth import Guard, guard_for
from onss_relay.status_page.routes import routes
from onss_relay.views.sources import Sources
from onss_relay.web import Request, Response, find_route
from tests.conftest import SENDER, TODAY

HOSTILE = '<script>alert("x")</script><img src=x onerror=alert(1)>'
GO = f"GO.DIMN.{SENDER}.{TODAY}.00007.R.1"


def sources(journal: Journal, spool: Spool) -> Sources:
    snap = HealthSnapshot(False, f"stage poll failing: {HOSTILE}", (StageFigures("poll", 2, None),))
    return Sources(journal, spool, PollConfig, lambda: snap, lambda: 12)


def get(src: Sources, path: str, query: dict[str, str] | None = None) -> Response:
    found = find_route(routes(src), path)
    assert found is not None, path
    route, rest = found
    return route.answer(Request(path, rest, query or {}))


def notified_set(journal: Journal, go: str, notification: NotificationRecord, ticket: str = "0TICKET1") -> None:
    journal.add_set(go, "R", [go.replace("GO.", "FI.", 1) + ".1"])
    for state in (State.SIGNED, State.UPLOADING, State.GO_SENDING, State.SENT):
        journal.transition(go, state)
    acrf = AcrfRecord("1", True, ticket, "inbox/OUT/ACRF", (CodeMeaning("ACRF-000", HOSTILE),))
    journal.transition(go, State.ACKNOWLEDGED, ticket=ticket, data=DataChange(acrf=acrf))
    journal.transition(go, State.NOTIFIED, detail=HOSTILE, data=DataChange(notifications=(notification,)))


def test_hostile_names_anomalies_and_reasons_are_shown_as_text(cfg: Config) -> None:
    """A hostile value in an anomaly, an ACRF code's meaning, a history line, a quarantine reason and a file
    name reaches the page as text: no element of it is markup."""
    spool = Spool(cfg.paths)
    journal = open_journal_at(cfg.paths.journal_path)
    anomaly = AnomalyRecord("90373-333", "B", HOSTILE, True, HOSTILE, HOSTILE, HOSTILE, HOSTILE, HOSTILE)
    worker = WorkerResult("90042125519", "0", "refused", (anomaly,), 1)
    notification = NotificationRecord("0", False, "0HANDLED", "3", HOSTILE, workers=(worker,), summary=HOSTILE)
    notified_set(journal, GO, notification)
    spool.failed.mkdir(parents=True, exist_ok=True)
    bad = spool.outbox / f"FI{HOSTILE}.xml"
    bad.parent.mkdir(parents=True, exist_ok=True)
    bad.write_bytes(b"x")
    spool.quarantine([bad], HOSTILE, HOSTILE)
    src = sources(journal, spool)
    pages = {
        "overview": get(src, "/"),
        "set": get(src, f"/set/{GO}"),
        "search": get(src, "/search", {"q": HOSTILE}),
    }
    for name, page in pages.items():
        html = page.body.decode()
        assert page.status == 200, (name, html[:500])
        assert "<script" not in html and "<img" not in html, name
        assert "&lt;script&gt;" in html, name  # shown, as text
    assert GO in pages["overview"].body.decode() and "90042125519" in pages["set"].body.decode()


def test_every_worker_of_a_notification_is_found_by_inss(cfg: Config, relay_dir: Path) -> None:
    """A Dimona notification of more Forms than a record keeps in detail, mirrored and linked by the poller:
    the last worker, not kept in detail, is still found by its INSS, with its outcome."""
    from onss_relay.pipeline import Relay
    from tests.test_real_answers import acrf, put, sent_set

    go, fi = f"GO.DIMN.{SENDER}.{TODAY}.00008.T.1", f"FI.DIMN.{SENDER}.{TODAY}.00008.T.1.1"
    forms = DETAILED + 20
    body = io.StringIO()
    body.write('<?xml version="1.0" encoding="UTF-8"?>\n<NOTIFICATION>')
    for w in range(forms):
        body.write(
            f"<Form><Identification>NOTI001</Identification><FileReference><FileName>{go}</FileName></FileReference>"
            f"<NaturalPerson><INSS>{w:011d}</INSS></NaturalPerson><HandlingResult><ResultCode>1</ResultCode>"
            "</HandlingResult></Form>\n"
        )
    body.write("</NOTIFICATION>\n")
    relay = Relay(cfg)
    try:
        sent_set(relay, go, fi)
        out = relay_dir / "remote" / "OUTTEST"
        put(out, f"FO.ACRF.999999.{TODAY}.W0001.T", acrf(go, ticket="0WORKERS0001"))
        put(out, f"FO.NOTI.999999.{TODAY}.W0002.T", body.getvalue().encode())
        relay.poll_once()
        row = relay.journal.get_set(go)
        assert row is not None and row.state == State.NOTIFIED
        assert len(row.data.notifications[0].workers) == DETAILED  # the last Forms are not kept in detail
        src = sources(relay.journal, relay.spool)
        last = f"{forms - 1:011d}"
        html = get(src, "/search", {"q": last}).body.decode()
        assert go in html and "accepted" in html
    finally:
        relay.close()


def test_a_journal_of_schema_2_gets_its_recorded_workers_indexed(cfg: Config) -> None:
    """Upgrading: the workers an older journal's notification records kept are found by INSS."""
    import sqlite3

    journal = open_journal_at(cfg.paths.journal_path)
    worker = WorkerResult("85073003328", "1", "accepted")
    notified_set(journal, GO, NotificationRecord("1", True, None, None, "f", workers=(worker,)))
    journal.close()
    with sqlite3.connect(cfg.paths.journal_path) as db:  # as onss-relay with schema 2 left it
        db.execute("DELETE FROM set_workers")
        db.execute("PRAGMA user_version=2")
    db.close()
    journal = open_journal_at(cfg.paths.journal_path)
    try:
        assert [(r.go_name, outcome) for r, outcome in journal.sets_by_worker("85073003328")] == [(GO, "accepted")]
    finally:
        journal.close()


def test_a_guarded_route_refuses_without_the_secret_and_opens_with_it(tmp_path: Path) -> None:
    (tmp_path / "pw").write_text("s3cret-page\n")
    (tmp_path / "tok").write_text("tok-123\n")
    guard = guard_for(MetricsConfig("0.0.0.0:9464", tmp_path / "pw", "hr", tmp_path / "tok"))
    basic = "Basic " + base64.b64encode(b"hr:s3cret-page").decode()
    assert guard.allows(basic) and guard.allows("Bearer tok-123")
    wrong = "Basic " + base64.b64encode(b"hr:nope").decode()
    for header in (None, "", wrong, "Bearer tok-12", "Basic !!", "Bearer "):
        assert not guard.allows(header), header
    assert Guard("onss-relay", None, None).allows(None)  # loopback, nothing configured


def test_the_chart_counts_sets_per_utc_day_by_outcome(cfg: Config) -> None:
    """Sets created today and three days ago, one failed: one bar a day over 30, stacked by outcome."""
    import sqlite3
    import time

    from onss_relay.views.chart import daily_chart

    journal = open_journal_at(cfg.paths.journal_path)
    now = time.time()
    names = [f"GO.DIMN.{SENDER}.{TODAY}.{i:05d}.R.1" for i in range(1, 5)]
    for go in names:
        journal.add_set(go, "R", [go.replace("GO.", "FI.", 1) + ".1"])
    journal.close()
    with sqlite3.connect(cfg.paths.journal_path) as db:
        db.execute("UPDATE sets SET created_at = ? WHERE go_name IN (?, ?)", (now - 3 * 86400, *names[:2]))
        db.execute("UPDATE sets SET state = 'failed', outcome = NULL WHERE go_name = ?", (names[3],))
        db.execute("UPDATE sets SET outcome = 'refused' WHERE go_name = ?", (names[0],))
    db.close()
    journal = open_journal_at(cfg.paths.journal_path)
    try:
        chart = daily_chart(journal.daily_outcomes(30, now), 30, now)
    finally:
        journal.close()
    assert len(chart.bars) == 30 and chart.peak == 2
    by_day = {b.day: {s.outcome: s.count for s in b.segments} for b in chart.bars if b.total}
    three_days_ago = chart.bars[-4].day
    assert by_day == {
        three_days_ago: {"refused": 1, "pending": 1},
        chart.bars[-1].day: {"pending": 1, "quarantined": 1},
    }


def test_a_workers_dimona_refused_by_its_acrf_or_still_waiting_is_found_by_inss(cfg: Config, relay_dir: Path) -> None:
    """Found by audit26: the INSS index was fed by notifications only, so a worker's Dimona refused by its ACRF
    (no notification ever follows) or still waiting for its answers was "No set matches": the very Dimona the
    payroll office searches for. Each worker the FI declares is indexed at claim."""
    from onss_relay.simulator import Simulator
    from tests.conftest import fi_name
    from tests.helpers import run_cli

    outbox = relay_dir / "spool" / "outbox"
    outbox.mkdir(parents=True, exist_ok=True)
    refused, waiting = fi_name(41), fi_name(42)
    person = "<DimonaIn><NaturalPerson><INSS>{}</INSS></NaturalPerson></DimonaIn>"
    (outbox / refused).write_bytes(
        f"<Dimona>\r\n{person.format('86010100123')}<!-- SIMULATE-ACRF:REFUSE-FINAL -->\r\n</Dimona>\r\n".encode()
    )
    config = str(relay_dir / "config.toml")
    assert run_cli("send", "--once", "--config", config).returncode == 0
    Simulator(relay_dir / "remote", SENDER).process()
    assert run_cli("poll", "--once", "--config", config).returncode == 0
    (outbox / waiting).write_bytes(f"<Dimona>\r\n{person.format('92030300345')}\r\n</Dimona>\r\n".encode())
    assert run_cli("send", "--once", "--config", config).returncode == 0
    journal = open_journal_at(cfg.paths.journal_path)
    try:
        go_refused, go_waiting = ("GO" + fi[2:-2] for fi in (refused, waiting))
        row = journal.get_set(go_refused)
        assert row is not None and row.state == State.REFUSED
        src = sources(journal, Spool(cfg.paths))
        found = get(src, "/search", {"q": "860101-001.23"}).body.decode()
        assert go_refused in found and go_waiting not in found, found
        assert go_waiting in get(src, "/search", {"q": "92030300345"}).body.decode()
    finally:
        journal.close()


def test_the_overview_lists_answers_linked_to_no_set_with_hostile_names_as_text(cfg: Config) -> None:
    """Audit26: the overview's answers linked to no set had no test: one kept without a set is listed, its name and
    reason (from the server) shown as text, and the count says how many."""
    journal = open_journal_at(cfg.paths.journal_path)
    spool = Spool(cfg.paths)
    try:
        journal.add_responses(
            "OUTTEST", [(f"FO.{HOSTILE}", 10, "/inbox/x"), ("FO.NOTI.999999.20261130.A0001.T", 5, "/y")]
        )
        journal.link_response("OUTTEST", f"FO.{HOSTILE}", "malformed", None, detail=HOSTILE)
        journal.link_response("OUTTEST", "FO.NOTI.999999.20261130.A0001.T", "notification", None)
        html = get(sources(journal, spool), "/").body.decode()
        unlinked = html.split('<section id="unlinked">', 1)[1].split("</section>", 1)[0]
        assert "Answers linked to no set (2)" in unlinked and "FO.NOTI.999999.20261130.A0001.T" in unlinked
        assert "&lt;script&gt;" in unlinked and "<script" not in html
    finally:
        journal.close()


def test_a_search_for_a_worker_with_no_declaration_walks_no_name(cfg: Config) -> None:
    """Audit26: an INSS no set declares fell through to the search by part of a name, a walk of every set (0.75 s
    with 100,000 sets at load 14, /work/rev/26/search_perf.py): no name can hold 9 digits in a row or a dash."""
    journal = open_journal_at(cfg.paths.journal_path)
    try:
        notified_set(journal, GO, NotificationRecord("1", True, None, None, "f"))
        src = sources(journal, Spool(cfg.paths))
        every_name = journal.sets_named_like

        def walk(fragment: str, limit: int = 100) -> list[object]:
            assert fragment in ("DIMN", TODAY), f"walked every name for {fragment!r}"
            return every_name(fragment, limit)  # type: ignore[return-value]

        journal.sets_named_like = walk  # type: ignore[method-assign,assignment]
        for worker in ("85073003328", "85.07.30-033.28", "850730 033 28"):
            assert "No set matches" in get(src, "/search", {"q": worker}).body.decode()
        for part in ("DIMN", TODAY):  # part of a name is still searched
            assert GO in get(src, "/search", {"q": part}).body.decode()
    finally:
        journal.close()
