"""Later answers about a declaration, named by its own ticket: DmfA update notifications
(``DmfAUpdateNotification``: the ONSS changed the declaration) and ``DmfAPID``. Each names the declaration in
a ``Reference`` of type 3, origin 2 (its HandledReference ticket, given by its notification); its own ticket is
the Reference of type 1. Linked by any ticket the set holds, recorded on the set, shown in its history; one
whose declaration ticket is not known yet waits (the notification giving it may come later)."""

from __future__ import annotations

from typing import IO

import structlog

from onss_relay.journal import OTHER_WAITING, AnswerRecord, DataChange, Journal, ResponseRow, SetRow
from onss_relay.responses.codes import what_it_names
from onss_relay.responses.reading import local, safe_iterparse

log = structlog.get_logger(__name__)

MAX_ELEMENTS = 10_000  # the head of the first Form is enough: its references and quarter


def read_head(source: IO[bytes]) -> dict[str, str]:
    """Given the answer's XML stream, return its root name, its own ticket (Reference type 1), the
    declaration's ticket (type 3, origin 2) and its quarter, reading only its first elements."""
    found: dict[str, str] = {}
    ref: dict[str, str] = {}
    for seen, (event, el) in enumerate(safe_iterparse(source, ("start", "end"))):
        name = local(el.tag)
        if event == "start":
            found.setdefault("root", name)
            ref = {} if name == "Reference" else ref
            continue
        if name in ("ReferenceType", "ReferenceOrigin", "ReferenceNbr"):
            ref[name] = (el.text or "").strip()
        elif name == "Reference":
            _take_reference(found, ref)
        elif name == "Quarter" and el.text:
            found.setdefault("quarter", el.text.strip())
        if name == "Form" or seen > MAX_ELEMENTS:
            break
    return found


def _take_reference(found: dict[str, str], ref: dict[str, str]) -> None:
    nbr, kind, origin = ref.get("ReferenceNbr"), ref.get("ReferenceType"), ref.get("ReferenceOrigin")
    if not nbr:
        return
    if kind == "1":
        found.setdefault("own_ticket", nbr)
    elif kind == "3" and origin in ("2", None):
        found.setdefault("declaration_ticket", nbr)


def link(journal: Journal, resp: ResponseRow, source: IO[bytes]) -> list[str]:
    """Given a mirrored later answer, record it on the set whose ticket it names, or wait for that ticket."""
    head = read_head(source)
    tickets = [t for t in (head.get("declaration_ticket"), head.get("own_ticket")) if t]
    row: SetRow | None = None
    with journal.atomic():  # the link and its effect on the set: one transaction
        row = next((r for r in (journal.set_by_ticket(t) for t in tickets) if r is not None), None)
        if row is None:
            journal.link_response(resp.folder, resp.name, OTHER_WAITING, None, detail=what_it_names(None, tickets))
            return []
        record = AnswerRecord("declaration_answer", resp.name, resp.local_path, head)
        journal.link_response(resp.folder, resp.name, "declaration_answer", row.go_name)
        journal.update_data(row.go_name, DataChange(answers=(*row.data.answers, record)))
        journal.add_note(row.go_name, status_line(record))
    log.info("declaration_answer_linked", file=resp.name, set=row.go_name)
    return [row.go_name]


def status_line(a: AnswerRecord) -> str:
    """Given its record, return the answer in one line for status NAME and the set's history."""
    f = a.fields
    what = {"DmfAUpdateNotification": "DmfA update notification"}.get(f.get("root", ""), f.get("root", "answer"))
    extra = "".join(f", {k} {f[k]}" for k in ("quarter", "own_ticket") if f.get(k))
    return f"{what} {a.name} about ticket {f.get('declaration_ticket', '-')}{extra}: {a.file}"


def results_entry(a: AnswerRecord) -> dict[str, str]:
    """Given its record, return its entry in results/<GO>.json."""
    return {"type": a.fields.get("root", a.kind), "name": a.name, "file": a.file, **a.fields}
