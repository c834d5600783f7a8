"""What a second hostile review of issue 26 reproduced (hooks, one outcome, reload, overdue wording, names):
each test fails on the code before its fix."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest

from onss_relay.config import Config
from onss_relay.journal import AcrfRecord, DataChange, NotificationRecord, State, WorkerResult, open_journal_at
from onss_relay.simulator import Simulator
from onss_relay.spool import Spool
from onss_relay.views.overview import overview
from tests.conftest import SENDER, TODAY, fi_name
from tests.helpers import Daemon, run_cli, state_of, wait_log, wait_until
from tests.test_status_page import sources


def go_of(fi: str) -> str:
    return "GO" + fi[2:-2]


def counting_hook(relay_dir: Path, calls: Path, extra: str = "") -> Path:
    """Given the relay folder, write a hook appending "<set> <event> <outcome> start|end" to ``calls``."""
    hook = relay_dir / "tell-hr.sh"
    hook.write_text(
        "#!/bin/sh\n"
        f'echo "$ONSS_RELAY_SET $ONSS_RELAY_EVENT $ONSS_RELAY_OUTCOME start" >> {calls}\n'
        f"{extra}"
        f'echo "$ONSS_RELAY_SET $ONSS_RELAY_EVENT $ONSS_RELAY_OUTCOME end" >> {calls}\n'
    )
    hook.chmod(0o755)
    return hook


def lines(calls: Path) -> list[str]:
    return calls.read_text().splitlines() if calls.exists() else []


@pytest.mark.slow
def test_a_set_notified_by_a_one_shot_poll_is_told_by_the_next_daemon(relay_dir: Path) -> None:
    """With [hooks] on_result set and the daemon stopped, `send --once`, the transfer point's answer and
    `poll --once` notify two sets: the next `run` runs the hook for each (hook/due kept them), once; the one
    its notification refused (a blocking anomaly) says so in ONSS_RELAY_OUTCOME, not only "notified"."""
    config, log, calls = relay_dir / "config.toml", relay_dir / "daemon.log", relay_dir / "calls.txt"
    hook = counting_hook(relay_dir, calls)
    config.write_text(config.read_text() + f'[hooks]\non_result = "{hook}"\n')
    fi, refused = fi_name(61), fi_name(62)
    (relay_dir / "spool" / "outbox").mkdir(parents=True, exist_ok=True)
    (relay_dir / "spool" / "outbox" / fi).write_bytes(b"<Dimona><INSS>85073003328</INSS></Dimona>\r\n")
    (relay_dir / "spool" / "outbox" / refused).write_bytes(
        b"<Dimona><INSS>86010100123</INSS>\r\n<!-- SIMULATE-ANOMALY:90373-333:B -->\r\n</Dimona>\r\n"
    )
    assert run_cli("send", "--once", "--config", str(config)).returncode == 0
    Simulator(relay_dir / "remote", SENDER).process()
    done = run_cli("poll", "--once", "--config", str(config))
    assert done.returncode == 0, done.stderr
    assert state_of(config, go_of(fi)) == state_of(config, go_of(refused)) == State.NOTIFIED
    assert lines(calls) == []  # a one-shot command runs no hook
    daemon = Daemon(config, log)
    daemon.start()
    try:
        assert wait_until(lambda: len(lines(calls)) == 4, 30, 0.2), (lines(calls), log.read_text()[-3000:])
    finally:
        assert daemon.stop() == 0
    assert sorted(lines(calls)) == [
        f"{go_of(fi)} notified accepted end",
        f"{go_of(fi)} notified accepted start",
        f"{go_of(refused)} notified refused end",
        f"{go_of(refused)} notified refused start",
    ]
    assert not list((relay_dir / "spool" / "hook" / "due").iterdir())


def answered(relay_dir: Path, config: Path, *fis: str) -> bool:
    """Let the transfer point answer, then return True when every set of these FI files is notified."""
    Simulator(relay_dir / "remote", SENDER).process()
    return all(state_of(config, go_of(f)) == State.NOTIFIED for f in fis)


@pytest.mark.slow
def test_hooks_removed_and_set_again_by_reloads_never_run_a_set_twice_nor_two_at_once(relay_dir: Path) -> None:
    """A slow hook, three sets notified and queued; SIGHUP with [hooks] removed, SIGHUP with it back while the
    runs wait: each set is told once, and no run starts before the one before it ended."""
    config, log, calls = relay_dir / "config.toml", relay_dir / "daemon.log", relay_dir / "calls.txt"
    hook = counting_hook(relay_dir, calls, "sleep 3\n")
    base = config.read_text()
    with_hook = base + f'[hooks]\non_result = "{hook}"\n'
    config.write_text(with_hook)
    daemon = Daemon(config, log)
    proc = daemon.start()
    fis = [fi_name(n) for n in (71, 72, 73)]
    try:
        for n, fi in enumerate(fis):
            (relay_dir / "spool" / "outbox" / fi).write_bytes(b"<Dimona><INSS>8507300332%d</INSS></Dimona>\r\n" % n)
        assert wait_until(lambda: answered(relay_dir, config, *fis), 60, 0.5), log.read_text()[-3000:]
        assert wait_until(lambda: len(lines(calls)) >= 1, 20, 0.1)
        config.write_text(base)
        proc.send_signal(signal.SIGHUP)
        assert wait_log(log, '"event": "reload')
        config.write_text(with_hook)
        proc.send_signal(signal.SIGHUP)
        assert wait_log(log, '"event": "reload', 2)
        assert wait_until(lambda: sum(ln.endswith(" end") for ln in lines(calls)) >= 3, 60, 0.2), lines(calls)
    finally:
        assert daemon.stop() == 0
    told = lines(calls)
    for fi in fis:
        assert sum(ln.startswith(go_of(fi)) and ln.endswith(" start") for ln in told) == 1, told
    assert [ln.rsplit(" ", 1)[1] for ln in told] == ["start", "end"] * 3, told  # one at a time


@pytest.mark.slow
def test_a_stop_ends_a_running_hook_and_the_next_start_tells_it_again(relay_dir: Path) -> None:
    """A hook sleeping 60 s (hooks.timeout 30 s by default) when the daemon gets SIGTERM: the hook is sent
    SIGTERM (not left to its timeout, past systemd's stop timeout), the daemon exits 0, the run stays due and
    the next start tells the set again."""
    config, log, calls = relay_dir / "config.toml", relay_dir / "daemon.log", relay_dir / "calls.txt"
    once = relay_dir / "slept-once"
    hook = counting_hook(
        relay_dir,
        calls,
        f"trap 'echo \"$ONSS_RELAY_SET terminated\" >> {calls}; exit 143' TERM\n"
        f"[ -e {once} ] || {{ touch {once}; sleep 60 & wait; }}\n",
    )
    config.write_text(config.read_text() + f'[hooks]\non_result = "{hook}"\n')
    daemon = Daemon(config, log)
    daemon.start()
    fi = fi_name(81)
    try:
        (relay_dir / "spool" / "outbox" / fi).write_bytes(b"<Dimona><INSS>85073003328</INSS></Dimona>\r\n")
        assert wait_until(lambda: answered(relay_dir, config, fi) and once.exists(), 60, 0.5), log.read_text()
    finally:
        assert daemon.stop(timeout=60) == 0
    assert lines(calls)[-1] == f"{go_of(fi)} terminated", lines(calls)
    assert (relay_dir / "spool" / "hook" / "due" / go_of(fi)).exists()
    daemon.start()
    try:
        assert wait_until(lambda: lines(calls)[-1].endswith(" end"), 30, 0.2), lines(calls)
    finally:
        assert daemon.stop() == 0
    assert [ln.rsplit(" ", 1)[1] for ln in lines(calls)] == ["start", "terminated", "start", "end"]


def test_a_set_an_earlier_notification_refused_in_part_shows_one_outcome_everywhere(cfg: Config) -> None:
    """A Dimona whose first notification refuses one worker and whose second accepts another: the `status`
    table, `status --json`, the overview's recent and refused lists all say partly_refused, and the result in
    words says refused, never only "accepted"."""
    go = f"GO.DIMN.{SENDER}.{TODAY}.00091.R.1"
    Spool(cfg.paths).create()
    journal = open_journal_at(cfg.paths.journal_path)
    journal.add_set(go, "R", [go.replace("GO.", "FI.", 1) + ".1"])
    for state in (State.SIGNED, State.UPLOADING, State.GO_SENDING, State.SENT):
        journal.transition(go, state)
    journal.transition(
        go, State.ACKNOWLEDGED, ticket="0T91", data=DataChange(acrf=AcrfRecord("1", True, "0T91", "a", ()))
    )
    refused = NotificationRecord(
        "0",
        False,
        "0T91",
        None,
        "n1",
        workers=(WorkerResult("85073003328", "0", "refused"),),
        summary="refused",
        worker_count=1,
        outcome="refused",
    )
    accepted = NotificationRecord(
        "1",
        True,
        "0T91",
        None,
        "n2",
        workers=(WorkerResult("86010100123", "1", "accepted"),),
        summary="accepted",
        worker_count=1,
        outcome="accepted",
    )
    journal.transition(go, State.NOTIFIED, data=DataChange(notifications=(refused, accepted)))
    try:
        page = overview(sources(journal, Spool(cfg.paths)))
    finally:
        journal.close()
    lines_shown = [line for line in (*page.recent, *page.refused) if line.go_name == go]
    assert len(lines_shown) == 2
    assert {(line.outcome, "refused" in line.result) for line in lines_shown} == {("partly_refused", True)}
    config = str(cfg.source)
    done = run_cli("status", "--config", config)
    table = done.stdout
    rows = [ln for ln in table.splitlines() if ln.startswith(go)]
    assert len(rows) == 1, done.stdout + done.stderr
    row = rows[0]
    assert "partly_refused" in row and "accepted " not in row.split("partly_refused", 1)[0], table
    assert "refused" in row.split("partly_refused", 1)[1], row
    doc = json.loads(run_cli("status", "--json", "--config", config).stdout)
    assert [s["outcome"] for s in doc["sets"] if s["set"] == go] == ["partly_refused"]


def test_every_config_section_is_applied_by_a_reload_or_named_as_needing_a_restart() -> None:
    """Each section of the Config tree is in reload.APPLIED or reload.NEEDS_RESTART, never both: a new section
    cannot be changed by a reload that says "nothing changed"."""
    import dataclasses

    from onss_relay.config import Config as ConfigTree
    from onss_relay.reload import APPLIED, NEEDS_RESTART

    sections = {f.name for f in dataclasses.fields(ConfigTree)} - {"source"}
    assert sections == set(APPLIED) | set(NEEDS_RESTART)
    assert not set(APPLIED) & set(NEEDS_RESTART)


@pytest.mark.slow
def test_a_reload_applies_retention_and_names_a_journal_change_as_needing_a_restart(relay_dir: Path) -> None:
    """[retention] sent_days and interval changed, SIGHUP: the reload applies them; [journal] lease changed,
    SIGHUP: the reload says it needs a restart; never "nothing changed"."""
    config, log = relay_dir / "config.toml", relay_dir / "daemon.log"
    base = config.read_text()
    daemon = Daemon(config, log)
    proc = daemon.start()
    try:
        config.write_text(base + '[retention]\nsent_days = 1\ninterval = "2s"\n')
        proc.send_signal(signal.SIGHUP)
        assert wait_log(log, '"event": "reload')
        config.write_text(base + '[retention]\nsent_days = 1\ninterval = "2s"\n[journal]\nlease = "20s"\n')
        proc.send_signal(signal.SIGHUP)
        assert wait_log(log, '"event": "reload', 2)
    finally:
        assert daemon.stop() == 0
    said = [json.loads(ln) for ln in log.read_text().splitlines() if '"reload' in ln]
    assert [(s["event"], s["applied"]) for s in said][:1] == [
        ("reloaded", ["retention.sent_days", "retention.interval"])
    ], said
    assert said[1]["event"] == "reload_partial" and said[1]["needs_restart"] == ["journal.lease"], said


def test_an_overdue_set_says_the_same_thing_in_its_result_file_status_and_status_name(relay_dir: Path) -> None:
    """poll.acrf_overdue = "5s", a set sent 20 s ago: results/<GO>.json (written then), `status --json` and
    `status NAME` (read later) give one overdue sentence, in seconds, that does not age."""
    import sqlite3
    import time

    from onss_relay.config import load_config
    from onss_relay.results import write_result
    from onss_relay.waiting import overdue

    config = relay_dir / "config.toml"
    config.write_text(config.read_text().replace('interval = "1s"', 'interval = "1s"\nacrf_overdue = "5s"'))
    cfg = load_config(config, environ={})
    spool = Spool(cfg.paths)
    spool.create()
    go = f"GO.DIMN.{SENDER}.{TODAY}.00095.R.1"
    journal = open_journal_at(cfg.paths.journal_path)
    journal.add_set(go, "R", [go.replace("GO.", "FI.", 1) + ".1"])
    for state in (State.SIGNED, State.UPLOADING, State.GO_SENDING, State.SENT):
        journal.transition(go, state)
    journal.close()
    with sqlite3.connect(cfg.paths.journal_path) as db:
        db.execute("UPDATE sets SET updated_at = ? WHERE go_name = ?", (time.time() - 20, go))
    db.close()
    journal = open_journal_at(cfg.paths.journal_path)
    try:
        row = journal.get_set(go)
        assert row is not None
        written = json.loads(write_result(spool, journal, row, cfg.poll).read_text())["overdue"]
        assert overdue(row, cfg.poll, time.time() + 3600) == written  # the same an hour later
    finally:
        journal.close()
    assert written.startswith("no ACRF within 5 s of the GO"), written
    shown = json.loads(run_cli("status", "--json", "--config", str(config)).stdout)
    assert [s["overdue"] for s in shown["sets"] if s["set"] == go] == [written]
    text = run_cli("status", go, "--config", str(config)).stdout
    assert f"overdue:     {written}" in text.splitlines(), text


def test_the_set_page_takes_a_ticket_and_status_never_prints_a_control_character(cfg: Config) -> None:
    """`/set/<ticket>` shows the set `status <ticket>` finds; a file named with an escape sequence, quarantined,
    is shown by `status` with the sequence written out (\\x1b), never sent raw to the terminal."""
    from tests.test_status_page import get

    spool = Spool(cfg.paths)
    spool.create()
    go = f"GO.DIMN.{SENDER}.{TODAY}.00097.R.1"
    journal = open_journal_at(cfg.paths.journal_path)
    journal.add_set(go, "R", [go.replace("GO.", "FI.", 1) + ".1"])
    for state in (State.SIGNED, State.UPLOADING, State.GO_SENDING, State.SENT):
        journal.transition(go, state)
    acrf = AcrfRecord("1", True, "0TICKET97", "a", ())
    journal.transition(go, State.ACKNOWLEDGED, ticket="0TICKET97", data=DataChange(acrf=acrf))
    try:
        page = get(sources(journal, spool), "/set/0TICKET97")
    finally:
        journal.close()
    assert page.status == 200 and go in page.body.decode()
    bad = spool.outbox / "bad\x1b[31mname"
    bad.write_bytes(b"x")
    spool.quarantine([bad], "bad name \x1b]0;owned\x07", "not an FI name\x1b[2J")
    done = run_cli("status", "--config", str(cfg.source))
    assert done.returncode == 0, done.stderr
    assert "\x1b" not in done.stdout and "\x07" not in done.stdout, repr(done.stdout)
    assert "bad\\x1b[31mname" in done.stdout, done.stdout


def test_a_file_renamed_away_while_the_local_remote_is_listed_is_left_out(tmp_path: Path) -> None:
    """The simulator (or any writer) renames a temp file in OUT while the poller lists it: the listing leaves
    that file out instead of failing as "no such remote folder" (which paused polling for 300 s: the cause of
    test_hook_record.py's failure under load)."""
    from onss_relay.transport.local import LocalTransport, make_remote_home

    home = make_remote_home(tmp_path / "remote")
    for name in ("a", "b", "c"):
        (home / "OUTTEST" / name).write_bytes(b"x")
    listing = LocalTransport(home).scan("OUTTEST")
    first = next(listing)  # the folder's names are read: two of them go before their sizes are
    for name in {"a", "b", "c"} - {first.name}:
        (home / "OUTTEST" / name).unlink()
    assert list(listing) == []
