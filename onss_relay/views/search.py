"""Search by declaration name (or part of it), ONSS ticket or worker (INSS): "this worker's Dimona" is one
search."""

from __future__ import annotations

import re

from onss_relay.journal import SetRow
from onss_relay.outcome import outcome_of
from onss_relay.views.set_view import SetLine, as_go, set_line
from onss_relay.views.sources import Sources

LIMIT = 200
INSS = re.compile(r"[0-9]{11}")
IN_A_NAME = re.compile(r"[0-9A-Za-z.]+")  # what a declaration name holds (names.py), never 9 digits in a row


def search(src: Sources, query: str) -> list[SetLine]:
    """Given the sources and what a person typed, return the sets it names: a worker's sets (an INSS, with
    dots, dashes or spaces or not) each with that worker's outcome, or the sets of a ticket, or of a name."""
    q = query.replace("\x00", "").strip()  # a NUL no name holds (and PostgreSQL refuses in a query)
    if not q:
        return []
    poll = src.poll()
    digits = re.sub(r"[.\- ]", "", q)
    if INSS.fullmatch(digits):
        named = src.journal.sets_by_worker(digits, LIMIT)  # by their notifications, with the worker's outcome
        lines = {row.go_name: set_line(row, poll, worker_outcome=outcome) for row, outcome in named}
        for row in src.journal.sets_by_key("worker", digits):  # declared in their FI: answered or not
            if row.go_name not in lines:
                lines[row.go_name] = set_line(row, poll, worker_outcome=declared_outcome(row))
        if lines:
            return sorted(lines.values(), key=lambda line: line.updated_at, reverse=True)[:LIMIT]
    rows: dict[str, SetRow] = {}
    exact = src.journal.get_set(as_go(q))
    if exact is not None:
        rows[exact.go_name] = exact
    by_ticket = src.journal.set_by_ticket(q)
    if by_ticket is not None:
        rows[by_ticket.go_name] = by_ticket
    rows |= {r.go_name: r for r in src.journal.sets_by_key("ticket", q)}
    if len(q) >= 3 and may_be_in_a_name(q):  # a walk of every name: skipped when none can hold it
        rows |= {r.go_name: r for r in src.journal.sets_named_like(q, LIMIT)}
    return [set_line(r, poll) for r in list(rows.values())[:LIMIT]]


def declared_outcome(row: SetRow) -> str:
    """Given a set whose FI declares a worker that no notification of it names, return that worker's outcome:
    the set's own while no notification came (refused by its ACRF, pending, quarantined), else that its
    notifications do not name the worker."""
    if row.data.notifications:
        return "not named by its notifications"
    return outcome_of(row.go_name, row.state, row.data)


def may_be_in_a_name(text: str) -> bool:
    """Given what a person typed, return whether a declaration name may hold it: letters, digits and dots only,
    at most 8 digits in a row (a name's longest run of digits is its date). An INSS (11 digits, or with dashes)
    never is: a worker with no declaration is answered without walking every name."""
    return IN_A_NAME.fullmatch(text) is not None and re.search(r"[0-9]{9}", text) is None
