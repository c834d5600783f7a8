"""The journal contract: what every backend must do, run over each of them (today SQLite; a PostgreSQL
backend joins the parameter list and must pass unchanged), as the transport contract test does for transports."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from onss_relay.errors import IllegalTransition
from onss_relay.journal import (
    AcrfRecord,
    Change,
    CodeMeaning,
    Journal,
    NewSet,
    SetData,
    State,
    open_journal_at,
)

GO = "GO.DMFA.123456.20260101.00001.T.1"
FI = "FI.DMFA.123456.20260101.00001.T.1.1"

BACKENDS: dict[str, Callable[[Path], Journal]] = {"sqlite": lambda d: open_journal_at(d / "journal.db")}


@pytest.fixture(params=sorted(BACKENDS))
def journal(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Journal]:
    j = BACKENDS[request.param](tmp_path)
    yield j
    j.close()


def test_typed_data_round_trips(journal: Journal) -> None:
    data = SetData(sizes={FI: 10}, mtimes={FI: 123}, extras=("FS.x",), fs=("FS.y",))
    journal.add_sets([NewSet(GO, "T", [FI], data)])
    acrf = AcrfRecord("1", True, "0ABC", "/inbox/x", (CodeMeaning("ACRF-125", "invalid signature"),), "PA", False)
    journal.transition(GO, State.SIGNED, fs=("FS.z",))
    journal.update_data(GO, acrf=acrf)
    row = journal.get_set(GO)
    assert row is not None and row.data == SetData(
        sizes={FI: 10}, mtimes={FI: 123}, extras=("FS.x",), fs=("FS.z",), acrf=acrf
    )


def test_an_unknown_data_field_is_a_bug_not_data(journal: Journal) -> None:
    journal.add_set(GO, "T", [FI])
    with pytest.raises(TypeError):
        journal.update_data(GO, blob="x")


def test_transition_many_is_all_or_nothing(journal: Journal) -> None:
    other = GO.replace("00001", "00002")
    journal.add_sets([NewSet(GO, "T", [FI]), NewSet(other, "T", [FI.replace("00001", "00002")])])
    with pytest.raises(IllegalTransition):
        journal.transition_many([Change(GO, State.SIGNED), Change(other, State.SENT)])
    assert journal.get_set(GO).state == State.QUEUED  # type: ignore[union-attr]
    assert [h[1] for h in journal.history(GO)] == ["queued"]


def test_final_acrf_may_override_a_provisional_one_both_ways(journal: Journal) -> None:
    journal.add_set(GO, "T", [FI])
    for s in (
        State.SIGNED,
        State.UPLOADING,
        State.GO_SENDING,
        State.SENT,
        State.ACKNOWLEDGED,
        State.REFUSED,
        State.ACKNOWLEDGED,
    ):
        journal.transition(GO, s)
    assert [h[1] for h in journal.history(GO)][-3:] == ["acknowledged", "refused", "acknowledged"]


def test_tickets_reasons_responses_and_sequences(journal: Journal) -> None:
    journal.add_set(GO, "T", [FI])
    journal.transition(GO, State.FAILED, reason="bad: very")
    assert journal.get_set(GO).reason == "bad: very"  # type: ignore[union-attr]
    journal.add_responses("OUTTEST", [("FO.NOTI.999999.20260101.24AZG.T", 3, "/x")])
    assert [r.name for r in journal.unlinked_responses()] == ["FO.NOTI.999999.20260101.24AZG.T"]
    journal.link_response("OUTTEST", "FO.NOTI.999999.20260101.24AZG.T", "notification-waiting", None)
    assert [r.kind for r in journal.unlinked_responses()] == ["notification-waiting"]  # tried again later
    assert [r.kind for r in journal.unmatched_responses()] == ["notification-waiting"]  # and shown meanwhile
    first = journal.allocate_sequence("123456", "20260101", "T")
    assert first == 2  # 00001 is the set's, whatever its state
    assert journal.allocate_sequence("123456", "20260101", "T", {3}) == 4


def test_data_of_version_1_still_reads() -> None:
    v1 = {
        "sizes": {FI: 3},
        "fs": ["FS.x"],
        "acrf": {
            "result_code": "0",
            "accepted": False,
            "ticket": "T",
            "file": "/f",
            "errors": [{"code": "ACRF-125", "description": "invalid signature"}],
        },
        "notifications": [
            {
                "result_code": "1",
                "accepted": True,
                "file": "/n",
                "anomalies": [{"error_id": "00024-152", "class": "NB", "path": None, "blocking": False}],
            }
        ],
    }
    data = SetData.from_json(json.dumps(v1))
    assert data.fs == ("FS.x",) and data.acrf is not None and data.acrf.errors[0].code == "ACRF-125"
    assert data.notifications[0].anomalies[0].anomaly_class == "NB"
    assert SetData.from_json(data.to_json()) == data


def test_sets_changed_after_a_counter_value_and_one_sequence_per_sender_date_environment(journal: Journal) -> None:
    journal.add_set(GO, "T", [FI])
    mark = journal.last_change()
    other = "GO.DIMN.123456.20260101.00001.T.1"
    journal.add_set(other, "T", ["FI.DIMN.123456.20260101.00001.T.1.1"])
    assert [r.go_name for r in journal.sets_changed_after(mark)] == [other]
    journal.transition(GO, State.SIGNED)
    assert [r.go_name for r in journal.sets_changed_after(mark)] == [other, GO]
    journal.mark_archived({GO: "sent/x"})  # every write to a set moves the counter, state or not
    assert [r.go_name for r in journal.sets_changed_after(mark)] == [other, GO]
    assert journal.sets_changed_after(mark)[-1].change == journal.last_change()
    with journal.atomic():  # one transaction: both or neither
        journal.update_data(GO, extras=("x",))
        journal.update_data(other, extras=("y",))
    assert {r.go_name for r in journal.sets_changed_after(mark + 3)} == {GO, other}
    # the same sequence under two application codes: both use it
    assert sorted(r.go_name for r in journal.sets_with_sequence("123456", "20260101", "00001", "T")) == sorted(
        [GO, other]
    )
    assert journal.sets_with_sequence("123456", "20260101", "00001", "S") == []


def test_pages_for_a_year_of_history(journal: Journal) -> None:
    """Issue 29: responses to link a page at a time, a set's linked responses, sets written up to a time from a
    position, and the change counter read a page at a time."""
    names = [f"GO.DMFA.123456.20260101.0000{i}.T.1" for i in range(1, 4)]
    for go in names:
        journal.add_set(go, "T", [go.replace("GO.", "FI.") + ".1"])
    journal.add_responses("OUTTEST", [(f"FO.ACRF.999999.20260101.0000{i}.T", 1, f"/in/{i}") for i in range(1, 4)])
    first = journal.unlinked_page(0, 2)
    assert [r.name[-7:] for _, r in first] == ["00001.T", "00002.T"]
    journal.link_response("OUTTEST", first[0][1].name, "acrf", names[0])
    rest = journal.unlinked_page(first[-1][0], 2)
    assert [r.name[-7:] for _, r in rest] == ["00003.T"] and journal.unlinked_page(rest[-1][0], 2) == []
    assert [r.name for r in journal.responses_linked_to(names[0])] == [first[0][1].name]
    assert journal.responses_linked_to(names[1]) == []
    rows = journal.sets_updated_until(9e9, (0.0, ""), 2)
    assert len(rows) == 2
    more = journal.sets_updated_until(9e9, (rows[-1].updated_at, rows[-1].go_name), 2)
    assert {r.go_name for r in rows + more} == set(names) and len(more) == 1
    assert journal.sets_updated_until(0.0, (0.0, ""), 10) == []
    assert len(journal.sets_changed_after(0, limit=2)) == 2 and len(journal.sets_changed_after(0)) == 3
