"""NOTIFICATION, the result of handling a declaration: parse every Form (one per worker in a Dimona) and link it.

A notification is linked by ``FileReference`` (the GO or FI name we sent, or the ACRF ticket), else by
``Reference`` when its origin is 2 (an ONSS ticket; origin 1 is the employer's own reference), else by
``HandledReference`` when it is a ticket we hold. One that comes before its ACRF waits and is linked when
the ACRF has come (the link stage retries it at every pass, across restarts too).
"""

from __future__ import annotations

import dataclasses
import io
from typing import IO
from xml.etree.ElementTree import Element

import structlog

from onss_relay.journal import (
    WAITING,
    DataChange,
    Journal,
    NotificationRecord,
    ResponseRow,
    SetRow,
    State,
    WorkerResult,
)
from onss_relay.names import RESPONSE_FOLDER, Env, set_key_of
from onss_relay.outcome import forms_outcome
from onss_relay.responses.acrf import consumed
from onss_relay.responses.anomalies import (
    Anomaly,
    AnomalyTally,
    anomaly_record,
    anomaly_words,
    distinct_codes,
    kept_in_all,
    read_anomaly,
)
from onss_relay.responses.codes import diagnosis, result_code, what_it_names
from onss_relay.responses.reading import ResponseParseError, child, find_all, iter_forms, original_form_key, text

log = structlog.get_logger(__name__)


@dataclasses.dataclass(frozen=True)
class NotificationForm:
    file_name: str | None  # FileReference/FileName: the GO or FI name we sent
    file_ticket: str | None  # FileReference/ReferenceNbr: the ACRF ticket
    reference: str | None  # Reference/ReferenceNbr
    reference_origin: str | None  # 2: an ONSS ticket; 1: the employer's own reference
    handled_ticket: str | None  # HandledReference/ReferenceNbr: the declaration's own ticket
    original_form: str | None  # HandledOriginalForm's Identification|FormCreationDate|FormCreationHour
    inss: str | None  # the worker, in a Dimona
    result_code: str | None
    diagnosis: str | None
    anomalies: tuple[Anomaly, ...]  # the first KEPT_PER_FORM, blocking ones first, each kind in file order
    tally: AnomalyTally = dataclasses.field(default_factory=lambda: AnomalyTally())  # every anomaly, counted

    @property
    def outcome(self) -> str:
        """The worker's outcome: its ResultCode's, but refused when it has a blocking anomaly."""
        said = result_code(self.result_code).outcome
        return "refused" if said == "accepted" and self.tally.blocking else said

    def tickets(self) -> list[str]:
        """The references that may be an ACRF ticket, most specific first."""
        out = [t for t in (self.file_ticket,) if t]
        if self.reference and self.reference_origin in (None, "2"):
            out.append(self.reference)
        return out


DETAILED = 100  # forms kept in detail per notification, refused ones first; the rest are counted (constant memory)


@dataclasses.dataclass(frozen=True)
class Notification:
    """A notification read as a stream: its first Form (which names the set), every Form counted by outcome,
    and up to DETAILED Forms in detail, refused and pending ones first. The file itself stays in the inbox."""

    first: NotificationForm
    forms: tuple[NotificationForm, ...]  # the detailed forms, in file order
    count: int  # every Form in the file
    outcomes: tuple[tuple[str, int], ...]  # (accepted|refused|pending, how many)
    tally: AnomalyTally = dataclasses.field(default_factory=lambda: AnomalyTally())  # every Form's anomalies
    workers: tuple[tuple[str, str], ...] = ()  # (INSS, outcome) of every Form naming a worker, in file order

    @property
    def accepted(self) -> bool:
        return all(n == 0 for o, n in self.outcomes if o != "accepted")


def parse_notification(data: bytes | IO[bytes]) -> Notification:
    """Given NOTIFICATION XML (bytes or a stream), read every Form once, keeping what DETAILED allows; raise
    ResponseParseError if it is not one."""
    source = io.BytesIO(data) if isinstance(data, bytes) else data
    first: NotificationForm | None = None
    counts = {"accepted": 0, "refused": 0, "pending": 0}
    kept: list[tuple[int, NotificationForm]] = []  # (position, form); accepted ones give way to others
    tally = [AnomalyTally()]  # the current form's: AnomalyReports are handed over as they end
    total = AnomalyTally()
    workers: list[tuple[str, str]] = []  # small: two short strings a Form, for the INSS index

    def each(a: Element) -> None:
        tally[0].add(read_anomaly(a))

    for i, element in enumerate(iter_forms(source, "NOTIFICATION", item="AnomalyReport", each=each)):
        f = _form(element, tally[0])
        tally[0] = AnomalyTally()
        total.merge(f.tally)
        first = first or f
        counts[f.outcome] += 1
        if f.inss:
            workers.append((f.inss, f.outcome))
        if len(kept) < DETAILED:
            kept.append((i, f))
        else:
            _give_way(kept, i, f)
    if first is None:
        raise ResponseParseError("NOTIFICATION without a Form")
    return Notification(
        first, tuple(f for _, f in kept), sum(counts.values()), tuple(counts.items()), total, tuple(workers)
    )


