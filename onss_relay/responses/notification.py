"""NOTIFICATION, the result of handling a declaration: parse every Form (one per worker in a Dimona) and link it.

A notification is linked by ``FileReference`` (the GO or FI name we sent, or the ACRF ticket), else by
``Reference`` when its origin is 2 (an ONSS ticket; origin 1 is the employer's own reference), else by
``HandledReference`` when it is a ticket we hold. One that comes before its ACRF waits and is linked when
the ACRF has come (the link stage retries it at every pass, across restarts too).
"""

from __future__ import annotations

import dataclasses
import io
from collections import Counter
from typing import IO
from xml.etree.ElementTree import Element

import structlog

from onss_relay.journal import (
    WAITING,
    AnomalyRecord,
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
from onss_relay.responses.codes import anomaly_class, diagnosis, explain_anomaly, result_code, what_it_names
from onss_relay.responses.reading import (
    ResponseParseError,
    child,
    find_all,
    flatten_path,
    iter_forms,
    original_form_key,
    text,
)

log = structlog.get_logger(__name__)


@dataclasses.dataclass(frozen=True)
class Anomaly:
    error_id: str
    anomaly_class: str | None
    path: str | None
    tag_name: str | None = None
    value: str | None = None
    label: str | None = None

    @property
    def blocking(self) -> bool:
        return anomaly_class(self.anomaly_class).blocking


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
KEPT_PER_FORM = 100  # anomalies kept in detail per form, blocking ones first; the rest are counted


class AnomalyTally:
    """The anomalies of one Form as they stream by: every one counted (by class, by code), the first
    KEPT_PER_FORM kept in detail, a blocking one taking the place of a non-blocking one when full."""

    def __init__(self) -> None:
        self.count = 0
        self.blocking = 0
        self.by_class: Counter[str] = Counter()
        self.by_code: Counter[str] = Counter()
        self._kept: list[tuple[int, Anomaly]] = []

    def add(self, a: Anomaly) -> None:
        """Given the next anomaly of the form, count it and keep it if there is room (or it blocks)."""
        self.count += 1
        self.blocking += a.blocking
        self.by_class[a.anomaly_class or "?"] += 1
        self.by_code[a.error_id] += 1
        if len(self._kept) < KEPT_PER_FORM:
            self._kept.append((self.count, a))
        elif a.blocking:
            mild = next((i for i, (_, k) in enumerate(self._kept) if not k.blocking), None)
            if mild is not None:
                del self._kept[mild]
                self._kept.append((self.count, a))

    def merge(self, other: AnomalyTally) -> None:
        """Given another form's tally, add its counts to this one's (a notification's totals)."""
        self.count += other.count
        self.blocking += other.blocking
        self.by_class.update(other.by_class)
        self.by_code.update(other.by_code)

    def kept(self) -> tuple[Anomaly, ...]:
        """Return the anomalies kept in detail, blocking ones first, each kind in file order."""
        return tuple(a for _, a in sorted(self._kept, key=lambda kept: not kept[1].blocking))


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
        tally[0].add(_anomaly(a))

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


def _anomaly(a: Element) -> Anomaly:
    return Anomaly(
        text(a, "ErrorID") or "?",
        text(a, "AnomalyClass"),
        flatten_path(child(a, "Path")),
        text(a, "TagName"),
        text(a, "Value"),
        text(a, "AnomalyLabel"),
    )


def _anomaly_record(a: Anomaly) -> AnomalyRecord:
    cls = anomaly_class(a.anomaly_class)
    return AnomalyRecord(
        a.error_id,
        a.anomaly_class,
        a.path,
        cls.blocking,
        cls.meaning,
        a.tag_name,
        a.value,
        a.label,
        explain_anomaly(a.error_id),
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
        return words + _anomaly_words(f.anomalies, f.tally.count)
    parts = [f"{c} {o}" for o, c in n.outcomes if c]
    refused = sorted((a for f in n.forms if f.outcome != "accepted" for a in f.anomalies), key=lambda a: not a.blocking)
    why = f" ({', '.join(f'{a.error_id}, {_blocking(a)}' for a in refused[:3])})" if refused else ""
    return f"{n.count} workers: " + ", ".join(parts) + why


def _blocking(a: Anomaly) -> str:
    return "blocking" if a.blocking else anomaly_class(a.anomaly_class).meaning.split(":")[0]


def _anomaly_words(anomalies: tuple[Anomaly, ...], n: int) -> str:
    if not anomalies:
        return ""
    listed = ", ".join(f"{a.error_id} {explain_anomaly(a.error_id)}, {_blocking(a)}" for a in anomalies[:3])
    return f", {n} anomal{'y' if n == 1 else 'ies'} ({listed}{', …' if n > 3 else ''})"


KEPT_IN_ALL = 100  # anomalies kept in detail per notification, across all its Forms; the rest are counted


def _kept_in_all(forms: tuple[NotificationForm, ...]) -> list[tuple[Anomaly, ...]]:
    """Given a notification's detailed Forms, return for each the anomalies kept in its record: KEPT_IN_ALL in
    all, blocking ones first (then by Form, in the order each Form keeps them)."""
    ranked = sorted(
        ((not a.blocking, i, j) for i, f in enumerate(forms) for j, a in enumerate(f.anomalies)),
    )[:KEPT_IN_ALL]
    chosen = {(i, j) for _, i, j in ranked}
    return [tuple(a for j, a in enumerate(f.anomalies) if (i, j) in chosen) for i, f in enumerate(forms)]


TOP_CODES = 50  # anomaly codes counted one by one in a record; the others are summed under "other"


def record_for(n: Notification, local_path: str) -> NotificationRecord:
    """Given a parsed notification and where its file is kept, return its record: each anomaly kept in detail
    stored once (under its worker), every anomaly counted by class and by code, the file named for the rest."""
    f = n.first
    kept = _kept_in_all(n.forms)
    workers = tuple(
        WorkerResult(w.inss, w.result_code, w.outcome, tuple(_anomaly_record(a) for a in k), w.tally.count)
        for w, k in zip(n.forms, kept, strict=True)
    )
    codes = dict(n.tally.by_code.most_common(TOP_CODES))
    if len(n.tally.by_code) > TOP_CODES:
        codes["other"] = n.tally.count - sum(codes.values())
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
        anomalies_by_code=codes,
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
            row.go_name, State.NOTIFIED, detail=f"notification: {record.summary}", notifications=notifications
        )
    else:  # a notification for a refused or quarantined set: keep it, the state says what happened
        journal.update_data(row.go_name, notifications=notifications)
    return [row.go_name]
