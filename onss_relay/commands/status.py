"""What to show a person (or a script) about declaration sets: tables, one set's story, JSON, health."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

from onss_relay.commands.outbox_waits import ClaimBlock, unclaimed_reasons
from onss_relay.config import PollConfig, WatchConfig
from onss_relay.disk import disk_full
from onss_relay.errors import InvalidName
from onss_relay.journal import AcrfRecord, Journal, SetRow, State
from onss_relay.local_time import local_time
from onss_relay.names import parse_name, set_key
from onss_relay.outcome import OUTCOMES, outcome_of
from onss_relay.responses import rendering
from onss_relay.responses.codes import result_code, type_form
from onss_relay.results import answered_circuit_test, document_of, overdue, uncertain_document
from onss_relay.spool import Spool, spool_holder


def result_summary(row: SetRow) -> str:
    """Given a set, return its outcome in a few words: ACRF verdict, notification verdict or failure reason."""
    if row.state == State.FAILED:
        return f"quarantined: {row.reason}"
    uncertain = uncertain_document(row)
    if uncertain is not None:
        given_up, after = local_time(uncertain["given_up_at"]), local_time(uncertain["decided_after"])
        why = (
            f"it was {uncertain['step']} when the relay stopped uncleanly (found at {given_up})"
            if uncertain["step"] in (State.UPLOADING, State.GO_SENDING)
            else f"its {uncertain['step']} was in flight on a connection given up at {given_up}"
        )
        when = (
            f"its quiet period ended at {after}: decided at the next upload round"
            if uncertain["due"]
            else f"decided after {after} (nothing more sent until then)"
        )
        return f"uncertain: {why}; {when}"
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
    return notes[-1].summary or ("accepted" if notes[-1].accepted else f"result {notes[-1].result_code}")


def _age(row: SetRow, now: float) -> str:
    s = int(now - row.updated_at)
    return f"{s}s" if s < 120 else f"{s // 60}m" if s < 7200 else f"{s // 3600}h" if s < 172800 else f"{s // 86400}d"


def _result(row: SetRow, poll: PollConfig, now: float) -> str:
    late = overdue(row, poll, now)
    return result_summary(row) + (f"  OVERDUE: {late}" if late else "")


@dataclasses.dataclass(frozen=True)
class SpoolView:
    """What the spool holds outside the journal: outbox files not claimed yet, quarantined files, answers
    left on the server."""

    unclaimed: list[tuple[str, float]] = dataclasses.field(default_factory=list)
    quarantined: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    left_on_server: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    block: ClaimBlock = dataclasses.field(default_factory=ClaimBlock)  # why nothing is claimed now, if so


def spool_view(spool: Spool, journal: Journal, watch: WatchConfig | None = None) -> SpoolView:
    """Given the spool and its journal, return what waits outside the journal and what keeps the relay from
    claiming outbox files now (no relay running, a full disk)."""
    root = spool.paths.root
    healthy, why = daemon_health(root)
    settle = (float(watch.settle), float(watch.settle_unknown)) if watch else (None, None)
    block = ClaimBlock(why if healthy is None else None, disk_full(root), *settle)
    return SpoolView(spool.unclaimed(journal), spool.quarantined(), spool.left_on_server(), block)


def status_table(
    journal: Journal, limit: int = 50, poll: PollConfig | None = None, view: SpoolView | None = None
) -> str:
    """Given the journal, return a readable table of recent sets, overdue ones marked, counts by state, the
    answers that match no set, and what waits outside the journal (outbox, failed/, left on the server)."""
    poll = poll or PollConfig()
    rows = journal.recent_sets(limit, light=True)  # no anomaly is read: the table shows summaries
    now = time.time()
    header = ("SET", "ENV", "STATE", "OUTCOME", "TICKET", "AGE", "RESULT")
    lines = [
        (r.go_name, r.env, str(r.state), outcome_of(r.go_name, r.state, r.data), r.ticket or "-", _age(r, now))
        + (_result(r, poll, now),)
        for r in rows
    ]
    widths = [max(len(x[i]) for x in [header, *lines]) for i in range(6)]
    out = [
        "  ".join(c.ljust(w) for c, w in zip(line[:6], widths, strict=True)) + "  " + line[6]
        for line in [header, *lines]
    ]
    counts = journal.counts()
    out.append("")
    if sum(counts.values()) > len(rows):  # a year of history: the newest, and how many more
        out.append(
            f"the newest {len(rows)} of {sum(counts.values())} sets; `status --limit N` shows more,"
            " `status NAME` or `status TICKET` any one"
        )
    out.append("counts: " + (", ".join(f"{s}={counts[s]}" for s in State if s in counts) or "no sets yet"))
    outcomes = Counter(outcome_of(r.go_name, r.state, r.data) for r in rows)
    if outcomes:
        out.append("outcomes of these sets: " + ", ".join(f"{o}={outcomes[o]}" for o in OUTCOMES if o in outcomes))
    kept = journal.unmatched_responses()
    damaged = [r for r in kept if r.kind == "malformed"]
    unmatched = [r for r in kept if r.kind != "malformed"]
    if damaged:
        out += [
            "",
            f"answers that could not be read ({len(damaged)}), kept in the inbox: one may be the answer a set waits for",
        ]
        out += [
            f"  {r.folder}/{r.name}  {r.local_path}" + (f"  ({r.detail})" if r.detail else "") for r in damaged[-limit:]
        ]
    if unmatched:
        out += ["", f"answers that match no set we sent ({len(unmatched)}), kept in the inbox:"]
        out += [
            f"  {r.folder}/{r.name}  {r.kind}  {r.local_path}" + (f"  ({r.detail})" if r.detail else "")
            for r in unmatched[-limit:]
        ]
    view = view or SpoolView()
    if view.unclaimed:
        reasons = unclaimed_reasons([name for name, _ in view.unclaimed], view.block)
        out += ["", f"outbox files not claimed yet ({len(view.unclaimed)}):"]
        out += [f"  {name}  {_seconds(age)}  {reasons[name]}" for name, age in view.unclaimed[:limit]]
    if view.quarantined:
        out += ["", f"quarantined in failed/ ({len(view.quarantined)} file(s)), newest first:"]
        out += [f"  {r.get('file')}  {r.get('reason')}: {r.get('detail')}" for r in view.quarantined[:limit]]
    if view.left_on_server:
        out += ["", f"answers left on the server ({len(view.left_on_server)}):"]
        out += [f"  {e['file']}  {e['size']} bytes  {e['why']}" for e in view.left_on_server]
    return "\n".join(out)


def _seconds(age: float) -> str:
    s = int(age)
    return f"{s}s" if s < 120 else f"{s // 60}m" if s < 7200 else f"{s // 3600}h"


def _acrf_line(acrf: AcrfRecord) -> str:
    """Given a set's ACRF record, return what kind of answer it is (its TypeForm's meaning) and its result."""
    kind = f"{acrf.type_form} {type_form(acrf.type_form)}" if acrf.type_form else "no TypeForm"
    return f"{kind}; result {acrf.result_code}: {acrf.meaning or result_code(acrf.result_code).meaning}"


def set_detail(journal: Journal, name: str) -> str | None:
    """Given a GO (or FI) name, return a readable story of that set, or None when it is unknown."""
    row = find_set(journal, name)
    if row is None:
        return None
    doc = document_of(journal, row)
    lines = [
        f"set:         {row.go_name}",
        f"environment: {row.env}",
        f"state:       {row.state}" + (" (circuit test: done, nothing waits)" if answered_circuit_test(row) else ""),
        f"outcome:     {doc['outcome']}",
        f"ticket:      {row.ticket or '-'}",
        *([f"tickets:     {', '.join(doc['tickets'])}"] if len(doc["tickets"]) > 1 else []),
        f"result:      {result_summary(row)}",
        f"parts:       {', '.join(row.parts)}",
    ]
    if row.data.acrf is not None:
        lines.append(f"acrf:        {_acrf_line(row.data.acrf)}")
    if doc["sent_dir"]:
        gone = not (Path(doc["sent_dir"]) / row.go_name).exists()
        lines.append(f"sent files:  {doc['sent_dir']}" + (" (no longer there: pruned by retention.sent_days)" * gone))
    lines += [f"warning:     {w}" for w in row.data.warnings]
    lines += [f"answer:      {rendering(a.kind).status_line(a)}" for a in row.data.answers]
    lines += [f"answer:      {p}" for p in row.data.other_responses]
    for n in row.data.notifications:
        for w in n.workers:
            who = f"worker {w.inss}: " if w.inss else ""
            lines.append(
                f"notification: {who}{w.outcome} (result {w.result_code}: {result_code(w.result_code).meaning})"
            )
            for a in w.anomalies:
                cls = f"{a.anomaly_class} {a.class_meaning.split(':')[0]}".strip()
                lines.append(
                    f"  anomaly:   {a.error_id} {a.meaning or '-'} ({cls}) at {a.path or '-'}"
                    + (f": {a.label}" if a.label else "")
                    + (f" [{a.tag_name}={a.value}]" if a.tag_name else "")
                )
        shown = sum(len(w.anomalies) for w in n.workers)
        every = max(n.anomaly_count, sum(w.anomaly_count for w in n.workers))
        if every > shown:
            lines.append(f"  … {every - shown} more anomalies, all in {n.file}")
        if n.anomaly_count:
            by_class = ", ".join(f"{c}={k}" for c, k in sorted(n.anomalies_by_class.items()))
            by_code = ", ".join(f"{c}={k}" for c, k in list(n.anomalies_by_code.items())[:10])
            lines.append(f"  anomalies: {n.anomaly_count} (by class: {by_class}; most frequent: {by_code})")
    lines.append("history:")
    lines += [f"  {local_time(h['at'])}  {h['state']:<12} {h['detail'] or ''}".rstrip() for h in doc["history"]]
    return "\n".join(lines)


HEALTH_FRESH = 60.0  # seconds: an older report means the daemon is not running


def daemon_health(root: Path) -> tuple[bool | None, str]:
    """Given a spool root, the daemon's health in words: (True, why) running and healthy, (False, why) running
    and unhealthy, (None, why) not running (no report, stopped cleanly, or silent for HEALTH_FRESH s)."""
    report = daemon_report(root)
    holder = spool_holder(root)
    if (full := disk_full(root)) and holder:  # it cannot write its report on a full disk
        return False, f"running, {full}"
    if report is None:
        return None, f"not running: no health report at {root / 'health.json'} (is `onss-relay run` on this spool?)"
    doc, age = report
    if doc.get("stopped"):
        return None, f"not running: the last daemon stopped {int(age)} s ago"
    # its writer is gone (killed, a reboot) or a new one has not reported yet; "?": a holder that could not write its
    # pid in the lock (a full disk at start) is believed. With PostgreSQL the leadership is in the database, not in
    # the spool's lock file, and the leader may run on the other machine: its report's freshness decides.
    in_database = (doc.get("leadership") or {}).get("backend") == "postgresql"
    if not in_database and holder != "?" and str(doc.get("pid")) != holder:
        who = f"pid {holder} holds the spool and has not reported yet" if holder else "no relay holds the spool"
        return None, f"not running: {who}; the last report, {int(age)} s old, is from a process that has ended"
    if age > HEALTH_FRESH:
        return None, f"not running: pid {doc.get('pid')} last reported {int(age)} s ago"
    return bool(doc.get("healthy")), f"pid {doc.get('pid')} reports: {doc.get('reason')}{leader_words(doc)}"


def leader_words(doc: dict[str, Any]) -> str:
    """Given a health report, return how its relay leads (PostgreSQL: "; leader, epoch 3"), "" for a flock."""
    lead = doc.get("leadership") or {}
    if lead.get("backend") != "postgresql":
        return ""
    return f"; leader, epoch {lead.get('epoch')}" if lead.get("leader") else "; not the leader"


def daemon_report(root: Path) -> tuple[dict[str, Any], float] | None:
    """Given a spool root, return the running daemon's last health report and its age in seconds, if any."""
    try:
        doc: dict[str, Any] = json.loads((root / "health.json").read_text())
    except (OSError, ValueError):
        return None
    return doc, time.time() - float(doc.get("at", 0))


