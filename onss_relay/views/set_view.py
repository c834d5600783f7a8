"""One rendering of a declaration set: the results/ document (results.py) plus its result in words, and a
table line for lists. The status page and `status --json` show the same fields."""

from __future__ import annotations

import dataclasses
import time
from typing import Any

from onss_relay.commands.status import result_summary
from onss_relay.config import PollConfig
from onss_relay.journal import Journal, SetRow
from onss_relay.outcome import outcome_of
from onss_relay.results import document_of, overdue


@dataclasses.dataclass(frozen=True)
class SetLine:
    """One set in a list: its name, state, outcome, ticket, result in words and, when late, why."""

    go_name: str
    env: str
    state: str
    outcome: str
    ticket: str
    updated_at: float
    result: str
    overdue: str | None
    worker_outcome: str | None = None  # in a search by INSS: that worker's outcome in this set


def set_line(row: SetRow, poll: PollConfig, now: float | None = None, worker_outcome: str | None = None) -> SetLine:
    """Given a set, the poll settings and the time now, return its line for a list."""
    return SetLine(
        row.go_name,
        row.env,
        str(row.state),
        outcome_of(row.go_name, row.state, row.data),
        row.ticket or "",
        row.updated_at,
        result_summary(row),
        overdue(row, poll, time.time() if now is None else now),
        worker_outcome,
    )


def set_document(journal: Journal, row: SetRow, poll: PollConfig) -> dict[str, Any]:
    """Given a set, return the document that describes it everywhere (results/, `status --json`, its page)."""
    return document_of(journal, row, poll) | {"result": result_summary(row)}