def _give_way(kept: list[tuple[int, NotificationForm]], i: int, f: NotificationForm) -> None:
    """Given the forms kept in detail (full) and the next one, keep it in place of an accepted one when it is
    not accepted, or of one without a blocking anomaly when it has one."""
    if f.outcome == "accepted":
        return
    at = next((k for k, (_, g) in enumerate(kept) if g.outcome == "accepted"), None)
    if at is None and f.tally.blocking:
        at = next((k for k, (_, g) in enumerate(kept) if not g.tally.blocking), None)
    if at is not None:
        del kept[at]
        kept.append((i, f))


def _form(form: Element, tally: AnomalyTally) -> NotificationForm:
    reference = child(form, "Reference")
    inss = next((text(e) for e in find_all(form, "INSS")), None)
    return NotificationForm(
        file_name=text(form, "FileReference", "FileName"),
        file_ticket=text(form, "FileReference", "ReferenceNbr"),
        reference=text(reference, "ReferenceNbr"),
        reference_origin=text(reference, "ReferenceOrigin"),
        handled_ticket=text(form, "HandledReference", "ReferenceNbr"),
        original_form=original_form_key(
            *(text(form, "HandledOriginalForm", n) for n in ("Identification", "FormCreationDate", "FormCreationHour"))
        ),
        inss=inss,
        result_code=text(form, "HandlingResult", "ResultCode"),
        diagnosis=text(form, "HandlingResult", "Diagnosis")
        or next((text(e) for e in find_all(form, "Diagnosis")), None),
        anomalies=tally.kept(),
        tally=tally,
    )


def summary(n: Notification) -> str:
    """Given a notification, return its outcome in a few words (per worker when there are several forms)."""
    if n.count == 1:
        f = n.first
        words = {"accepted": "accepted", "refused": "refused", "pending": "pending"}[f.outcome]
        if f.outcome == "pending":
            words += f" (result {f.result_code}: {result_code(f.result_code).meaning})"
        if f.outcome != "accepted" and f.diagnosis:
            words += f" (diagnosis {f.diagnosis}: {diagnosis(f.diagnosis)})"
        return words + anomaly_words(f.anomalies, f.tally.count)
    parts = [f"{c} {o}" for o, c in n.outcomes if c]
    refused = sorted((a for f in n.forms if f.outcome != "accepted" for a in f.anomalies), key=lambda a: not a.blocking)
    codes = distinct_codes(refused)
    listed = ", ".join(f"{code}, {word}" for code, word in codes[:3]) + (", …" if len(codes) > 3 else "")
    why = f" ({listed})" if refused else ""
    return f"{n.count} workers: " + ", ".join(parts) + why


def record_for(n: Notification, local_path: str) -> NotificationRecord:
    """Given a parsed notification and where its file is kept, return its record: each anomaly kept in detail
    stored once (under its worker), every anomaly counted by class and by code, the file named for the rest."""
    f = n.first
    kept = kept_in_all([w.anomalies for w in n.forms])
    workers = tuple(
        WorkerResult(w.inss, w.result_code, w.outcome, tuple(anomaly_record(a) for a in k), w.tally.count)
        for w, k in zip(n.forms, kept, strict=True)
    )
    return NotificationRecord(
        result_code=f.result_code if n.count == 1 else ("1" if n.accepted else "0"),
        accepted=n.accepted,
        handled_ticket=f.handled_ticket,
        diagnosis=f.diagnosis,
        file=local_path,
        workers=workers,
        summary=summary(n),
        worker_count=n.count,
        diagnosis_meaning=diagnosis(f.diagnosis),
        outcome=forms_outcome(dict(n.outcomes), n.tally.count, n.tally.blocking),
        anomaly_count=n.tally.count,
        anomalies_by_class=dict(n.tally.by_class),
        anomalies_by_code=n.tally.top_codes(),
    )


@dataclasses.dataclass(frozen=True)
class SetMatch:
    """What a notification's names found: its set, or none; when a key named several sets, their names."""

    row: SetRow | None
    ambiguous: tuple[str, ...] = ()


