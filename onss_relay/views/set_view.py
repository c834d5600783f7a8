"""One view of a declaration set, whatever shows it: its state, tickets, history, files, ACRF codes with their
meanings, notifications per worker with anomalies, warnings and its result in words. Rendered as JSON
(``SetView.document``: results/<GO>.json and `status --json`), as text (set_text.py: `status NAME`) and as HTML
(the status page's set.html); a line of it (``SetLine``) serves the lists."""

from __future__ import annotations

import dataclasses
import datetime as dt
import time
from typing import Any

from onss_relay.config import PollConfig
from onss_relay.errors import InvalidName
from onss_relay.journal import AcrfRecord, Journal, SetRow, State
from onss_relay.local_time import local_time
from onss_relay.names import parse_name, set_key
from onss_relay.outcome import outcome_of
from onss_relay.responses import rendering
from onss_relay.responses.codes import type_form
from onss_relay.stages.uncertain import why_uncertain
from onss_relay.waiting import answered_circuit_test, is_circuit_test, iso, overdue, uncertain_document

FORMS_LISTED = 100  # a set's Form keys listed in its result (a Dimona of thousands of Forms: the count says all)


@dataclasses.dataclass(frozen=True)
class SetView:
    """A set as the journal holds it, with its history, its keys (tickets, Forms, references), the poll
    settings that say when it is late and the time it is shown at."""

    row: SetRow
    history: list[tuple[float, str, str | None]]
    keys: list[tuple[str, str]]
    poll: PollConfig
    now: float

    @property
    def result(self) -> str:
        """Return the set's outcome in a few words (ACRF verdict, notification verdict or failure reason)."""
        return result_summary(self.row)

    @property
    def tickets(self) -> list[str]:
        """Return every ticket the ONSS gave it: the ACRF's, a notification's file ticket, its own."""
        return [t for t in dict.fromkeys([self.row.ticket, *(v for k, v in self.keys if k == "ticket")]) if t]

    def document(self) -> dict[str, Any]:
        """Return the set as a JSON-ready document: results/<GO>.json, `status --json` and the page read it."""
        row, keys = self.row, self.keys
        return {
            "set": row.go_name,
            "environment": row.env,
            "state": str(row.state),
            # what the ONSS decided, in one field: accepted, accepted_with_anomalies, partly_refused, refused,
            # pending or quarantined (a refused notification leaves the state at notified)
            "outcome": outcome_of(row.go_name, row.state, row.data),
            "ticket": row.ticket,
            "tickets": self.tickets,
            # Identification|date|hour of its Forms (the first FORMS_LISTED; every one is a key answers find it by)
            "original_forms": [v for k, v in keys if k == "original_form"][:FORMS_LISTED],
            "original_form_count": sum(k == "original_form" for k, _ in keys),
            "sender_references": [v for k, v in keys if k == "sender_ref"][:FORMS_LISTED],  # the first ones
            "sender_reference_count": sum(k == "sender_ref" for k, _ in keys),
            "reason": row.reason,
            "parts": row.parts,
            "acrf": _acrf_entry(row.data.acrf),
            "notifications": [dataclasses.asdict(n) for n in row.data.notifications],
            "other_responses": list(row.data.other_responses),
            "answers": [rendering(a.kind).results_entry(a) for a in row.data.answers],  # of registered types
            "warnings": list(row.data.warnings),
            "circuit_test": is_circuit_test(row.go_name),  # DmfA in T: answered by its ACRF alone
            "sent_dir": row.data.sent_dir,
            "since": iso(row.updated_at),  # in this state since
            "overdue": overdue(row, self.poll, self.now),
            "uncertain": uncertain_document(row),
            "history": [
                {"at": dt.datetime.fromtimestamp(at, dt.UTC).isoformat(timespec="seconds"), "state": s, "detail": d}
                for at, s, d in self.history
            ],
            "result": self.result,
        }


