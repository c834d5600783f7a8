"""What the journal holds, whatever its backend: states and their machine, typed per-set data, rows.

Pure values: nothing here touches a database. ``SetData`` is what a set carries besides its state; the
backends store it as JSON with a ``version`` and read every older version back.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import os
from collections.abc import Mapping
from typing import Any

from onss_relay.errors import IllegalTransition
from onss_relay.journal.data_change import DataChange, field_names
from onss_relay.journal.parsed_cache import ParsedCache


class State(enum.StrEnum):
    QUEUED = "queued"
    SIGNED = "signed"
    UPLOADING = "uploading"
    GO_SENDING = "go_sending"
    SENT = "sent"
    ACKNOWLEDGED = "acknowledged"
    REFUSED = "refused"
    NOTIFIED = "notified"
    FAILED = "failed"


S = State
TRANSITIONS: dict[State, frozenset[State]] = {
    S.QUEUED: frozenset({S.SIGNED, S.FAILED}),
    S.SIGNED: frozenset({S.UPLOADING, S.FAILED}),
    # UPLOADING -> UPLOADING: a set interrupted before go_sending is re-sent from its first file.
    S.UPLOADING: frozenset({S.UPLOADING, S.GO_SENDING, S.SIGNED, S.FAILED}),
    # GO_SENDING -> GO_SENDING: recorded uncertain (its GO was in flight on a connection given up)
    S.GO_SENDING: frozenset({S.GO_SENDING, S.SENT}),
    S.SENT: frozenset({S.ACKNOWLEDGED, S.REFUSED}),
    # a final ACRF overrides a provisional one, both ways; the history keeps both
    S.ACKNOWLEDGED: frozenset({S.NOTIFIED, S.REFUSED}),
    S.NOTIFIED: frozenset({S.NOTIFIED}),  # further notifications for the same declaration
    S.REFUSED: frozenset({S.ACKNOWLEDGED}),
    S.FAILED: frozenset({S.QUEUED}),  # the same name dropped again, fixed, after a quarantine
}
SequenceKey = tuple[str, str, str, str]  # (sender, date, sequence, environment): used once only (ACRF-133)
IN_FLIGHT = (S.QUEUED, S.SIGNED, S.UPLOADING, S.GO_SENDING)
DONE = (S.SENT, S.ACKNOWLEDGED, S.REFUSED, S.NOTIFIED)  # the GO went out
WAITING = "notification-waiting"  # a response kind: linked again at every pass until its set has its ACRF
# an other answer whose tickets match no set yet (the notification giving its set that ticket may come later)
OTHER_WAITING = "other-waiting"
WAITING_KINDS = (WAITING, OTHER_WAITING)  # linked again when an answer changed a set, and at a first pass


def check_transition(old: State, new: State) -> None:
    """Given two states, return if the state machine allows old → new, else raise IllegalTransition."""
    if new not in TRANSITIONS[old]:
        raise IllegalTransition(f"illegal transition {old} → {new}")


# -- what a set carries -------------------------------------------------------------------------

DATA_VERSION = 2  # 1: the untyped JSON of onss-relay ≤ 0.1 (same keys, no "version")


@dataclasses.dataclass(frozen=True)
class CodeMeaning:
    """A code the ONSS sent (ACRF-125, 00024-152 …) and what it means, in our words."""

    code: str
    description: str


@dataclasses.dataclass(frozen=True)
class AnomalyRecord:
    error_id: str
    anomaly_class: str | None
    path: str | None  # flattened from the Path element's children
    blocking: bool  # from the class table: only blocking classes block
    class_meaning: str = ""
    tag_name: str | None = None
    value: str | None = None
    label: str | None = None
    meaning: str = ""  # the code explained: the zone's name and the kind of error


@dataclasses.dataclass(frozen=True)
class WorkerResult:
    """One Form of a notification: a worker (INSS) in a Dimona, or the declaration as a whole."""

    inss: str | None
    result_code: str | None
    outcome: str  # accepted, refused or pending
    anomalies: tuple[AnomalyRecord, ...] = ()  # the first ones in detail, blocking ones first
    anomaly_count: int = 0  # every anomaly of this worker's Form (the file in the inbox holds them all)


@dataclasses.dataclass(frozen=True)
class AcrfRecord:
    """The acknowledgement of receipt linked to a set."""

    result_code: str
    accepted: bool
    ticket: str | None
    file: str  # the local copy in the inbox
    errors: tuple[CodeMeaning, ...] = ()
    type_form: str | None = None  # PA provisional, FA final
    final: bool = True
    meaning: str = ""  # of the ResultCode


@dataclasses.dataclass(frozen=True)
class NotificationRecord:
    """One notification linked to a set."""

    result_code: str | None
    accepted: bool
    handled_ticket: str | None
    diagnosis: str | None
    file: str
    anomalies: tuple[AnomalyRecord, ...] = ()  # older records only: each anomaly is now stored once, in workers
    workers: tuple[WorkerResult, ...] = ()  # one per Form kept in detail (at most 100, refused ones first)
    summary: str = ""  # e.g. "2 workers: 1 accepted, 1 refused (90373-333, blocking)"
    worker_count: int = 0  # every Form of the file (0 in records written before it was counted)
    diagnosis_meaning: str = ""  # why it was refused, from the Diagnosis table
    outcome: str = ""  # accepted, accepted_with_anomalies, partly_refused, refused, pending ("" in older records)
    anomaly_count: int = 0  # every anomaly of every Form of the file
    anomalies_by_class: Mapping[str, int] = dataclasses.field(default_factory=dict)
    anomalies_by_code: Mapping[str, int] = dataclasses.field(default_factory=dict)  # the most frequent; "other"


@dataclasses.dataclass(frozen=True)
class AnswerRecord:
    """What an answer of a registered type (responses/, beyond the ACRF and notifications) recorded on its set:
    its type's kind, its local copy, and the fields its module chose; that module renders it."""

    kind: str
    name: str  # the answer's file name
    file: str  # the local copy in the inbox
    fields: Mapping[str, str] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Uncertain:
    """A set that had a request in flight on a connection the relay gave up: that request may still reach the
    server (a stalled path delivers what it held), so nothing more of the set is put until ``quiet`` seconds
    have passed since ``since``; then the server is read and the set finished (stages/uncertain.py).

    The quiet period is measured on CLOCK_BOOTTIME (``boottime``, valid within ``boot_id``), which neither a
    restart of the relay nor a wall-clock step can shorten; ``since`` (wall clock) is for people.
    """

    since: float  # time.time() when the connection was given up
    boottime: float  # CLOCK_BOOTTIME then
    boot_id: str  # the kernel's boot id then: after a reboot the quiet period starts again
    quiet: float  # seconds of quiet required (remote.quiet_period then)
    step: str  # "FI and FS" or GO (FI or FS in older journals): the step whose request was in flight