def find_set(journal: Journal, n: Notification, folder: str | None = None) -> SetMatch:
    """Given a notification and the folder it came from, return the set it answers: by file name, by any
    ticket the set was given (the ACRF's, a file ticket, the declaration's own), else by its
    HandledOriginalForm or the sender's own reference, among the sets of that folder's environment not
    refused by their ACRF nor failed, when exactly one has it (else the candidates, named)."""
    f = n.first
    if f.file_name and (key := set_key_of(f.file_name)):
        row = journal.get_set(key)
        if row is not None:
            return SetMatch(row)
    for ticket in [*f.tickets(), *([f.handled_ticket] if f.handled_ticket else [])]:
        row = journal.set_by_ticket(ticket)
        if row is not None:
            return SetMatch(row)
    keys = [("original_form", f.original_form)]
    if f.reference_origin == "1":
        keys.append(("sender_ref", f.reference))
    ambiguous: tuple[str, ...] = ()
    for kind, value in keys:
        found = [r for r in journal.sets_by_key(kind, value) if _may_answer(r, folder)] if value else []
        if len(found) == 1:
            return SetMatch(found[0])
        ambiguous = ambiguous or tuple(r.go_name for r in found)
    return SetMatch(None, ambiguous)


def _may_answer(row: SetRow, folder: str | None) -> bool:
    """Given a set and the folder an answer came from, return whether the answer may be about it: the set is
    of that folder's environment (OUT ↔ R, OUTTEST ↔ T, OUTTEST-S ↔ S), not refused by its ACRF nor failed."""
    if row.state in (State.REFUSED, State.FAILED):
        return False
    return folder is None or RESPONSE_FOLDER.get(Env(row.env)) == folder


def _why_waiting(row: SetRow | None, ambiguous: tuple[str, ...]) -> str:
    """Given the set found (or none) and the sets a key named, return why a notification waits, in words."""
    if row is not None:
        return "its set has no ACRF yet"
    if ambiguous:
        return f"it may answer any of {', '.join(ambiguous)}: several sets have its HandledOriginalForm or reference"
    return "no set we know matches it yet"


def tickets_given(n: Notification) -> list[tuple[str, str]]:
    """Given a notification, return the tickets it gives its set: the file's and the declaration's own."""
    return [("ticket", t) for t in (n.first.file_ticket, n.first.handled_ticket) if t]


def link(journal: Journal, resp: ResponseRow, source: IO[bytes]) -> list[str]:
    """Given a mirrored notification, record it on its set (notified), or leave it waiting for its ACRF."""
    n = parse_notification(source)  # read whole before anything is recorded
    with journal.atomic():  # the link and its effect on the set: one transaction (a crash between lost it)
        return _record(journal, resp, n)


def _record(journal: Journal, resp: ResponseRow, n: Notification) -> list[str]:
    """Given a parsed notification, record it on its set (notified), or leave it waiting for its ACRF."""
    match = find_set(journal, n, resp.folder)
    row = match.row
    if row is not None:
        row = consumed(journal, row, "a notification")
    if row is None or row.state == State.SENT:
        if resp.kind != WAITING:
            f = n.first
            named = what_it_names(
                f.file_name,
                [*f.tickets(), f.handled_ticket or ""],
                f.result_code,
                handled_form=f.original_form,
                sender_ref=f.reference if f.reference_origin == "1" else None,
                candidates=match.ambiguous,
            )
            journal.link_response(resp.folder, resp.name, WAITING, row.go_name if row else None, detail=named)
            log.info(
                "notification_waiting",
                file=resp.name,
                set=row.go_name if row else None,
                detail=_why_waiting(row, match.ambiguous),
            )
        return []
    record = record_for(n, resp.local_path)
    journal.link_response(resp.folder, resp.name, "notification", row.go_name)
    journal.add_keys(row.go_name, tickets_given(n))  # later answers (DmfA updates, DmfAPID) name these
    journal.add_workers(row.go_name, resp.local_path, n.workers)  # a search by INSS finds every worker
    notifications = (*row.data.notifications, record)
    if row.state in (State.ACKNOWLEDGED, State.NOTIFIED):
        journal.transition(
            row.go_name,
            State.NOTIFIED,
            detail=f"notification: {record.summary}",
            data=DataChange(notifications=notifications),
        )
    else:  # a notification for a refused or quarantined set: keep it, the state says what happened
        journal.update_data(row.go_name, DataChange(notifications=notifications))
    return [row.go_name]
