"""The answer-type registry (issue 23 item 6): a new answer type is its module (link, stored record, renderings)
plus one registration line; status NAME and results/<GO>.json render its record with no other change."""

from __future__ import annotations

from pathlib import Path
from typing import IO, Any

import pytest

from onss_relay import responses
from onss_relay.commands.status import set_detail
from onss_relay.journal import AnswerRecord, DataChange, Journal, ResponseRow, State, open_journal_at
from onss_relay.responses.reading import local, safe_iterparse
from onss_relay.results import document_of
from onss_relay.stages.link import process_responses
from tests.conftest import SENDER, TODAY

GO = f"GO.DMFA.{SENDER}.{TODAY}.00061.T.1"


# -- a whole answer type, as a new module would hold it ------------------------------------------


def beware_link(journal: Journal, resp: ResponseRow, source: IO[bytes]) -> list[str]:
    fields = {local(el.tag): (el.text or "").strip() for _, el in safe_iterparse(source, ("end",)) if len(el) == 0}
    journal.link_response(resp.folder, resp.name, "beware", GO)
    row = journal.get_set(GO)
    assert row is not None
    journal.update_data(
        GO, DataChange(answers=(*row.data.answers, AnswerRecord("beware", resp.name, resp.local_path, fields)))
    )
    return [GO]


def beware_line(a: AnswerRecord) -> str:
    return f"Beware notice {a.fields['NoticeNbr']}: {a.fields['Text']}"


def beware_entry(a: AnswerRecord) -> dict[str, Any]:
    return {"type": "beware", "notice": a.fields["NoticeNbr"]}


BEWARE = responses.AnswerType(
    "beware", frozenset({"BEWA"}), frozenset({"BewareNotice"}), beware_link, beware_line, beware_entry
)


@pytest.fixture
def journal(tmp_path: Path):  # type: ignore[no-untyped-def]
    j = open_journal_at(tmp_path / "journal.db")
    yield j
    j.close()


def test_a_new_answer_type_is_one_module_and_one_registration_line(
    journal: Journal, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(responses, "ANSWER_TYPES", [*responses.ANSWER_TYPES, BEWARE])  # the registration line
    journal.add_set(GO, "T", [f"FI.DMFA.{SENDER}.{TODAY}.00061.T.1.1"])
    for s in (State.SIGNED, State.UPLOADING, State.GO_SENDING, State.SENT):
        journal.transition(GO, s)
    name = f"FO.BEWA.999999.{TODAY}.W0001.T"
    local_copy = tmp_path / name
    local_copy.write_bytes(b"<BewareNotice><NoticeNbr>B-17</NoticeNbr><Text>check worker 3</Text></BewareNotice>")
    journal.add_responses("OUTTEST", [(name, local_copy.stat().st_size, str(local_copy))])
    assert process_responses(journal) == [GO]
    row = journal.get_set(GO)
    assert row is not None
    assert "answer:      Beware notice B-17: check worker 3" in (set_detail(journal, GO) or "")
    assert document_of(journal, row)["answers"] == [{"type": "beware", "notice": "B-17"}]


def test_sender_references_in_results_are_capped_like_forms(journal: Journal) -> None:
    """Issue 23, review 2: a set of 150 Forms, each with its sender's reference: results list the first 100
    (as original_forms) and count them all."""
    journal.add_set(GO, "T", [f"FI.DMFA.{SENDER}.{TODAY}.00061.T.1.1"])
    journal.add_keys(GO, [("sender_ref", f"R{n}") for n in range(150)])
    row = journal.get_set(GO)
    assert row is not None
    doc = document_of(journal, row)
    assert doc["sender_references"][:2] == ["R0", "R1"] and len(doc["sender_references"]) == 100
    assert doc["sender_reference_count"] == 150