def find_set(journal: Journal, name: str) -> SetRow | None:
    """Given a GO, FI or FS name of a set, or an ONSS ticket it was given, return the set (None when unknown);
    two indexed look-ups, whatever the journal holds."""
    return journal.get_set(as_go(name)) or journal.set_by_ticket(name)


def as_go(name: str) -> str:
    try:
        return set_key(parse_name(name))
    except InvalidName:
        return name


def status_json(
    journal: Journal,
    name: str | None = None,
    limit: int = 200,
    poll: PollConfig | None = None,
    view: SpoolView | None = None,
) -> dict[str, Any]:
    """Given the journal, return sets and counts as a JSON-ready dict (one set with its history when named)."""
    if name:
        row = find_set(journal, name)
        doc = document_of(journal, row, poll) | {"result": result_summary(row)} if row else None
        return {"set": doc}
    view = view or SpoolView()
    unclaimed = view.unclaimed
    reasons = unclaimed_reasons([n for n, _ in unclaimed], view.block)
    return {
        "generated_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "counts": journal.counts(),
        "sets": [document_of(journal, r, poll) | {"result": result_summary(r)} for r in journal.recent_sets(limit)],
        "unlinked_responses": [
            {
                "folder": r.folder,
                "name": r.name,
                "kind": r.kind,
                "path": r.local_path,
                "reason": r.detail if r.kind == "malformed" else None,  # why it cannot be read
                "names": r.detail if r.kind != "malformed" else None,  # the FileName, tickets, result it names
            }
            for r in journal.unmatched_responses()
        ],
        "unclaimed": [{"file": n, "age_s": round(a), "waiting": reasons[n]} for n, a in unclaimed],
        "quarantined": (view or SpoolView()).quarantined,
        "left_on_server": (view or SpoolView()).left_on_server,
    }