def set_view(journal: Journal, row: SetRow, poll: PollConfig | None = None, now: float | None = None) -> SetView:
    """Given the journal, one of its sets, the poll settings and the time now, return the set's view (its
    history and keys read)."""
    return SetView(
        row,
        journal.history(row.go_name),
        journal.keys_of(row.go_name),
        poll or PollConfig(),
        time.time() if now is None else now,
    )


def set_views(journal: Journal, rows: list[SetRow], poll: PollConfig | None = None) -> list[SetView]:
    """Given the journal and some of its sets, return their views, every history and key read in two queries
    (the results writer's page of changed sets), in the order of ``rows``."""
    names = [r.go_name for r in rows]
    histories, keys = journal.histories(names), journal.keys_of_sets(names)
    poll, now = poll or PollConfig(), time.time()
    return [SetView(r, histories.get(r.go_name, []), keys.get(r.go_name, []), poll, now) for r in rows]


def document_of(journal: Journal, row: SetRow, poll: PollConfig | None = None) -> dict[str, Any]:
    """Given the journal and one of its sets, return the JSON document describing it everywhere."""
    return set_view(journal, row, poll).document()


def _acrf_entry(acrf: AcrfRecord | None) -> dict[str, Any] | None:
    """Given a set's ACRF record (or None), return its results entry, with what its TypeForm means."""
    if acrf is None:
        return None
    return dataclasses.asdict(acrf) | {"type_form_meaning": type_form(acrf.type_form)}


def result_summary(row: SetRow) -> str:
    """Given a set, return its outcome in a few words: ACRF verdict, notification verdict or failure reason."""
    if row.state == State.FAILED:
        return f"quarantined: {row.reason}"
    uncertain = uncertain_document(row)
    if uncertain is not None:
        return _uncertain_words(uncertain)
    acrf = row.data.acrf
    if acrf is None:
        return "waiting for the ACRF" if row.state == State.SENT else "not sent yet"
    provisional = "" if acrf.final else "provisionally "
    if not acrf.accepted:
        why = (
            "; ".join(f"{e.code} {e.description}" for e in acrf.errors) or f"result {acrf.result_code}: {acrf.meaning}"
        )
        return f"{provisional}refused: {why}"
    notes = row.data.notifications
    if answered_circuit_test(row):
        app = parse_name(row.go_name).app
        return f"circuit test answered by its ACRF: {provisional}accepted, done (no notification follows a {app} in T)"
    if not notes:
        return f"{provisional}accepted, waiting for the notification"
    last = notes[-1].summary or ("accepted" if notes[-1].accepted else f"result {notes[-1].result_code}")
    outcome = outcome_of(row.go_name, row.state, row.data)
    if outcome in ("refused", "partly_refused") and "refused" not in last:  # an earlier notification refused
        return f"{outcome.replace('_', ' ')} (outcome of every notification; the last one: {last})"
    return last


def _uncertain_words(uncertain: dict[str, Any]) -> str:
    """Given an uncertain set's document, return why it is uncertain and when it is decided, in words."""
    given_up, after = local_time(uncertain["given_up_at"]), local_time(uncertain["decided_after"])
    why = why_uncertain(uncertain["step"], given_up)
    when = (
        f"its quiet period ended at {after}: decided at the next upload round"
        if uncertain["due"]
        else f"decided after {after} (nothing more sent until then)"
    )
    return f"uncertain: {why}; {when}"


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


def as_go(name: str) -> str:
    """Given a GO, FI or FS name (or anything else), return the set's key (the GO name), or the text unchanged."""
    try:
        return set_key(parse_name(name))
    except InvalidName:
        return name


def find_set(journal: Journal, name: str) -> SetRow | None:
    """Given a GO, FI or FS name of a set, or an ONSS ticket it was given, return the set (None when unknown);
    two indexed look-ups, whatever the journal holds (a name holding a NUL is none: PostgreSQL refuses it)."""
    if "\x00" in name:
        return None
    return journal.get_set(as_go(name)) or journal.set_by_ticket(name)
