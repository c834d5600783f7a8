"""Every other answer (DmfA update notifications, IDFLUX, Beware notices …): kept, linked when a ticket matches.

Their first reference is often the declaration's own ticket (HandledReference), not the ACRF ticket: any
ReferenceNbr in the file that is a ticket we hold links it. Unmatched ones are kept and shown in `status`.
"""

from __future__ import annotations

from typing import IO

import structlog

from onss_relay.journal import OTHER_WAITING, DataChange, Journal, ResponseRow, SetRow
from onss_relay.responses.codes import what_it_names
from onss_relay.responses.reading import ResponseParseError, local, safe_iterparse

log = structlog.get_logger(__name__)

MAX_REFERENCES = 1000  # a big file is linked by its first references; the rest are the same declaration's


def reference_numbers(source: IO[bytes]) -> list[str]:
    """Given any response XML stream, return the ReferenceNbr values in document order (bounded memory)."""
    found: list[str] = []
    for _, el in safe_iterparse(source, ("end",)):
        if local(el.tag) == "ReferenceNbr" and el.text and el.text.strip():
            found.append(el.text.strip())
            if len(found) >= MAX_REFERENCES:
                break
        el.clear()
    return found


def link(journal: Journal, resp: ResponseRow, source: IO[bytes]) -> list[str]:
    """Given any other mirrored answer, link it to the set one of its tickets names (any ticket the set was
    given: a DmfA update notification or DmfAPID names the declaration's own) and note it in the set's history;
    keep it either way. One with tickets that match no set yet waits: the answer that gives its set that
    ticket (a notification's HandledReference) may come later, across restarts too."""
    row: SetRow | None = None
    try:
        tickets = reference_numbers(source)
    except ResponseParseError:  # not XML (a flat file, one part of a multi-part answer): kept all the same
        tickets = []
    with journal.atomic():  # the link and its effect on the set: one transaction (a crash between lost it)
        for ticket in dict.fromkeys(tickets):
            row = journal.set_by_ticket(ticket)
            if row is not None:
                break
        if row is None:
            named = what_it_names(None, tickets)
            journal.link_response(resp.folder, resp.name, OTHER_WAITING if tickets else "other", None, detail=named)
        else:
            journal.link_response(resp.folder, resp.name, "other", row.go_name)
            journal.update_data(row.go_name, DataChange(other_responses=(*row.data.other_responses, resp.local_path)))
            journal.add_note(row.go_name, f"answer {resp.name} about this declaration ({ticket}): {resp.local_path}")
    if row is None:
        if resp.kind != OTHER_WAITING:
            log.info("response_kept", file=resp.name, detail="no declaration we sent matches it; kept in the inbox")
        return []
    return [row.go_name]
