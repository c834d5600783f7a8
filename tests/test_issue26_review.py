"""What a hostile review of issue 26 reproduced (status page, hooks): each test fails on the code before its fix."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import time
from pathlib import Path
from xml.etree import ElementTree

import pytest
import structlog.testing

from onss_relay.config import Config, Duration, HooksConfig, PollConfig
from onss_relay.hooks import ResultHook
from onss_relay.journal import AcrfRecord, DataChange, Journal, SetData, SetRow, State, open_journal_at
from onss_relay.metrics import HealthSnapshot
from onss_relay.simulator import Simulator
from onss_relay.spool import Spool
from onss_relay.status_page.routes import routes
from onss_relay.views.overview import overview
from onss_relay.views.sources import Sources
from onss_relay.web import Request, find_route
from tests.conftest import SENDER, TODAY, fi_name
from tests.helpers import Daemon, run_cli, state_of, wait_log, wait_until

CIRCUIT_TESTS = 1120  # more than the hook (1000) and the overview (100) looked at


def acknowledged(journal: Journal, go: str, env: str) -> None:
    journal.add_set(go, env, [go.replace("GO.", "FI.", 1) + ".1"])
    for state in (State.SIGNED, State.UPLOADING, State.GO_SENDING, State.SENT):
        journal.transition(go, state)
    acrf = AcrfRecord("1", True, "0TICKET", "inbox/OUT/ACRF", ())
    journal.transition(go, State.ACKNOWLEDGED, ticket="0TICKET", data=DataChange(acrf=acrf))


def test_an_overdue_set_behind_many_old_circuit_tests_is_shown_and_told(cfg: Config, tmp_path: Path) -> None:
    """1,120 DmfA circuit tests acknowledged a month ago (never late) and one Dimona acknowledged 5 days ago
    without a notification: the overview lists the Dimona as overdue and the hook runs for it."""
    journal = open_journal_at(cfg.paths.journal_path)
    late = f"GO.DIMN.{SENDER}.{TODAY}.00001.R.1"
    circuit = f"GO.DMFA.{SENDER}.{TODAY}.00002.T.1"
    acknowledged(journal, late, "R")
    acknowledged(journal, circuit, "T")
    journal.close()
    now = time.time()
    with sqlite3.connect(cfg.paths.journal_path) as db:
        db.execute("CREATE TEMP TABLE one AS SELECT * FROM sets WHERE go_name = ?", (circuit,))
        for i in range(3, 3 + CIRCUIT_TESTS):
            db.execute("UPDATE one SET go_name = ?", (f"GO.DMFA.{SENDER}.{TODAY}.{i:05d}.T.1",))
            db.execute("INSERT INTO sets SELECT * FROM one")
        db.execute("UPDATE sets SET updated_at = ? WHERE go_name LIKE 'GO.DMFA.%'", (now - 30 * 86400,))
        db.execute("UPDATE sets SET updated_at = ? WHERE go_name = ?", (now - 5 * 86400, late))
    db.close()
    journal = open_journal_at(cfg.paths.journal_path)
    told = tmp_path / "told.txt"
    hook = tmp_path / "hook.sh"
    hook.write_text(f'#!/bin/sh\necho "$ONSS_RELAY_SET $ONSS_RELAY_EVENT" >> {told}\n')
    hook.chmod(0o755)
    try:
        snap = HealthSnapshot(True, "ok", ())
        page = overview(Sources(journal, Spool(cfg.paths), PollConfig, lambda: snap, lambda: 100), now)
        assert [line.go_name for line in page.overdue] == [late]
        result_hook = ResultHook(HooksConfig(str(hook)))
        result_hook.look_for_overdue(journal, PollConfig(), lambda row: tmp_path / f"{row.go_name}.json", now)
        assert wait_until(told.exists, 10)  # a stop ends what runs, runs nothing more (due for the next start)
        result_hook.stop()
    finally:
        journal.close()
    assert told.read_text().splitlines() == [f"{late} overdue"]


def test_a_hook_leaving_a_background_child_is_judged_by_its_own_exit(tmp_path: Path) -> None:
    """A hook that starts a background job and exits 3 at once: the relay reports exit 3 (not a timeout) and
    leaves the job running (its process group is stopped only at a real timeout)."""
    pid_file = tmp_path / "child.pid"
    hook = tmp_path / "hook.sh"
    hook.write_text(f"#!/bin/sh\nsleep 100 &\necho $! > {pid_file}\necho told\nexit 3\n")
    hook.chmod(0o755)
    go = f"GO.DIMN.{SENDER}.{TODAY}.00001.R.1"
    with structlog.testing.capture_logs() as logs:
        result_hook = ResultHook(HooksConfig(str(hook), Duration(3)))
        refused = SetRow(go, "R", State.REFUSED, [], 0.0, 0.0, "refused", None, SetData(), False)
        result_hook.result_written(refused, tmp_path / f"{go}.json")
        assert wait_until(lambda: any(e["event"].startswith("hook_") for e in logs), 10)  # it ran, then stop
        result_hook.stop()
    child = int(pid_file.read_text())
    try:
        events = [(e["event"], e.get("exit"), e.get("output")) for e in logs if e["event"].startswith("hook_")]
        assert events == [("hook_failed", 3, "told")]
        os.kill(child, 0)  # still running: not killed with the hook
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, signal.SIGKILL)


@pytest.mark.slow
def test_a_reload_applies_a_changed_hook(relay_dir: Path) -> None:
    """The daemon runs with one on_result; [hooks] is changed and SIGHUP sent: the reload says it applied
    hooks.on_result, and the next refused set runs the new command, not the old one."""
    config, log, calls = relay_dir / "config.toml", relay_dir / "daemon.log", relay_dir / "calls.txt"
    for name in ("old", "new"):
        hook = relay_dir / f"{name}.sh"
        hook.write_text(f'#!/bin/sh\necho "{name} $ONSS_RELAY_SET" >> {calls}\n')
        hook.chmod(0o755)
    text = config.read_text() + f'[hooks]\non_result = "{relay_dir / "old.sh"}"\n'
    config.write_text(text)
    daemon = Daemon(config, log)
    proc = daemon.start()
    try:
        config.write_text(text.replace("old.sh", "new.sh"))
        proc.send_signal(signal.SIGHUP)
        assert wait_log(log, '"reloaded"')
        line = next(json.loads(ln) for ln in log.read_text().splitlines() if '"reloaded"' in ln)
        assert line["applied"] == ["hooks.on_result"]
        fi = fi_name(41)
        (relay_dir / "spool" / "outbox" / fi).write_bytes(
            b"<Dimona>\r\n<!-- SIMULATE-ACRF:REFUSE-FINAL -->\r\n</Dimona>\r\n"
        )
        go = "GO" + fi[2:-2]

        def told() -> bool:
            Simulator(relay_dir / "remote", SENDER).process()
            return calls.exists() and bool(calls.read_text())

        assert wait_until(told, 60, 0.5), log.read_text()[-3000:]
        assert wait_until(lambda: state_of(config, go) == State.REFUSED, 10)
        assert calls.read_text().splitlines() == [f"new {go}"]
    finally:
        assert daemon.stop() == 0


@pytest.mark.parametrize(
    ("hooks", "said"),
    [
        ('on_result = "/bin/true"\ntimeout = "0s"', "hooks.timeout: 0 s is too short: give the hook at least 1 s"),
        ('on_result = "/nonexistent/tell-hr --now"', "hooks.on_result: '/nonexistent/tell-hr' does not exist"),
        ('on_result = "tell-hr-nowhere"', "hooks.on_result: 'tell-hr-nowhere' is not an executable program"),
        ('on_result = "{plain} x"', "is not executable (chmod +x it)"),
        ('on_result = "   "', "hooks.on_result: is blank"),
    ],
)
def test_check_refuses_hook_settings_that_cannot_work(relay_dir: Path, hooks: str, said: str) -> None:
    """A hook timeout under 1 s, a program missing, not found on the hook's PATH or not executable, a blank
    command: `check` exits 2 with one sentence naming the key."""
    plain = relay_dir / "plain.sh"
    plain.write_text("#!/bin/sh\n")
    config = relay_dir / "config.toml"
    config.write_text(config.read_text() + "[hooks]\n" + hooks.replace("{plain}", str(plain)) + "\n")
    done = run_cli("check", "--config", str(config))
    out = done.stdout + done.stderr
    assert done.returncode == 2 and said in out, out
    assert "unbalanced" not in out


def test_every_day_label_of_the_chart_fits_in_the_drawing(cfg: Config) -> None:
    """The overview's chart: each day label under a bar ("11-30", centred, 10 units high) lies wholly inside the
    SVG's viewBox, the last one too (a digit or dash is taken as 0.6 of the font size wide, more than it is)."""
    journal = open_journal_at(cfg.paths.journal_path)
    try:
        snap = HealthSnapshot(True, "ok", ())
        src = Sources(journal, Spool(cfg.paths), PollConfig, lambda: snap, lambda: 100)
        found = find_route(routes(src), "/")
        assert found is not None
        page = found[0].answer(Request("/", found[1], {})).body.decode()
    finally:
        journal.close()
    svg = ElementTree.fromstring(page[page.index("<svg") : page.index("</svg>") + 6])
    width = float(svg.get("viewBox", "").split()[2])
    labels = [t for t in svg.iter("{http://www.w3.org/2000/svg}text") if t.get("text-anchor") == "middle"]
    assert len(labels) == 7 and labels[-1].text == time.strftime("%m-%d", time.gmtime())
    for label in labels:
        half = len(label.text or "") * 0.6 * float(label.get("font-size", "0")) / 2
        assert float(label.get("x", "0")) - half >= 0 and float(label.get("x", "0")) + half <= width, label.text


