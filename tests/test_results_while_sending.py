"""Issue 27 (parentcpu): `send --once` wrote every set's results file after its last upload, serially (~0.24 ms per
set: 0.24 s per 1,000 sets). A thread now writes, while it uploads, the results of the sets already sent or
quarantined; the sets still queued or on their way out are held, the cursor kept before them, and written by the
catch-up at the end. The files are the same, each written once; a stop or a kill leaves none unwritten."""

from __future__ import annotations

import json
import math
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from onss_relay import results
from onss_relay.config import Config, load_config
from onss_relay.journal import DataChange, Journal, SetRow, State, open_journal_at
from onss_relay.json_text import dumps_indented
from onss_relay.pipeline import Relay
from onss_relay.results import HELD_WHILE_SENDING, ResultsWriter, document_of
from onss_relay.spool import Spool
from tests.conftest import fi_name
from tests.helpers import outbox_of_dimonas, run_cli, wait_until


def expected_file(journal: Journal, row: SetRow) -> bytes:
    """What the catch-up after the uploads writes for a set as the journal has it now."""
    return dumps_indented(document_of(journal, row)).encode()


def assert_every_result_is_the_sets_document(spool: Spool, journal: Journal) -> int:
    rows = journal.sets_changed_after(0)
    for row in rows:
        written = (spool.results / f"{row.go_name}.json").read_bytes()
        assert json.loads(written)["state"] == str(row.state), row.go_name
        assert written == expected_file(journal, row), row.go_name
    return len(rows)


def test_results_of_sets_sent_are_written_while_uploading_the_same_and_once(
    cfg: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(results, "WHILE_SENDING_EVERY", 0.01)
    relay = Relay(cfg)
    for i in range(1, 31):
        (relay.spool.outbox / fi_name(i)).write_bytes(b"<Dimona>" + b"x" * 200 + b"</Dimona>")
    writes: dict[str, list[str]] = {}
    by_thread = threading.Event()

    def told(row: SetRow, path: Path) -> None:
        writes.setdefault(row.go_name, []).append(threading.current_thread().name)
        if threading.current_thread().name == "results-while-sending":
            by_thread.set()

    relay.results.on_write = told
    real = Relay._upload_while_signing

    def uploads_then_a_pause(self: Relay, *args: object) -> None:
        real(self, *args)  # type: ignore[arg-type]
        by_thread.wait(10)  # the uploads are over: the thread gets a turn before the catch-up at the end

    monkeypatch.setattr(Relay, "_upload_while_signing", uploads_then_a_pause)
    report = relay.send_once(wait_for_settle=False)
    assert len(report.upload.sent) == 30
    assert by_thread.is_set(), "no result written while uploading"
    assert sum(1 for w in writes.values() if w == ["results-while-sending"]) >= 1
    assert all(len(w) == 1 for w in writes.values()), writes  # no set's file written twice
    assert assert_every_result_is_the_sets_document(relay.spool, relay.journal) == len(writes) == 30
    relay.close()


def test_a_set_held_while_sending_keeps_the_cursor_before_it_and_the_next_run_writes_it(cfg: Config) -> None:
    """A set still queued (or on its way out) when the thread catches up is not written, and the cursor on disk
    stays before it: a run killed then leaves it for the next, which writes it whole (its data read)."""
    spool = Spool(cfg.paths)
    spool.create()
    journal = open_journal_at(cfg.paths.journal_path)
    names = ["GO" + fi_name(i)[2:-2] for i in (1, 2, 3)]
    for name in names:
        journal.add_set(name, "T", [name.replace("GO.", "FI.", 1) + ".1"])
    for state in (State.SIGNED, State.UPLOADING, State.GO_SENDING, State.SENT):
        journal.transition(names[1], state)
    journal.transition(names[2], State.SIGNED, data=DataChange(warnings=("bytes not in the declared encoding",)))
    held = journal.get_set(names[0])
    assert held is not None
    writer = ResultsWriter(spool, journal)
    assert writer.catch_up(None, math.inf, HELD_WHILE_SENDING) == 1
    assert sorted(p.name for p in spool.results.iterdir() if p.suffix == ".json") == [f"{names[1]}.json"]
    assert int((spool.paths.root / "results.cursor").read_text()) < held.change
    restarted = ResultsWriter(spool, journal)  # the run killed: a new process
    assert restarted.catch_up() == 3  # the cursor on disk was before the queued one: all three from it
    assert assert_every_result_is_the_sets_document(spool, journal) == 3
    assert json.loads((spool.results / f"{names[2]}.json").read_text())["warnings"]  # its data was read
    journal.close()


def test_send_once_killed_while_uploading_leaves_every_result_to_the_next_run(relay_dir: Path) -> None:
    config = relay_dir / "config.toml"
    n = 600
    outbox_of_dimonas(relay_dir, n)
    remote = relay_dir / "remote" / "INTEST"
    resulted = relay_dir / "spool" / "results"
    p = subprocess.Popen(
        [sys.executable, "-m", "onss_relay.cli", "send", "--once", "--config", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert wait_until(lambda: resulted.is_dir() and any(resulted.glob("GO.*.json")), 120, 0.01)
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait(60)
    assert len(list(remote.glob("GO.*"))) < n, "the kill came after the last set: nothing shown"
    r = run_cli("send", "--once", "--config", str(config))
    assert r.returncode == 0, r.stderr[-2000:]
    cfg = load_config(config, environ={})
    journal = open_journal_at(cfg.paths.journal_path)
    try:
        assert assert_every_result_is_the_sets_document(Spool(cfg.paths), journal) == n
    finally:
        journal.close()
