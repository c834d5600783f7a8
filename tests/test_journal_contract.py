"""The journal contract: what every backend must do, run over each of them (SQLite, and PostgreSQL on a real
server started by the pg_server fixture), as the transport contract test does for transports."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from onss_relay.config import JournalConfig
from onss_relay.errors import IllegalTransition
from onss_relay.journal import (
    TRANSITIONS,
    AcrfRecord,
    Change,
    CodeMeaning,
    DataChange,
    Journal,
    NewSet,
    SetData,
    State,
    open_journal_at,
    sql_sequences,
)
from onss_relay.journal.postgres import PostgresJournal
from onss_relay.journal.sql_sequences import NoSequenceLeft
from onss_relay.names import Name, parse_name

GO = "GO.DMFA.123456.20260101.00001.T.1"
FI = "FI.DMFA.123456.20260101.00001.T.1.1"


def _postgres(request: pytest.FixtureRequest, tmp_path: Path) -> Journal:
    server = request.getfixturevalue("pg_server")
    return PostgresJournal(JournalConfig(url=server.new_database()), "123456")


BACKENDS: dict[str, Callable[[pytest.FixtureRequest, Path], Journal]] = {
    "sqlite": lambda request, d: open_journal_at(d / "journal.db"),
    "postgres": _postgres,
}


@pytest.fixture(params=sorted(BACKENDS))
def journal(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Journal]:
    j = BACKENDS[request.param](request, tmp_path)
    yield j
    j.close()


def test_typed_data_round_trips(journal: Journal) -> None:
    data = SetData(sizes={FI: 10}, mtimes={FI: 123}, extras=("FS.x",), fs=("FS.y",))
    journal.add_sets([NewSet(GO, "T", [FI], data)])
    acrf = AcrfRecord("1", True, "0ABC", "/inbox/x", (CodeMeaning("ACRF-125", "invalid signature"),), "PA", False)
    journal.transition(GO, State.SIGNED, data=DataChange(fs=("FS.z",)))
    journal.update_data(GO, DataChange(acrf=acrf))
    row = journal.get_set(GO)
    assert row is not None and row.data == SetData(
        sizes={FI: 10}, mtimes={FI: 123}, extras=("FS.x",), fs=("FS.z",), acrf=acrf
    )


def test_an_unknown_data_field_is_a_bug_not_data(journal: Journal) -> None:
    journal.add_set(GO, "T", [FI])
    with pytest.raises(TypeError):  # mypy refuses it first (tests/test_journal_changes.py)
        journal.update_data(GO, DataChange(blob="x"))  # type: ignore[call-arg]
    row = journal.get_set(GO)
    assert row is not None and row.data == SetData()


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


def test_sets_changed_after_leaves_the_data_of_sets_in_the_states_asked_unread(journal: Journal) -> None:
    """Issue 27 (parentcpu): the results thread of `send --once` only notes sets it holds (queued, on their way
    out): their rows come with an empty SetData, every other row whole, in the order of their change."""
    other = "GO.DIMN.123456.20260101.00001.T.1"
    journal.add_set(GO, "T", [FI], SetData(sizes={FI: 5}))
    journal.add_set(other, "T", ["FI.DIMN.123456.20260101.00001.T.1.1"], SetData(sizes={"x": 7}))
    journal.transition(other, State.SIGNED)
    rows = journal.sets_changed_after(0, without_data=frozenset({State.QUEUED}))
    assert [(r.go_name, r.state, dict(r.data.sizes)) for r in rows] == [
        (GO, State.QUEUED, {}),
        (other, State.SIGNED, {"x": 7}),
    ]
    assert rows[0].parts == [FI] and rows[0].change < rows[1].change
    assert journal.sets_changed_after(0)[0].data.sizes == {FI: 5}


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
        journal.update_data(GO, DataChange(extras=("x",)))
        journal.update_data(other, DataChange(extras=("y",)))
    assert {r.go_name for r in journal.sets_changed_after(mark + 3)} == {GO, other}
    # the same sequence under two application codes: both use it
    assert sorted(r.go_name for r in journal.sets_with_sequence("123456", "20260101", "00001", "T")) == sorted(
        [GO, other]
    )
    assert journal.sets_with_sequence("123456", "20260101", "00001", "S") == []


def test_atomic_is_all_or_nothing_and_uncertain_sets_keep_their_record(journal: Journal) -> None:
    from onss_relay.journal import Uncertain

    journal.add_set(GO, "T", [FI])
    for s in (State.SIGNED, State.UPLOADING, State.GO_SENDING):
        journal.transition(GO, s)
    mark = journal.last_change()
    with pytest.raises(RuntimeError), journal.atomic():
        journal.add_note(GO, "seen")
        journal.update_data(GO, DataChange(extras=("x",)))
        raise RuntimeError("a crash between the two writes")
    assert journal.last_change() == mark and journal.get_set(GO).data.extras == ()  # type: ignore[union-attr]
    uncertain = Uncertain(since=1.5, boottime=2.5, boot_id="b", quiet=30.0, step="GO")
    journal.transition(
        GO, State.GO_SENDING, "GO in flight on a connection given up", data=DataChange(uncertain=uncertain)
    )
    row = journal.get_set(GO)
    assert row is not None and row.state == State.GO_SENDING and row.data.uncertain == uncertain
    assert [r.go_name for r in journal.sets_in(State.GO_SENDING)] == [GO]


def _name(i: int) -> str:
    return GO.replace("00001", f"{i:05d}")


def _walk(journal: Journal, go: str, states: tuple[State, ...]) -> None:
    journal.add_set(go, "T", [go.replace("GO.", "FI.", 1) + ".1"])
    for state in states:
        journal.transition(go, state)


SENT = (State.SIGNED, State.UPLOADING, State.GO_SENDING, State.SENT)


def test_workers_are_indexed_and_found_by_inss(journal: Journal) -> None:
    """The status page's worker index (schema: set_workers): every INSS of a notification, its outcome there,
    a pair indexed again for the same file keeps its first outcome, an empty INSS is not indexed."""
    _walk(journal, GO, SENT)
    journal.add_set(_name(2), "T", [FI.replace("00001", "00002")])
    journal.add_workers(GO, "FO.NOTI.1", [("85073003328", "accepted"), ("", "refused"), ("90042125519", "refused")])
    journal.add_workers(GO, "FO.NOTI.1", [("85073003328", "refused")])
    journal.add_workers(_name(2), "FO.NOTI.2", [("85073003328", "refused")])
    journal.transition(GO, State.ACKNOWLEDGED)  # GO written last: newest first
    found = [(row.go_name, outcome) for row, outcome in journal.sets_by_worker("85073003328")]
    assert found == [(GO, "accepted"), (_name(2), "refused")]
    assert [(r.go_name, o) for r, o in journal.sets_by_worker("90042125519")] == [(GO, "refused")]
    assert journal.sets_by_worker("") == [] and journal.sets_by_worker("85073003328", limit=1)[0][0].go_name == GO


def test_daily_outcomes_count_by_utc_day_truncated_not_rounded(
    journal: Journal, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Sets created late in a UTC day count for that day on both backends (PostgreSQL's CAST rounds: FLOOR),
    a failed set as quarantined, one without an outcome as pending; days before the window are left out."""
    day = 20_000  # 2024-10-04
    created = {1: day + 0.75, 2: day + 0.1, 3: day - 0.25, 4: day - 5}
    for i, at in created.items():
        monkeypatch.setattr("time.time", lambda at=at: at * 86400)
        journal.add_set(_name(i), "T", [FI.replace("00001", f"{i:05d}")])
    monkeypatch.undo()
    journal.transition(_name(2), State.FAILED, reason="bad")
    rows = journal.daily_outcomes(2, (day + 0.9) * 86400)
    assert rows == [("2024-10-03", "pending", 1), ("2024-10-04", "pending", 1), ("2024-10-04", "quarantined", 1)]