def test_every_overdue_set_is_told_when_more_than_a_look_are_late(cfg: Config, tmp_path: Path) -> None:
    """Found by audit26: the hook looked at the 1,000 oldest overdue sets every 5 s, so with 1,030 Dimonas
    without their ACRF (the transfer point silent for a morning) the 30 newest were never told, however long
    it ran. Each look now goes on from the last set it looked at."""
    from onss_relay.hook_record import HookRecord
    from onss_relay.hooks import OVERDUE_EVERY, OVERDUE_LOOKED

    journal = open_journal_at(cfg.paths.journal_path)
    first = f"GO.DIMN.{SENDER}.{TODAY}.00001.R.1"
    journal.add_set(first, "R", [first.replace("GO.", "FI.", 1) + ".1"])
    for state in (State.SIGNED, State.UPLOADING, State.GO_SENDING, State.SENT):
        journal.transition(first, state)
    journal.close()
    now, late = time.time(), OVERDUE_LOOKED + 30
    with sqlite3.connect(cfg.paths.journal_path) as db:
        db.execute("CREATE TEMP TABLE one AS SELECT * FROM sets WHERE go_name = ?", (first,))
        for i in range(2, late + 1):
            db.execute("UPDATE one SET go_name = ?", (f"GO.DIMN.{SENDER}.{TODAY}.{i:05d}.R.1",))
            db.execute("INSERT INTO sets SELECT * FROM one")
        # pairs of sets written at the same time (one transaction's), one pair across the looks' boundary
        db.execute("UPDATE sets SET updated_at = ? - CAST(substr(go_name, 25, 5) AS INTEGER) / 2", (now - 3600,))
    db.close()
    journal = open_journal_at(cfg.paths.journal_path)
    record = HookRecord(tmp_path / "spool")
    hook = ResultHook(HooksConfig("true"), record)
    try:
        poll = PollConfig(acrf_overdue=Duration(1800))
        for look in range(4):
            hook.look_for_overdue(
                journal, poll, lambda row: tmp_path / f"{row.go_name}.json", now + look * OVERDUE_EVERY
            )
    finally:
        hook.stop()  # what it did not run yet stays due
        journal.close()
    told = {p.name for d in (record.due_dir, record.told_dir) for p in d.iterdir()}  # a run ends told, then not due
    assert len(told) == late, f"{late - len(told)} overdue sets never told"


