"""Link mirrored responses to what was sent: ACRF by GO name, notifications by ticket; update the journal.

Unknown or malformed responses stay in the inbox and are reported; they never stop the relay.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import structlog

from onss_relay.errors import InvalidName
from onss_relay.journal import Journal, ResponseRow, SetRow, State
from onss_relay.names import Prefix, parse_name
from onss_relay.responses import (
    ResponseParseError,
    decompress,
    describe,
    find_ticket,
    parse_acrf,
    parse_notification,
)
from onss_relay.results import write_result
from onss_relay.spool import Spool

log = structlog.get_logger(__name__)


def process_responses(journal: Journal, spool: Spool) -> list[str]:
    """Read every response not yet linked, ACRFs first; return the GO names of the sets that changed."""
    pending = journal.unlinked_responses()
    changed = []
    for resp in sorted(pending, key=_order):
        go_name = _process_one(journal, resp)
        if go_name:
            changed.append(go_name)
            write_result(spool, journal, go_name)
    return changed


def _order(resp: ResponseRow) -> tuple[int, str]:
    fields = resp.name.split(".")
    app = fields[1] if len(fields) > 1 else ""
    return (0 if app == "ACRF" else 1 if app == "NOTI" else 2, resp.name)


def _process_one(journal: Journal, resp: ResponseRow) -> str | None:
    try:
        name = parse_name(resp.name)  # the poller only takes names that parse; this guards old journals
    except InvalidName:
        journal.link_response(resp.folder, resp.name, "malformed", None)
        return None
    if name.prefix in (Prefix.FS, Prefix.GO):
        journal.link_response(resp.folder, resp.name, "signature" if name.prefix == Prefix.FS else "marker", None)
        return None
    try:
        content = Path(resp.local_path).read_bytes()
        if name.prefix == Prefix.CO:
            content = decompress(content)
        if name.app == "ACRF":
            return _link_acrf(journal, resp, content)
        if name.app == "NOTI":
            return _link_notification(journal, resp, content)
        return _link_other(journal, resp, content)
    except (ResponseParseError, OSError) as e:
        journal.link_response(resp.folder, resp.name, "malformed", None)
        log.error("response_unreadable", file=resp.name, path=resp.local_path, detail=str(e))
        return None


def _link_acrf(journal: Journal, resp: ResponseRow, content: bytes) -> str | None:
    acrf = parse_acrf(content)
    row = journal.get_set(acrf.file_name) if acrf.file_name else None
    if row is None:
        journal.link_response(resp.folder, resp.name, "acrf-unmatched", None)
        log.warning("acrf_unmatched", file=resp.name, detail=f"FileName {acrf.file_name!r} is not a set we sent")
        return None
    record: dict[str, Any] = {
        "result_code": acrf.result_code, "accepted": acrf.accepted, "ticket": acrf.ticket, "file": resp.local_path,
        "errors": [{"code": c, "description": describe(c).split(": ", 1)[1]} for c in acrf.errors],
    }
    journal.link_response(resp.folder, resp.name, "acrf", row.go_name)
    if row.state != State.SENT:
        journal.update_data(row.go_name, acrf=record)  # a repeated ACRF: keep the latest, no state change
        return row.go_name
    new = State.ACKNOWLEDGED if acrf.accepted else State.REFUSED
    detail = "accepted" if acrf.accepted else "refused: " + "; ".join(describe(c) for c in acrf.errors)
    journal.transition(row.go_name, new, detail=detail, acrf=record, ticket=acrf.ticket)
    log.info("set_" + str(new), set=row.go_name, state=str(new), ticket=acrf.ticket, errors=list(acrf.errors))
    return row.go_name


def _link_notification(journal: Journal, resp: ResponseRow, content: bytes) -> str | None:
    noti = parse_notification(content)
    row = _set_for(journal, noti.file_name, noti.ticket)
    if row is None or row.state not in (State.ACKNOWLEDGED, State.NOTIFIED):
        journal.link_response(resp.folder, resp.name, "notification-unmatched", None)
        log.warning("notification_unmatched", file=resp.name, ticket=noti.ticket)
        return None
    record = {
        "result_code": noti.result_code, "accepted": noti.accepted, "handled_ticket": noti.handled_ticket,
        "diagnosis": noti.diagnosis, "file": resp.local_path,
        "anomalies": [{"error_id": a.error_id, "class": a.anomaly_class, "path": a.path, "blocking": a.blocking}
                      for a in noti.anomalies],
    }
    notifications = [*row.data.get("notifications", []), record]
    journal.link_response(resp.folder, resp.name, "notification", row.go_name)
    detail = f"notification result {noti.result_code}, {len(noti.anomalies)} anomalies"
    journal.transition(row.go_name, State.NOTIFIED, detail=detail, notifications=notifications)
    log.info("set_notified", set=row.go_name, state="notified", result=noti.result_code, anomalies=len(noti.anomalies))
    return row.go_name


def _link_other(journal: Journal, resp: ResponseRow, content: bytes) -> str | None:
    ticket = find_ticket(content)
    row = journal.set_by_ticket(ticket) if ticket else None
    journal.link_response(resp.folder, resp.name, "other", row.go_name if row else None)
    if row is None:
        log.info("response_kept", file=resp.name, detail="no declaration matches it; kept in the inbox")
        return None
    journal.update_data(row.go_name, other_responses=[*row.data.get("other_responses", []), resp.local_path])
    return row.go_name


def _set_for(journal: Journal, file_name: str | None, ticket: str | None) -> SetRow | None:
    if file_name:
        row = journal.get_set(file_name)
        if row:
            return row
    return journal.set_by_ticket(ticket) if ticket else None