def test_sets_by_outcome_by_name_and_overdue_candidates(journal: Journal, monkeypatch: pytest.MonkeyPatch) -> None:
    """sets_with_outcome, sets_named_like (a LIKE wildcard in the fragment is a plain character) and
    waiting_since_before (sent before one time, acknowledged before another, oldest first, from where a walk
    stopped) and waiting_counts on both backends."""
    steps = {1: (*SENT, State.ACKNOWLEDGED, State.REFUSED), 2: SENT, 3: (*SENT, State.ACKNOWLEDGED), 4: SENT}
    for i, states in steps.items():
        monkeypatch.setattr("time.time", lambda i=i: 1_000_000.0 + i * 100)
        _walk(journal, _name(i), states)
    monkeypatch.undo()
    assert [r.go_name for r in journal.sets_with_outcome(["refused", "partly_refused"])] == [_name(1)]
    assert journal.sets_with_outcome([]) == []
    assert [r.go_name for r in journal.sets_named_like(".00003.")] == [_name(3)]
    assert [r.go_name for r in journal.sets_named_like("DMFA.123456")][:2] == [_name(4), _name(3)]
    assert journal.sets_named_like("00_03") == [] and journal.sets_named_like("%") == []
    waiting = journal.waiting_since_before(1_000_000.0 + 450, 1_000_000.0 + 350)
    assert [r.go_name for r in waiting] == [_name(2), _name(3), _name(4)]
    assert [r.go_name for r in journal.waiting_since_before(1_000_000.0 + 250, 0.0)] == [_name(2)]
    # a walk going on from where it stopped (audit26: the hook's look for overdue sets), and the counts (metrics)
    go_on = journal.waiting_since_before(
        1_000_000.0 + 450, 1_000_000.0 + 350, after=((1_000_000.0 + 200, _name(2)), (-1.0, ""))
    )
    assert [r.go_name for r in go_on] == [_name(3), _name(4)]
    assert journal.waiting_counts(1_000_000.0 + 450, 1_000_000.0 + 350) == (2, 1)
    assert journal.waiting_counts(1_000_000.0 + 450, 1_000_000.0 + 350, never_late=[("DMFA", "T")]) == (2, 0)


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


