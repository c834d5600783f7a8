"""Every other answer (DmfA update notifications, IDFLUX, Beware notices …): kept, linked when a ticket matches.

Their first reference is often the declaration's own ticket (HandledReference), not the ACRF ticket: any
ReferenceNbr in the file that is a ticket we hold links it. Unmatched ones are kept and shown in `status`.
"""

from __future__ import annotations

from typing import IO

import structlog

from onss_relay.journal import Journal, ResponseRow, SetRow
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
    """Given any other mirrored answer, link it to the set one of its tickets names; keep it either way."""
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
        journal.link_response(resp.folder, resp.name, "other", row.go_name if row else None)
        if row is not None:
            journal.update_data(row.go_name, other_responses=(*row.data.other_responses, resp.local_path))
    if row is None:
        log.info("response_kept", file=resp.name, detail="no declaration we sent matches it; kept in the inbox")
        return []
    return [row.go_name]
