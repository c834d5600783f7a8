"""The journal contract (issue 29), over each backend as tests/test_journal_contract.py: the answers linked to
no set, walked a page at a time by when the relay took them, and marked when retention removed their files."""

from __future__ import annotations

import types

import pytest

from onss_relay.journal import Journal, ResponseRow, sql_responses
from tests.test_journal_contract import journal  # noqa: F401 (the fixture: SQLite, then PostgreSQL)

GO = "GO.DMFA.123456.20260101.00001.T.1"


def take(j: Journal, monkeypatch: pytest.MonkeyPatch, at: float, name: str, kind: str | None) -> None:
    """Given a journal, record an answer taken at ``at`` in OUT, read as ``kind`` (None: not read yet)."""
    monkeypatch.setattr(sql_responses, "time", types.SimpleNamespace(time=lambda: at))
    j.add_responses("OUT", [(name, 1, f"/inbox/OUT/{name}")])
    if kind is not None:
        detail = "not XML" if kind == "malformed" else None
        j.link_response("OUT", name, kind, GO if kind == "notification" else None, detail=detail)


def names(page: list[tuple[float, ResponseRow]]) -> list[tuple[float, str]]:
    return [(at, r.name) for at, r in page]


def test_answers_linked_to_no_set_are_walked_by_when_they_were_taken(
    journal: Journal,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    take(journal, monkeypatch, 100, "FO.A", "other")  # another application's
    take(journal, monkeypatch, 100, "FS.A", "signature")  # its marks: removed with it, never walked
    take(journal, monkeypatch, 150, "FO.B", "notification")  # linked to a set
    take(journal, monkeypatch, 200, "FO.C", "notification-waiting")  # waiting for an ACRF, linked to none
    take(journal, monkeypatch, 300, "FO.D", None)  # not read yet
    take(journal, monkeypatch, 400, "FO.E", "malformed")
    start = (0.0, "", "")
    # FO.E waits behind FO.D: reading FO.D may leave it linked to none, and the walk never comes back
    assert names(journal.unmatched_until(1000, start, 10)) == [(100, "FO.A"), (200, "FO.C")]
    assert names(journal.unmatched_until(1000, start, 1)) == [(100, "FO.A")]
    assert names(journal.unmatched_until(1000, (100, "OUT", "FO.A"), 10)) == [(200, "FO.C")]
    assert names(journal.unmatched_until(150, start, 10)) == [(100, "FO.A")]
    journal.link_response("OUT", "FO.D", "notification", GO)
    assert names(journal.unmatched_until(1000, (200, "OUT", "FO.C"), 10)) == [(400, "FO.E")]

    assert journal.mark_pruned("OUT", "FO.A") and journal.mark_pruned("OUT", "FO.C")
    assert journal.mark_pruned("OUT", "FO.E")
    assert not journal.mark_pruned("OUT", "FO.B") and not journal.mark_pruned("OUT", "FS.A")
    rows = {n: journal.get_response("OUT", n) for n in ("FO.A", "FO.B", "FO.C", "FO.E", "FS.A")}
    a, b, c, e, fs = rows.values()
    assert a is not None and a.kind == "other" and a.detail == sql_responses.PRUNED and a.linked_set is None
    assert c is not None and c.kind == "notification"  # given up waiting: the link stage never reads it again
    assert e is not None and e.kind == "malformed" and e.detail == f"not XML; {sql_responses.PRUNED}"
    assert b is not None and b.detail is None and fs is not None and fs.detail is None
    assert c.name not in [r.name for r in journal.unlinked_responses()]
    assert journal.unmatched_counts() == {"other": 1, "notification": 1, "malformed": 1}  # the rows stay


def test_an_answer_marked_pruned_again_says_so_once(
    journal: Journal,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A walk that comes again over answers it marked (retention.json damaged or deleted, or the relay killed
    between a page's commit and the cursor's save) leaves each detail saying it once, not once per walk."""
    take(journal, monkeypatch, 100, "FO.A", "other")
    take(journal, monkeypatch, 100, "FO.E", "malformed")
    for _ in range(2):
        assert journal.mark_pruned("OUT", "FO.A") and journal.mark_pruned("OUT", "FO.E")
    a, e = journal.get_response("OUT", "FO.A"), journal.get_response("OUT", "FO.E")
    assert a is not None and a.detail == sql_responses.PRUNED, a
    assert e is not None and e.detail == f"not XML; {sql_responses.PRUNED}", e