def test_metrics_and_the_overview_count_every_overdue_set_without_reading_the_waiting_ones(cfg: Config) -> None:
    """Found by audit26: each /metrics scrape read every set sent or acknowledged (a year of answered DmfA
    circuit tests is acknowledged for ever: the memory review rev29 measured at 696 MB for the same read after
    each poll), and the overview's header counted only the 50 it lists ("Overdue (50)" with 61 late). Both now
    count in the journal: 61 overdue, the circuit tests left out."""
    from onss_relay.metrics import RelayCollector, registry_for

    journal = open_journal_at(cfg.paths.journal_path)
    first, circuit = f"GO.DIMN.{SENDER}.{TODAY}.00001.R.1", f"GO.DMFA.{SENDER}.{TODAY}.00999.T.1"
    journal.add_set(first, "R", [first.replace("GO.", "FI.", 1) + ".1"])
    for state in (State.SIGNED, State.UPLOADING, State.GO_SENDING, State.SENT):
        journal.transition(first, state)
    acknowledged(journal, circuit, "T")
    journal.close()
    with sqlite3.connect(cfg.paths.journal_path) as db:
        db.execute("CREATE TEMP TABLE one AS SELECT * FROM sets WHERE go_name = ?", (first,))
        for i in range(2, 62):
            db.execute("UPDATE one SET go_name = ?", (f"GO.DIMN.{SENDER}.{TODAY}.{i:05d}.R.1",))
            db.execute("INSERT INTO sets SELECT * FROM one")
        db.execute("UPDATE sets SET updated_at = ?", (time.time() - 10 * 86400,))
    db.close()
    journal = open_journal_at(cfg.paths.journal_path)
    try:
        every_set_in = journal.sets_in

        def sets_in(*states: State, **kw: int | None) -> list[SetRow]:
            assert not {State.SENT, State.ACKNOWLEDGED} & set(states), f"read every set {states}"
            return every_set_in(*states, **kw)

        journal.sets_in = sets_in  # type: ignore[method-assign]
        snap = HealthSnapshot(True, "ok", ())
        samples = {
            (s.name, s.labels.get("waiting")): s.value
            for family in registry_for(RelayCollector(journal, lambda: snap, lambda: 100, PollConfig)).collect()
            for s in family.samples
        }
        assert samples[("onss_relay_overdue_sets", None)] == 61
        assert samples[("onss_relay_overdue_waiting", "acrf")] == 61
        assert samples[("onss_relay_overdue_waiting", "notification")] == 0  # the circuit test is never late
        src = Sources(journal, Spool(cfg.paths), PollConfig, lambda: snap, lambda: 100)
        route, rest = find_route(routes(src), "/") or (None, "")
        assert route is not None
        assert "Overdue (61; the oldest 50 listed)" in route.answer(Request("/", rest, {})).body.decode()
    finally:
        journal.close()