@dataclasses.dataclass(frozen=True)
class SetData:
    """Everything a set carries besides its state, ticket and reason."""

    sizes: Mapping[str, int] = dataclasses.field(default_factory=dict)  # FI name → bytes when claimed
    mtimes: Mapping[str, int] = dataclasses.field(default_factory=dict)  # FI name → st_mtime_ns when claimed
    extras: tuple[str, ...] = ()  # files dropped with the FI parts: a pre-made FS, a GO
    identities: Mapping[str, tuple[int, int]] = dataclasses.field(default_factory=dict)  # FI → (inode, ctime_ns)
    fs: tuple[str, ...] = ()  # FS files written into work/ (none for S when signing.sign_in_s = false)
    # FI name → "algorithm:hex" of the snapshot signed and sent (work/<FI>); empty for sets signed before snapshots
    digests: Mapping[str, str] = dataclasses.field(default_factory=dict)
    sent_dir: str | None = None  # where the set's files were archived
    acrf: AcrfRecord | None = None
    notifications: tuple[NotificationRecord, ...] = ()
    other_responses: tuple[str, ...] = ()  # local paths of other answers linked by ticket
    answers: tuple[AnswerRecord, ...] = ()  # answers of registered types beyond ACRF and notifications
    # what the ONSS documents say against how it was sent, found at its claim (never a refusal): an environment
    # they do not list for the application, bytes that do not match the declared encoding …
    warnings: tuple[str, ...] = ()
    uncertain: Uncertain | None = None  # a request of the set was in flight on a connection given up
    content: str | None = None  # "sha256:hex" of its FI parts' bytes at claim (the same declaration twice)
    same_content_ok: bool = False  # `requeue --force`: send it although its content was sent recently

    def unchanged(self, name: str, st: os.stat_result) -> bool:
        """Given an FI and its stat now, whether it still has the size, mtime, inode and ctime recorded at its
        claim (a writer may set the mtime back; the ctime it cannot). Sets claimed before these were recorded
        compare what they have."""
        same_identity = tuple(self.identities.get(name, (st.st_ino, st.st_ctime_ns))) == (st.st_ino, st.st_ctime_ns)
        return (
            st.st_size == self.sizes.get(name)
            and st.st_mtime_ns == self.mtimes.get(name, st.st_mtime_ns)
            and same_identity
        )

    def to_json(self) -> str:
        """Return the stored JSON: the fields by name, nested records as objects (what dataclasses.asdict gives,
        without its deep copy of every value: ~0.2 ms per set and change, three changes per set sent)."""
        text = _ENCODER.encode({"version": DATA_VERSION} | _fields_of(self))
        if _plain(self):  # the next read of this row (the next gate, the results) gets it back unparsed
            _PARSED.remember(text, self)
        return text

    @staticmethod
    def from_json(text: str) -> SetData:
        """Given stored JSON of any version, return the SetData (version 1 had the same keys, as dicts). The
        same text read again (a set's row is read ~6 times on its way out) is parsed once: SetData is frozen."""
        data = _PARSED.get(text)
        if data is None:
            data = SetData._parse(text)
            _PARSED.remember(text, data)
        return data

    @staticmethod
    def _parse(text: str) -> SetData:
        raw: dict[str, Any] = json.loads(text) if text else {}
        version = raw.pop("version", 1)
        if version > DATA_VERSION:
            raise IllegalTransition(f"set data version {version} is newer than this onss-relay knows ({DATA_VERSION})")
        acrf = raw.get("acrf")
        return SetData(
            sizes=dict(raw.get("sizes", {})),
            mtimes=dict(raw.get("mtimes", {})),
            extras=tuple(raw.get("extras", ())),
            identities={k: (int(v[0]), int(v[1])) for k, v in raw.get("identities", {}).items()},
            fs=tuple(raw.get("fs", ())),
            digests=dict(raw.get("digests", {})),
            sent_dir=raw.get("sent_dir"),
            acrf=_acrf_from(acrf) if acrf else None,
            notifications=tuple(_notification_from(n) for n in raw.get("notifications", ())),
            other_responses=tuple(raw.get("other_responses", ())),
            answers=tuple(
                AnswerRecord(a["kind"], a.get("name", ""), a.get("file", ""), dict(a.get("fields", {})))
                for a in raw.get("answers", ())
            ),
            warnings=tuple(raw.get("warnings", ())),
            uncertain=Uncertain(**raw["uncertain"]) if raw.get("uncertain") else None,
            content=raw.get("content"),
            same_content_ok=bool(raw.get("same_content_ok", False)),
        )