def test_answers_linked_to_no_set_are_counted_and_the_newest_listed(journal: Journal) -> None:
    """Answers without a set are counted by kind in the database and listed newest last, only the newest
    ``limit`` of them, malformed ones apart when asked."""
    journal.add_responses("OUT", [(f"A.{i}", 1, f"/inbox/A.{i}") for i in range(6)])
    for i in range(6):
        journal.link_response("OUT", f"A.{i}", "malformed" if i < 2 else "notification", None, "why")
    journal.add_responses("OUT", [("SIG", 1, "/inbox/SIG")])
    journal.link_response("OUT", "SIG", "signature", None)  # answers nothing by itself: not counted
    assert journal.unmatched_counts() == {"malformed": 2, "notification": 4}
    assert len(journal.unmatched_responses()) == 6
    newest = journal.unmatched_responses(2, malformed=False)
    assert [r.kind for r in newest] == ["notification"] * 2 and len(journal.unmatched_responses(5)) == 5
    assert [r.kind for r in journal.unmatched_responses(10, malformed=True)] == ["malformed"] * 2


def test_a_savepoint_undoes_only_its_own_block(journal: Journal) -> None:
    """Issue 27 (linking in groups): inside one transaction, a block that raises in a savepoint leaves the
    writes before and after it to the commit and its own undone."""
    journal.add_responses("OUTTEST", [(f"GO.NOTI.999999.20261124.0000{i}.T", 0, f"/x/{i}") for i in (1, 2, 3)])
    with journal.atomic():
        journal.link_response("OUTTEST", "GO.NOTI.999999.20261124.00001.T", "marker", None)
        with pytest.raises(ValueError), journal.savepoint():
            journal.link_response("OUTTEST", "GO.NOTI.999999.20261124.00002.T", "marker", None)
            raise ValueError("damaged")
        with journal.savepoint():
            journal.link_response("OUTTEST", "GO.NOTI.999999.20261124.00003.T", "marker", None)
    kinds = [journal.get_response("OUTTEST", f"GO.NOTI.999999.20261124.0000{i}.T") for i in (1, 2, 3)]
    assert [r.kind if r else "?" for r in kinds] == ["marker", None, "marker"]


def test_batched_reads_give_what_the_per_set_reads_give(journal: Journal) -> None:
    """Issue 27: the reads of a batch of sets (sets_by_names, histories, keys_of_sets, sets_with_sequences, and
    sets_in written after a counter value) answer in one read what the per-set reads answer one set at a time."""
    names = [f"GO.DMFA.123456.20260101.{i:05d}.T.1" for i in range(1, 8)]
    journal.add_sets([NewSet(n, "T", [f"FI{n[2:]}.1"]) for n in names])
    mark = journal.last_change()
    journal.transition(names[0], State.SIGNED)
    journal.transition(names[1], State.FAILED, reason="bad")
    journal.add_keys(names[0], [("ticket", "T1"), ("sender_ref", "R1")])
    other = "GO.DIMN.123456.20260101.00001.T.1"  # the sequence of names[0] under another application code
    journal.add_set(other, "T", ["FI.DIMN.123456.20260101.00001.T.1.1"])
    wanted = [*names, "GO.DMFA.123456.20260101.09999.T.1"]  # one the journal never heard of
    rows = journal.sets_by_names(wanted)
    assert sorted(rows) == sorted(names) and all(rows[n] == journal.get_set(n) for n in names)
    assert journal.histories(wanted) == {n: journal.history(n) for n in wanted}
    assert journal.keys_of_sets(wanted) == {n: journal.keys_of(n) for n in wanted}
    assert journal.keys_of_sets(names)[names[0]] == [("ticket", "T1"), ("sender_ref", "R1")]
    keys = [("123456", "20260101", f"{i:05d}", "T") for i in (1, 2, 3)] + [("123456", "20260101", "00001", "S")]
    used = journal.sets_with_sequences(keys)
    assert used == {k: journal.sets_with_sequence(*k) for k in keys}
    assert sorted(r.go_name for r in used[keys[0]]) == sorted([names[0], other]) and used[keys[1]] == []  # failed
    assert [r.go_name for r in journal.sets_in(State.SIGNED, State.QUEUED, changed_after=mark)] == [names[0], other]
    assert len(journal.sets_in(State.SIGNED, State.QUEUED)) == 7


