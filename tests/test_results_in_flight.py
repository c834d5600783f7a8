"""Issue 27: in the daemon, a set passing through signed, uploading and go_sending in a burst has its result
written at its claim and when sent, not at each step (each rewrite creates a file); one that stays in such a state
is written once it stayed IN_FLIGHT_QUIET; a restart or a stop writes every one left waiting."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from onss_relay import results
from onss_relay.config import Config
from onss_relay.journal import Journal, SetRow, State, open_journal_at
from onss_relay.results import ResultsWriter
from onss_relay.spool import Spool
from tests.conftest import fi_name

GO = "GO" + fi_name(1)[2:-2]
STEPS = [State.SIGNED, State.UPLOADING, State.GO_SENDING, State.SENT]


class Clock:
    """time.monotonic as the test moves it."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def world(cfg: Config, monkeypatch: pytest.MonkeyPatch) -> tuple[Spool, Journal, Clock]:
    spool = Spool(cfg.paths)
    spool.create()
    journal = open_journal_at(cfg.paths.journal_path)
    journal.add_set(GO, "T", [fi_name(1)])
    clock = Clock()
    monkeypatch.setattr(results.time, "monotonic", clock)
    return spool, journal, clock


def writer(spool: Spool, journal: Journal) -> tuple[ResultsWriter, list[str]]:
    """A results writer as the daemon has it, and the states it wrote, in order."""
    w = ResultsWriter(spool, journal)
    w.in_flight_quiet = results.IN_FLIGHT_QUIET
    wrote: list[str] = []

    def told(row: SetRow, path: Path) -> None:
        wrote.append(json.loads(path.read_text())["state"])

    w.on_write = told
    return w, wrote


def test_a_set_passing_through_in_a_burst_is_written_at_its_claim_and_when_sent(
    world: tuple[Spool, Journal, Clock],
) -> None:
    spool, journal, clock = world
    w, wrote = writer(spool, journal)
    w.catch_up()
    for state in STEPS:  # a daemon tick at each step, each well within the quiet time
        journal.transition(GO, state)
        clock.now += 0.5
        w.catch_up()
    assert wrote == ["queued", "sent"]


def test_a_set_staying_in_flight_is_written_once_it_stayed_the_quiet_time(world: tuple[Spool, Journal, Clock]) -> None:
    spool, journal, clock = world
    w, wrote = writer(spool, journal)
    journal.transition(GO, State.SIGNED)
    journal.transition(GO, State.UPLOADING)
    journal.transition(GO, State.GO_SENDING)  # e.g. uncertain: it waits out a quiet period
    w.catch_up()
    clock.now += results.IN_FLIGHT_QUIET / 2
    w.catch_up()
    assert wrote == []
    clock.now += results.IN_FLIGHT_QUIET / 2
    w.catch_up()
    assert wrote == ["go_sending"]
    w.catch_up()
    assert wrote == ["go_sending"]


def test_a_restart_and_a_stop_write_the_sets_left_waiting(world: tuple[Spool, Journal, Clock]) -> None:
    spool, journal, clock = world
    journal.add_set("GO" + fi_name(2)[2:-2], "T", [fi_name(2)])
    w, wrote = writer(spool, journal)
    journal.transition(GO, State.SIGNED)
    w.catch_up()
    assert wrote == ["queued"]  # the other set; this one waits
    restarted, wrote_again = writer(spool, journal)  # the daemon killed and started again
    restarted.catch_up()
    clock.now += results.IN_FLIGHT_QUIET
    restarted.catch_up()
    assert wrote_again == ["signed"]
    w.catch_up(in_flight_quiet=0.0)  # the daemon's last catch-up at a stop writes what waits, at once
    assert wrote == ["queued", "signed"]