# SetData kept by their JSON text (~2 KB each for a set on its way out): a row read again is not parsed again;
# only values equal to what parsing gives are kept (the parse of the text, or a plain SetData just written)
PARSED_KEPT = 2048
_PARSED: ParsedCache[SetData] = ParsedCache(PARSED_KEPT)


def _plain(data: SetData) -> bool:
    """Given a SetData, whether parsing its JSON gives back an equal one of the same types: no nested record,
    every container of the very type _parse makes (a Mapping of another kind, a list, is not kept). Its dicts
    are never changed once in a SetData (typed Mapping: mypy refuses a write through them)."""
    return (
        data.acrf is None
        and not data.notifications
        and not data.answers
        and data.uncertain is None
        and type(data.sizes) is dict
        and type(data.mtimes) is dict
        and type(data.digests) is dict
        and type(data.identities) is dict
        and all(type(v) is tuple and len(v) == 2 for v in data.identities.values())
        and type(data.extras) is tuple
        and type(data.fs) is tuple
        and type(data.other_responses) is tuple
        and type(data.warnings) is tuple
        and type(data.same_content_ok) is bool
    )


def _fields_of(record: Any) -> dict[str, Any]:
    """Given a dataclass instance, return its fields by name in declaration order (values not copied)."""
    return {name: getattr(record, name) for name in field_names(type(record))}