def test_the_next_sequence_reads_the_day_s_highest_names_only(
    journal: Journal, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A day of a secretariat's volume: the next sequence is the one after the highest used in that environment
    (letters and the other environments' numbers left aside), read down the index, not a parse of the day."""
    day = [
        NewSet(f"GO.DIMN.123456.20260101.{i:05d}.{env}.1", env, [f"FI.x{i}{env}"])
        for i in range(1, 2001)
        for env in "TR"
    ]
    day += [
        NewSet("GO.DIMN.123456.20260101.02500.R.1", "R", ["FI.y"]),
        NewSet("GO.DIMN.123456.20260101.9999A.T.1", "T", ["FI.z"]),
    ]
    journal.add_sets(day)
    parsed: list[str] = []

    def counted(name: str) -> Name:
        parsed.append(name)
        return parse_name(name)

    monkeypatch.setattr(sql_sequences, "parse_name", counted)
    assert journal.allocate_sequence("123456", "20260101", "T") == 2001
    assert journal.allocate_sequence("123456", "20260101", "R") == 2501
    assert journal.allocate_sequence("123456", "20260101", "T") == 2002  # the reserved one counts too
    assert len(parsed) <= 10, f"{len(parsed)} names parsed for three sequences"


def test_a_day_with_every_sequence_used_is_refused_in_one_sentence(journal: Journal) -> None:
    journal.add_set(GO, "T", [FI])
    assert journal.allocate_sequence("123456", "20260101", "T", {99_999}) == 2  # past 99,999: the lowest free
    with pytest.raises(NoSequenceLeft, match="^no sequence left for 20260101: sender 123456 has used all 99,999"):
        journal.allocate_sequence("123456", "20260101", "T", set(range(3, 100_000)))
    assert journal.allocate_sequence("123456", "20260101", "R") == 1  # another environment's day is its own


def test_the_pages_reads_take_any_text_a_person_may_type(journal: Journal) -> None:
    """Audit26: a NUL in a search or a set's address (/search?q=%00, /set/%00) failed the page on PostgreSQL
    ("text fields cannot contain NUL"): it finds nothing, on both backends."""
    from onss_relay.config import PollConfig
    from onss_relay.metrics import HealthSnapshot
    from onss_relay.views.search import search
    from onss_relay.views.set_view import find_set
    from onss_relay.views.sources import Sources

    _walk(journal, _name(1), SENT)
    snap = HealthSnapshot(True, "ok", ())
    src = Sources(journal, None, PollConfig, lambda: snap, lambda: 100)  # type: ignore[arg-type]  # no spool read
    assert search(src, "\x00") == [] and find_set(journal, _name(1) + "\x00") is None
    assert [line.go_name for line in search(src, "00001\x00")] == [_name(1)]  # what is left of it is searched


def test_every_state_change_the_rules_forbid_is_refused_and_changes_nothing(journal: Journal) -> None:
    """Audit of issue 25: the rules of the domain live above the backends; tests/test_journal.py checked them on
    SQLite only. Every forbidden change from every state, a sent name queued again, on each backend."""
    journal.add_set(GO, "T", [FI])
    for old in State:
        for new in State:
            if new in TRANSITIONS[old]:
                continue
            with journal._tx() as db:  # type: ignore[attr-defined]  # put the set in ``old`` as a backend would
                db.execute("UPDATE sets SET state = ? WHERE go_name = ?", (str(old), GO))
            with pytest.raises(IllegalTransition):
                journal.transition(GO, new)
            assert journal.get_set(GO).state == old, (old, new)  # type: ignore[union-attr]
    with journal._tx() as db:  # type: ignore[attr-defined]
        db.execute("UPDATE sets SET state = ? WHERE go_name = ?", (str(State.SENT), GO))
    with pytest.raises(IllegalTransition):
        journal.add_set(GO, "T", [FI])
    other = GO.replace("00001", "00002")
    journal.add_failed(other, "T", [FI.replace("00001", "00002")], "bad")
    journal.add_set(other, "T", [FI.replace("00001", "00002")])  # a quarantined name may be queued again
    assert journal.get_set(other).state == State.QUEUED  # type: ignore[union-attr]
