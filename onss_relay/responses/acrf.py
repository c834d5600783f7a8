"""ACRF, the acknowledgement of receipt: parse it and move the set it names to acknowledged or refused.

``FileName`` names the GO or an FI of the set. A provisional answer (``TypeForm`` PA) may be followed by a
final one (FA): the final one decides, also when it turns an accepted set into a refused one, and a later
provisional one never overrides a final one. An ACRF for a set we do not know is kept and shown.
"""

from __future__ import annotations

import dataclasses
import io
from typing import IO

import structlog

from onss_relay.journal import AcrfRecord, Change, CodeMeaning, DataChange, Journal, ResponseRow, SetRow, State
from onss_relay.names import set_key_of
from onss_relay.responses.codes import acrf_meaning, describe, result_code, what_it_names
from onss_relay.responses.reading import ResponseParseError, child, decompress, iter_forms, text, texts

log = structlog.get_logger(__name__)


@dataclasses.dataclass(frozen=True)
class Acrf:
    file_name: str | None  # the GO (or an FI) name we sent
    ticket: str | None  # FileReference/ReferenceNbr: the ONSS's 13-character ticket
    result_code: str
    errors: tuple[str, ...]  # ErrorID values, like ACRF-125
    type_form: str | None = None  # PA provisional, FA final

    @property
    def accepted(self) -> bool:
        return result_code(self.result_code).outcome == "accepted"

    @property
    def final(self) -> bool:
        return self.type_form != "PA" and result_code(self.result_code).outcome != "pending"


def parse_acrfs(source: IO[bytes]) -> list[Acrf]:
    """Given an ACRF XML stream, return one Acrf per Form; raise ResponseParseError when it is not an ACRF."""
    out = []
    for form in iter_forms(source, "ACRF"):
        code = text(form, "ReceptionResult", "ResultCode")
        if code is None:
            raise ResponseParseError("ACRF without ReceptionResult/ResultCode")
        out.append(
            Acrf(
                file_name=text(form, "FileReference", "FileName"),
                ticket=text(form, "FileReference", "ReferenceNbr"),
                result_code=code,
                errors=texts(child(form, "ReceptionResult"), "ErrorID"),
                type_form=text(form, "TypeForm"),
            )
        )
    if not out:
        raise ResponseParseError("ACRF without a Form")
    return out


def names_answered(data: bytes, compressed: bool = False) -> set[str]:
    """Given the bytes of an ACRF file (a CO file when ``compressed``), return the file names its Forms answer;
    nothing when it cannot be read (the poller will say why when it mirrors it)."""
    try:
        xml = decompress(data) if compressed else data
        return {a.file_name for a in parse_acrfs(io.BytesIO(xml)) if a.file_name}
    except (ResponseParseError, ValueError, OSError, EOFError):
        return set()


def parse_acrf(data: bytes) -> Acrf:
    """Given ACRF XML bytes, return its first Form (the usual one-form file)."""
    return parse_acrfs(io.BytesIO(data))[0]


def record_for(acrf: Acrf, local_path: str) -> AcrfRecord:
    errors = tuple(CodeMeaning(c, acrf_meaning(c)) for c in acrf.errors)
    return AcrfRecord(
        acrf.result_code,
        acrf.accepted,
        acrf.ticket,
        local_path,
        errors,
        acrf.type_form,
        acrf.final,
        result_code(acrf.result_code).meaning,
    )


def link(journal: Journal, resp: ResponseRow, source: IO[bytes]) -> list[str]:
    """Given a mirrored ACRF, record each Form on the set it names; return the GO names of the sets changed.
    The file is linked to the first set one of its Forms names; it is unmatched only when no Form names one
    (a Form for a set we did not send, beside one for ours, no longer hides the file from its set)."""
    changed: list[str] = []
    unmatched: list[str] = []
    linked: str | None = None
    forms = parse_acrfs(source)  # read whole before anything is recorded
    with journal.atomic():  # the link and its effect on the set: one transaction (a crash between lost it)
        for acrf in forms:
            row = _set_named(journal, acrf.file_name)
            if row is None:
                unmatched.append(what_it_names(acrf.file_name, [acrf.ticket or ""], acrf.result_code, acrf.errors))
                log.warning(
                    "acrf_unmatched", file=resp.name, detail=f"FileName {acrf.file_name!r} is not a set we sent"
                )
                continue
            if linked is None:
                linked = row.go_name
                journal.link_response(resp.folder, resp.name, "acrf", row.go_name)
            if apply(journal, row, acrf, resp.local_path):
                changed.append(row.go_name)
        if linked is None and unmatched:
            journal.link_response(resp.folder, resp.name, "acrf-unmatched", None, detail="; ".join(unmatched))
    return changed


def apply(journal: Journal, row: SetRow, acrf: Acrf, local_path: str) -> bool:
    """Given a set and an ACRF for it, record it and move the set on as the ACRF decides; return True if recorded."""
    record = record_for(acrf, local_path)
    previous = row.data.acrf
    if previous is not None and previous.final and not acrf.final:
        log.info("acrf_provisional_ignored", set=row.go_name, detail="a final ACRF was recorded before")
        return False
    row = consumed(journal, row, "an ACRF")
    target = State.ACKNOWLEDGED if acrf.accepted else State.REFUSED
    decides = row.state == State.SENT or (
        row.state in (State.ACKNOWLEDGED, State.REFUSED)
        and row.state != target
        and acrf.final
        and (previous is None or not previous.final)
    )  # a final answer overriding a provisional one
    if result_code(acrf.result_code).outcome == "pending" or not decides:
        with journal.atomic():  # temporary, repeated, or after the notification: no state change
            journal.update_data(row.go_name, DataChange(acrf=record))
            if acrf.final and previous is not None and not previous.final:  # the history says the final came
                journal.add_note(row.go_name, _detail(acrf))
    else:
        journal.transition(row.go_name, target, detail=_detail(acrf), data=DataChange(acrf=record), ticket=acrf.ticket)
    return True


def consumed(journal: Journal, row: SetRow, what: str) -> SetRow:
    """Given a set an answer names, move it out of go_sending (an answer proves the GO was consumed, whatever
    upload recovery has not done yet); return the set as it now is."""
    if row.state != State.GO_SENDING:
        return row
    detail = f"{what} arrived: the GO was consumed"
    journal.transition_many([Change(row.go_name, State.SENT, detail, only_from=frozenset({State.GO_SENDING}))])
    now = journal.get_set(row.go_name)
    return now if now is not None else row


def _detail(acrf: Acrf) -> str:
    kind = {"PA": "provisional ", "FA": "final "}.get(acrf.type_form or "", "")
    if acrf.accepted:
        return f"{kind}ACRF: accepted"
    why = "; ".join(describe(c) for c in acrf.errors) or result_code(acrf.result_code).meaning
    return f"{kind}ACRF: refused: {why}"


def _set_named(journal: Journal, file_name: str | None) -> SetRow | None:
    if not file_name:
        return None
    key = set_key_of(file_name)
    return journal.get_set(key) if key else None