def _json_default(value: Any) -> Any:
    """Given a value json cannot write (a record nested in SetData, a Mapping that is not a dict), return what it
    can; anything else is an error, as with dataclasses.asdict."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _fields_of(value)
    if isinstance(value, Mapping):
        return dict(value)
    raise TypeError(f"{type(value).__name__} in set data cannot be stored as JSON")


_ENCODER = json.JSONEncoder(default=_json_default)  # what json.dumps(default=…) makes anew at each call


def _codes_from(items: list[dict[str, str]]) -> tuple[CodeMeaning, ...]:
    return tuple(CodeMeaning(i["code"], i.get("description", "")) for i in items)


def _acrf_from(d: dict[str, Any]) -> AcrfRecord:
    return AcrfRecord(
        d["result_code"],
        bool(d["accepted"]),
        d.get("ticket"),
        d.get("file", ""),
        _codes_from(d.get("errors", [])),
        d.get("type_form"),
        bool(d.get("final", True)),
        d.get("meaning", ""),
    )


def _anomaly_from(a: dict[str, Any]) -> AnomalyRecord:
    return AnomalyRecord(
        a["error_id"],
        a.get("anomaly_class", a.get("class")),
        a.get("path"),
        bool(a.get("blocking")),
        a.get("class_meaning", ""),
        a.get("tag_name"),
        a.get("value"),
        a.get("label"),
        a.get("meaning", ""),
    )


def _notification_from(d: dict[str, Any]) -> NotificationRecord:
    workers = tuple(
        WorkerResult(
            w.get("inss"),
            w.get("result_code"),
            w.get("outcome", "pending"),
            tuple(_anomaly_from(a) for a in w.get("anomalies", [])),
            int(w.get("anomaly_count", len(w.get("anomalies", [])))),
        )
        for w in d.get("workers", [])
    )
    return NotificationRecord(
        d.get("result_code"),
        bool(d.get("accepted")),
        d.get("handled_ticket"),
        d.get("diagnosis"),
        d.get("file", ""),
        tuple(_anomaly_from(a) for a in d.get("anomalies", [])),
        workers,
        d.get("summary", ""),
        int(d.get("worker_count", 0)),
        d.get("diagnosis_meaning", ""),
        d.get("outcome", ""),
        int(d.get("anomaly_count", len(d.get("anomalies", [])))),
        dict(d.get("anomalies_by_class", {})),
        dict(d.get("anomalies_by_code", {})),
    )


# -- rows and changes ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class NewSet:
    """A complete set claimed from the outbox, for Journal.add_sets."""

    go_name: str
    env: str
    parts: list[str]
    data: SetData = SetData()
    keys: tuple[tuple[str, str], ...] = ()  # (kind, value) it is known by: original_form, sender_ref (its FI's)


@dataclasses.dataclass(frozen=True)
class Change:
    """One state change for Journal.transition_many: the set, its new state, a detail, the SetData fields to set."""

    go_name: str
    state: State
    detail: str | None = None
    archived: bool = False  # the set's local files are already in sent/
    data: DataChange = DataChange()
    ticket: str | None = None
    reason: str | None = None
    # record the change only while the set is in one of these states, skip it otherwise (another stage moved it
    # first: the uploader finishing a GO and the poller linking its answer race for a set in go_sending)
    only_from: frozenset[State] | None = None


@dataclasses.dataclass(frozen=True)
class SetRow:
    go_name: str
    env: str
    state: State
    parts: list[str]  # FI names, in part order
    created_at: float
    updated_at: float
    reason: str | None
    ticket: str | None
    data: SetData
    archived: bool
    change: int = 0  # the change counter's value at the set's last write (results/ follow it)


@dataclasses.dataclass(frozen=True)
class ResponseRow:
    folder: str
    name: str
    size: int
    local_path: str
    deleted_remote: bool
    kind: str | None
    linked_set: str | None
    detail: str | None = None  # why a response is malformed (kept in the inbox all the same)
